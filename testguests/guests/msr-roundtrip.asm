; guest: msr-roundtrip
; stage: 12
; mode: prot32
; demonstrates: rdmsr and wrmsr handled in the kernel: values kept for the guest and #GP for an MSR no one has
;
; The guest reads IA32_MISC_ENABLE (its reset value says there is no
; branch trace store and no PEBS), writes it and reads it back; reads the
; microcode revision and the APIC base; writes FS_BASE and GS_BASE and
; reads them back; then reads and writes an MSR that does not exist, and
; its #GP handler reports vector and error code and steps over the
; two-byte instruction. Each value goes to the report port, EDX then EAX.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

IDT_ADDR equ SCRATCH_ADDR

%macro read 1
    mov ecx, %1
    rdmsr
    xchg eax, edx
    out REPORT_PORT, eax        ; the high half
    mov eax, edx
    out REPORT_PORT, eax        ; the low half
%endmacro

%macro write 3                  ; msr, high, low
    mov ecx, %1
    mov edx, %2
    mov eax, %3
    wrmsr
%endmacro

start:
    gate32 13, gp_handler, IDT_ADDR
    lidt [idtr]
    read 0x1a0                  ; IA32_MISC_ENABLE
    write 0x1a0, 0, 0x1801
    read 0x1a0
    read 0x1b                   ; IA32_APIC_BASE
    write 0xc0000100, 0, 0x12345000 ; FS_BASE
    read 0xc0000100
    write 0xc0000101, 0, 0x6789a000 ; GS_BASE
    read 0xc0000101
    mov eax, 0x77777777         ; a marker the fault leaves alone
    mov ecx, 0x12345678         ; no such MSR
    rdmsr
    out REPORT_PORT, eax
    wrmsr
    mov al, 0
    out EXIT_PORT, al

gp_handler:
    push eax
    mov eax, 13
    out REPORT_PORT, eax
    mov eax, [esp + 4]
    out REPORT_PORT, eax        ; the error code
    pop eax
    add esp, 4
    add dword [esp], 2          ; past rdmsr or wrmsr (0f 32, 0f 30)
    iret

idtr:
    dw 256 * 8 - 1
    dd IDT_ADDR
