; guest: long64
; stage: 8
; mode: long64
; demonstrates: a guest that starts in 64-bit mode on page tables the runner built
;
; The runner maps the first 1 GiB to itself with 2 MiB pages (PML4 at
; PML4_ADDR) and sets CR0 = PG|ET|PE, CR4 = PAE, EFER = LME|LMA before the
; first KVM_RUN. The guest reports those control registers and leaves
; values in r8-r15 for the final registers.

%include "rkvm.inc"

bits 64
org LOAD_ADDR

start:
    mov rax, cr0                ; CR0 as the runner set it
    out REPORT_PORT, eax        ; 0x80000011
    mov rax, cr3                ; CR3
    out REPORT_PORT, eax        ; PML4_ADDR
    mov rax, cr4                ; CR4
    out REPORT_PORT, eax        ; 0x20
    mov r8, 0x0808080808080808  ; the upper registers exist only here
    mov r9, r8                  ; r9 = r8
    add r9, r8                  ; r9 = 2 * r8
    mov r10, -1                 ; all ones
    mov r11, 0x1100000000       ; above 4 GiB
    mov r12d, 0xffffffff        ; a 32-bit write zeroes bits 63..32
    lea r13, [rel start]        ; rip-relative: the address of start
    mov r14, rsp                ; the stack pointer the runner set
    mov r15, 0x0123456789abcdef ; a pattern
    mov esi, hello              ; the message
    mov ecx, hello_len          ; its length
    mov dx, CONSOLE_PORT        ; on the console
    cld                         ; upwards
    rep outsb                   ; the message
    hlt                         ; stop

hello:
    db "hello from 64-bit mode", 10
hello_len equ $ - hello
