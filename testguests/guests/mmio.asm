; guest: mmio
; stage: 10
; mode: prot32
; demonstrates: MMIO writes and reads of sizes 1, 2 and 4 at an address with no memory behind it
;
; No memory slot covers MMIO_BASE, so each access leaves the guest: the
; hypervisor decodes the instruction (the 2006 emulator, x86_emulate.c) and
; reports KVM_EXIT_MMIO; for a read it finishes the instruction with the
; data the runner returns. The echo window keeps what is written; bytes
; never written read as their offset; outside the window reads are all ones.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    mov ebx, MMIO_BASE          ; the echo window
    mov byte [ebx], 0x11        ; write 1 byte (mov r/m8, imm8)
    mov word [ebx + 2], 0x2233  ; write 2 bytes (mov r/m16, imm16)
    mov dword [ebx + 4], 0x44556677 ; write 4 bytes (mov r/m32, imm32)
    mov eax, 0x8899aabb         ; a register value
    mov [ebx + 8], eax          ; write 4 bytes from a register

    mov al, [ebx]               ; read 1 byte: eax = 0x8899aa11
    movzx ecx, word [ebx + 2]   ; read 2 bytes, zero-extended: 0x2233
    mov edx, [ebx + 4]          ; read 4 bytes: 0x44556677
    mov esi, [ebx + 0x10]       ; never written: 0x13121110
    mov edi, [ebx + MMIO_SIZE]  ; outside the window: 0xffffffff
    out REPORT_PORT, eax        ; report eax; the others are in the final registers
    hlt                         ; stop
