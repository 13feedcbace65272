; guest: msr-syscall
; stage: 12
; mode: long64
; demonstrates: the SYSCALL MSRs and KERNEL_GS_BASE are in the processor while a 64-bit guest runs: `syscall` goes to its LSTAR with its STAR's selectors and its SFMASK, and `swapgs` exchanges its GS base with its KERNEL_GS_BASE
;
; The guest turns on EFER.SCE, writes STAR (kernel CS 0x18, so SS 0x20),
; LSTAR (its handler) and SFMASK (DF), sets DF and runs `syscall`. The
; handler reports CS, SS, RFLAGS.DF (cleared by SFMASK), R11's DF (the
; RFLAGS saved) and RCX less the address after `syscall`, then jumps back
; there at CPL 0 (no `sysret`, which would go to CPL 3). Then GS base =
; SCRATCH_ADDR and KERNEL_GS_BASE = SCRATCH_ADDR + 0x100, each holding a
; marker; `swapgs`; a read through GS finds the second marker, and
; `rdmsr` reads the two bases exchanged. On VMX the module loads these
; MSRs around each entry: a wrong LSTAR would send `syscall` astray and a
; KERNEL_GS_BASE not read back after the exit would read unchanged.

%include "rkvm.inc"

bits 64
org LOAD_ADDR

%macro read 1                   ; reports MSR %1, EDX then EAX
    mov ecx, %1
    rdmsr
    xchg eax, edx
    out REPORT_PORT, eax
    mov eax, edx
    out REPORT_PORT, eax
%endmacro

%macro write64 2                ; MSR %1 = 64-bit value %2
    mov ecx, %1
    mov rax, %2
    mov rdx, rax
    shr rdx, 32
    wrmsr
%endmacro

start:
    mov ecx, 0xc0000080         ; EFER
    rdmsr
    or eax, 1                   ; SCE: syscall and sysret
    wrmsr
    write64 0xc0000081, 0x0008001800000000 ; STAR: CS 0x18, SS 0x20
    write64 0xc0000082, handler ; LSTAR
    write64 0xc0000084, 0x400   ; SFMASK: DF
    read 0xc0000082             ; LSTAR as the guest wrote it
    std                         ; DF, which SFMASK clears
    syscall
after_syscall:
    mov ax, DATA32_SEL          ; a stack segment from the GDT again
    mov ss, ax
    mov dword [SCRATCH_ADDR], 0x11111111 ; the marker at GS base
    mov dword [SCRATCH_ADDR + 0x100], 0x22222222 ; at KERNEL_GS_BASE
    write64 0xc0000101, SCRATCH_ADDR ; GS_BASE
    write64 0xc0000102, SCRATCH_ADDR + 0x100 ; KERNEL_GS_BASE
    swapgs                      ; without an exit
    mov eax, [gs:0]
    out REPORT_PORT, eax        ; 0x22222222
    read 0xc0000101             ; GS_BASE: SCRATCH_ADDR + 0x100
    read 0xc0000102             ; KERNEL_GS_BASE: SCRATCH_ADDR
    swapgs                      ; and back
    mov eax, [gs:0]
    out REPORT_PORT, eax        ; 0x11111111
    read 0xc0000102             ; KERNEL_GS_BASE: SCRATCH_ADDR + 0x100
    mov al, 0
    out EXIT_PORT, al

handler:
    mov ax, cs
    movzx eax, ax
    out REPORT_PORT, eax        ; 0x18: STAR[47:32]
    mov ax, ss
    movzx eax, ax
    out REPORT_PORT, eax        ; 0x20: STAR[47:32] + 8
    pushfq
    pop rax
    and eax, 0x400
    out REPORT_PORT, eax        ; 0: SFMASK cleared DF
    mov rax, r11
    and eax, 0x400
    out REPORT_PORT, eax        ; 0x400: R11 holds RFLAGS as it was
    cld
    lea rbx, [rel after_syscall]
    mov rax, rcx
    sub rax, rbx
    out REPORT_PORT, eax        ; 0: RCX is the return address
    jmp rbx                     ; back, still at CPL 0
