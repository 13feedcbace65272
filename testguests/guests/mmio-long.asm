; guest: mmio-long
; stage: 10
; mode: long64
; demonstrates: MMIO from 64-bit code: REX prefixes, 8-byte operands, moffs64, RIP-relative operands with immediates after them, addresses above 4 GiB, 64-bit push and pop, string instructions with 8-byte elements
;
; The runner maps only the first 1 GiB, so the guest maps the window
; itself, with 2 MiB pages, three times: at linear 0xc0000000 (PDPT entry
; 3), at 0x40000000 (PDPT entry 1), within reach of a RIP-relative
; displacement from the code at 0x8000, and at 0x8000000000 (PML4 entry 1),
; above 4 GiB. All three reach guest-physical 0xc0000000, which the
; `mmio-*` lines show.

%include "rkvm.inc"

bits 64
org LOAD_ADDR

PD_W    equ SCRATCH_ADDR          ; a directory: entry 0 is the window, a 2 MiB page
PDPT_H  equ SCRATCH_ADDR + 0x1000 ; a PDPT for 512 GiB: entry 0 is PD_W
PDPT    equ PML4_ADDR + 0x1000    ; the runner's PDPT
ALIAS   equ 0x40000000            ; the window, near the code
HIGH    equ 0x8000000000          ; the window, above 4 GiB
PDE_2M  equ 0x083                 ; present, writable, 2 MiB page
PTE_PW  equ 0x003                 ; present, writable

; RIPREL(offset): the window's byte at offset, as a RIP-relative operand.
%define RIPREL(o) rel $$ + (ALIAS + (o) - LOAD_ADDR)

; FLAGS mask: report RFLAGS & mask (rax is lost).
%macro FLAGS 1
    pushfq                      ; the flags
    pop rax                     ; ...
    and eax, %1                 ; the defined ones
    out REPORT_PORT, eax        ; reported
%endmacro

; REPORT reg: report a 64-bit register, low half then high half (rax is lost).
%macro REPORT 1
    mov rax, %1                 ; the value
    out REPORT_PORT, eax        ; low half
    shr rax, 32                 ; high half
    out REPORT_PORT, eax        ; ...
%endmacro

start:
    mov dword [PD_W], MMIO_BASE | PDE_2M ; the window as a 2 MiB page
    mov dword [PDPT + 3 * 8], PD_W | PTE_PW ; at 3 GiB
    mov dword [PDPT + 1 * 8], PD_W | PTE_PW ; and at 1 GiB
    mov dword [PDPT_H], PD_W | PTE_PW ; and at 512 GiB
    mov dword [PML4_ADDR + 1 * 8], PDPT_H | PTE_PW ; ...
    mov rax, cr3                ; the new entries
    mov cr3, rax                ; take effect

    mov rbx, MMIO_BASE          ; the window
    mov rcx, 0x0123456789abcdef ; an 8-byte value
    mov [rbx + 0x10], rcx       ; REX.W 89: an 8-byte write
    mov rdx, [rbx + 0x10]       ; REX.W 8B: an 8-byte read
    REPORT rdx                  ; 0x0123456789abcdef
    mov qword [rbx + 0x18], -2  ; REX.W C7: imm32 sign-extended to 8 bytes
    mov r8, [rbx + 0x18]        ; REX.WR 8B
    REPORT r8                   ; 0xfffffffffffffffe
    mov r10, rbx                ; a high base register
    mov r9b, [r10 + 0x21]       ; REX.RB 8A: r9b
    mov r11, rbx                ; ...
    mov r12, 4                  ; a high index register
    mov r13d, 0xfeedface        ; ...
    mov [r11 + r12 * 8 + 0x40], r13d ; REX.RXB 89: 0x60
    mov r9w, [r11 + r12 * 8 + 0x40] ; 66 REX 8B
    REPORT r9                   ; 0xface
    mov esi, 0x11111111         ; ...
    mov sil, [rbx + 0x33]       ; REX 8A: sil, not dh
    REPORT rsi                  ; 0x11111133
    mov eax, 0x22222222         ; ...
    mov ah, [rbx + 0x34]        ; 8A without REX: ah
    out REPORT_PORT, eax        ; 0x22223422
    mov rax, [qword MMIO_BASE + 0x10] ; REX.W A1: moffs64
    REPORT rax                  ; 0x0123456789abcdef
    mov [qword MMIO_BASE + 0x58], al ; A2: moffs64
    mov [qword HIGH + 0x5c], eax ; A3: moffs64 above 4 GiB

    ; RIP-relative, through the alias at 1 GiB
    mov eax, [RIPREL(0x60)]     ; 8B with disp32 from rip
    out REPORT_PORT, eax        ; 0xfeedface
    mov dword [RIPREL(0x64)], 0x12345678 ; C7: rip-relative, then imm32
    add word [RIPREL(0x66)], 0x1234 ; 66 81 /0: rip-relative, then imm16
    test byte [RIPREL(0x67)], 0x80 ; F6 /0: rip-relative, then imm8
    FLAGS 0x8c5                 ; 0x24 & 0x80 = 0: ZF, PF
    bt dword [RIPREL(0x64)], 4  ; 0F BA /4: rip-relative, then imm8
    FLAGS 0x1                   ; CF = 1
    cmp qword [RIPREL(0x10)], byte -1 ; REX.W 83 /7: rip-relative, then imm8
    FLAGS 0x8d5                 ; ...
    mov r15, [RIPREL(0x64)]     ; REX.WR 8B rip-relative
    REPORT r15                  ; 0x6b6a696824685678

    ; above 4 GiB
    mov r14, HIGH               ; the window at 512 GiB
    mov rax, [r14 + 0x70]       ; gpa 0xc0000070
    REPORT rax                  ; 0x7776757473727170
    mov [r14 + rax * 0 + 0x78], rax ; SIB with a zero scale product: 0x77767574
    lea rdi, [r14 + 0x7f8]      ; an address in the window
    REPORT rdi                  ; 0x80000007f8

    ; 8-byte arithmetic
    mov rcx, 0x8000000000000001 ; ...
    mov qword [rbx + 0x80], rcx ; the operand
    add [rbx + 0x80], rcx       ; REX.W 01: carry and overflow
    FLAGS 0x8d5                 ; CF, OF: 0x0000000000000002
    stc                         ; a carry in
    adc qword [rbx + 0x80], 0x7fffffff ; REX.W 81 /2: imm32
    FLAGS 0x8d5                 ; ...
    mov rdx, 5                  ; ...
    sub rdx, [rbx + 0x80]       ; REX.W 2B: into a register
    FLAGS 0x8d5                 ; ...
    REPORT rdx                  ; ...
    stc                         ; a borrow in
    sbb qword [rbx + 0x80], rdx ; REX.W 19
    FLAGS 0x8d5                 ; ...
    xor qword [rbx + 0x80], -1  ; REX.W 83 /6: the complement
    FLAGS 0x8c5                 ; ...
    neg qword [rbx + 0x80]      ; REX.W F7 /3
    FLAGS 0x8d5                 ; ...
    inc qword [rbx + 0x80]      ; REX.W FF /0
    FLAGS 0x8d5                 ; ...
    not qword [rbx + 0x80]      ; REX.W F7 /2
    test [rbx + 0x80], rcx      ; REX.W 85
    FLAGS 0x8c5                 ; ...
    mov r8, [rbx + 0x80]        ; the result
    REPORT r8                   ; ...

    ; movzx and movsx into 64-bit registers
    mov r8, -1                  ; all ones
    movzx r8, word [rbx + 0x90] ; REX.W 0F B7
    REPORT r8                   ; 0x9190
    movsx rax, byte [rbx + 0x95] ; REX.W 0F BE
    REPORT rax                  ; 0xffffffffffffff95
    mov r9, -1                  ; all ones
    movsx r9d, word [rbx + 0x9e] ; REX.R 0F BF: the upper half cleared
    REPORT r9                   ; 0x00000000ffff9f9e
    movzx r10d, byte [r14 + 0x9f] ; REX.RB 0F B6
    REPORT r10                  ; 0x9f

    ; push and pop: 8 bytes by default, 2 with 66
    push qword [rbx + 0xa0]     ; FF /6
    push word [rbx + 0xa8]      ; 66 FF /6
    pop word [rbx + 0xb0]       ; 66 8F /0: 0xa9a8
    pop qword [r14 + 0xb8]      ; 8F /0: 0xa7a6a5a4a3a2a1a0
    REPORT rsp                  ; 0x7000

    ; exchange and bit tests with 8-byte operands
    mov r15, 0x0f0e0d0c0b0a0908 ; ...
    xchg [rbx + 0xc0], r15      ; REX.WR 87
    REPORT r15                  ; 0xc7c6c5c4c3c2c1c0
    mov rcx, 70                 ; a bit past the operand
    bts [rbx + 0xd0], rcx       ; REX.W 0F AB: bit 6 of the qword at 0xd8
    FLAGS 0x1                   ; 0xd8 has bit 6 set: CF = 1
    mov rax, -65                ; a bit before it
    btr [rbx + 0xd0], rax       ; REX.W 0F B3: bit 63 of the qword at 0xc0
    FLAGS 0x1                   ; bit 63 of 0x0f0e...: CF = 0
    btc qword [rbx + 0xd0], 63  ; REX.W 0F BA /7
    FLAGS 0x1                   ; 0xd7 has bit 7 set: CF = 1

    ; strings with 8-byte elements, and 32-bit addresses (67)
    cld                         ; upwards
    lea rsi, [rel quad]         ; RAM
    lea rdi, [rbx + 0x100]      ; the window
    mov ecx, 2                  ; two
    rep movsq                   ; REX.W A5: RAM -> MMIO
    REPORT rdi                  ; 0xc0000110
    std                         ; downwards
    mov rax, 0x5555aaaa5555aaaa ; ...
    mov rdi, HIGH + 0x128       ; the window above 4 GiB
    mov ecx, 2                  ; two
    rep stosq                   ; REX.W AB: fill down
    REPORT rdi                  ; 0x8000000118
    cld                         ; upwards
    mov rsi, HIGH + 0x100       ; ...
    lodsq                       ; REX.W AD: from MMIO
    REPORT rax                  ; 0x0706050403020100
    mov esi, MMIO_BASE + 0x120  ; 32-bit addresses
    mov edi, MMIO_BASE + 0x140  ; ...
    mov ecx, 3                  ; ecx counts
    a32 rep movsw               ; 67 F3 66 A5: MMIO -> MMIO
    REPORT rsi                  ; 0xc0000126
    REPORT rdi                  ; 0xc0000146
    cmp eax, eax                ; flags all defined (btc left some undefined)
    hlt                         ; stop

align 8
quad:
    dq 0x0706050403020100       ; two quadwords to copy
    dq 0x8877665544332211       ; ...
