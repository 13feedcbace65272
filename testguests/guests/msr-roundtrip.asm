; guest: msr-roundtrip
; stage: 12
; mode: prot32
; demonstrates: rdmsr and wrmsr handled in the kernel: values kept for the guest (SYSENTER, SYSCALL, KERNEL_GS_BASE, the TSC) and #GP for an MSR no one has
;
; The guest reads IA32_MISC_ENABLE (its reset value says there is no
; branch trace store and no PEBS), writes it and reads it back; reads the
; APIC base; writes FS_BASE and GS_BASE and reads them back; writes and
; reads back the SYSENTER MSRs, then runs `sysenter`, which must land at
; its SYSENTER_EIP on its SYSENTER_ESP with SS = SYSENTER_CS + 8; writes
; and reads back STAR, LSTAR, CSTAR, SFMASK and KERNEL_GS_BASE; writes
; the TSC and checks that `rdtsc` (no exit) and then `rdmsr` (an exit)
; read about that value, and about the same; then reads and writes an
; MSR that does not exist. The #GP handler
; reports vector and error code and steps over the two-byte instruction.
; Each value goes to the report port, EDX then EAX. SYSENTER_ESP and
; SYSENTER_EIP are 32-bit values: Linux's kvm_amd keeps only their low
; halves for a guest whose CPUID is not Intel's. No non-canonical LSTAR
; either: kvm_amd lets the guest write LSTAR directly, and QEMU's TCG,
; the oracle's processor, takes any value where a real one raises #GP
; (rkvm's unit tests and rkvm-devtest check that rkvm refuses it).

%include "rkvm.inc"

bits 32
org LOAD_ADDR

IDT_ADDR equ SCRATCH_ADDR
SYSENTER_STACK equ STACK_TOP - 0x800

%macro read 1
    mov ecx, %1
    rdmsr
    xchg eax, edx
    out REPORT_PORT, eax        ; the high half
    mov eax, edx
    out REPORT_PORT, eax        ; the low half
%endmacro

%macro near_written 0           ; reports (edx - 0xfff) >> 2, 0 for a
    push eax                    ; TSC read from 1 << 32 cycles before
    lea eax, [edx - 0xfff]      ; the value written (a host's TSC may
    shr eax, 2                  ; step back a little between its CPUs)
    out REPORT_PORT, eax        ; to 3 << 32 after (about 6 seconds
    pop eax                     ; at 2 GHz)
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
    write 0x174, 0, CODE32_SEL  ; SYSENTER_CS
    read 0x174
    write 0x175, 0, SYSENTER_STACK ; SYSENTER_ESP
    read 0x175
    write 0x176, 0, after_sysenter ; SYSENTER_EIP
    read 0x176
    mov ebx, esp                ; the stack, kept across sysenter
    sysenter                    ; to SYSENTER_EIP, on SYSENTER_ESP
    hlt                         ; not reached
after_sysenter:
    mov eax, esp
    out REPORT_PORT, eax        ; SYSENTER_STACK
    xor eax, eax
    mov ax, ss
    out REPORT_PORT, eax        ; DATA32_SEL: SYSENTER_CS + 8
    mov esp, ebx
    write 0xc0000081, 0x00230010, 0 ; STAR
    read 0xc0000081
    write 0xc0000082, 0xffffffff, 0x81000000 ; LSTAR
    read 0xc0000082
    write 0xc0000083, 0xffffffff, 0x82000000 ; CSTAR
    read 0xc0000083
    write 0xc0000084, 0, 0x47700 ; SFMASK
    read 0xc0000084
    write 0xc0000102, 0xffff8880, 0x12340000 ; KERNEL_GS_BASE
    read 0xc0000102
    write 0x10, 0x1000, 0       ; IA32_TSC = 0x1000 << 32
    rdtsc                       ; without an exit
    near_written                ; 0
    mov esi, eax                ; keep it
    mov edi, edx
    mov ecx, 0x10
    rdmsr                       ; IA32_TSC, through an exit
    near_written                ; 0
    sub eax, esi                ; this read less the rdtsc's,
    sbb edx, edi
    add eax, 0x80000000         ; plus 1 << 31
    adc edx, 0
    mov eax, edx
    out REPORT_PORT, eax        ; 0: the two agree within 1 << 31
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
