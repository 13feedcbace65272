; guest: migrate-long
; stage: 11
; mode: long64
; memory: 0x200000
; demonstrates: a 64-bit guest that copies memory with rep movsq while `rkvm-run migrate` moves it to a second VM
;
; A 256 KiB block at 0x40000 is filled, then copied back and forth to
; 0x80000 eight times with `rep movsq` (each copy a round), then 48
; rounds change one page and wait; the checksum of both blocks ends the
; trace.

%include "rkvm.inc"

bits 64
org LOAD_ADDR

BLOCK_A  equ 0x40000
BLOCK_B  equ 0x80000
QWORDS   equ 0x40000 / 8        ; 256 KiB
DELAY    equ 20000
QUIET    equ 5000000            ; iterations of the last stretch

start:
    mov rdi, BLOCK_A            ; fill A
    mov rcx, QWORDS
    mov rax, 0x0123456789abcdef
fill:
    stosq
    ror rax, 7
    add rax, rcx
    loop fill

    xor ebx, ebx                ; copy A to B, B to A, ...
copy_round:
    mov rsi, BLOCK_A
    mov rdi, BLOCK_B
    test bl, 1
    jz .forward
    xchg rsi, rdi
.forward:
    mov rcx, QWORDS
    rep movsq
    inc qword [BLOCK_A + 8 * rbx] ; so that each copy differs
    mov eax, ebx
    out REPORT_PORT, eax        ; a round
    inc ebx
    cmp ebx, 8
    jb copy_round

    xor ebx, ebx
hot_round:
    add [BLOCK_B + 8 * rbx], rbx ; one page changes
    mov ecx, DELAY
idle:
    loop idle
    mov eax, ebx
    out REPORT_PORT, eax        ; a round
    inc ebx
    cmp ebx, 48
    jb hot_round

    mov ecx, QUIET              ; a last stretch that writes nothing,
quiet:                          ; long enough on any platform for the
    loop quiet                  ; migration to stop the guest in it
    xor rdx, rdx                ; the checksum of both blocks
    mov rsi, BLOCK_A
    mov rcx, QWORDS
sum_a:
    lodsq
    rol rdx, 5
    xor rdx, rax
    loop sum_a
    mov rsi, BLOCK_B
    mov rcx, QWORDS
sum_b:
    lodsq
    rol rdx, 5
    xor rdx, rax
    loop sum_b
    mov eax, edx
    out REPORT_PORT, eax        ; the low half of the checksum
    shr rdx, 32
    mov eax, edx
    out REPORT_PORT, eax        ; and the high half
    mov al, 0
    out EXIT_PORT, al
