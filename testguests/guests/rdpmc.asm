; guest: rdpmc
; stage: 8
; mode: prot32
; demonstrates: the guest never reads the host's performance counters: counter 0 reads 0, a counter that does not exist is a general-protection fault
;
; The guest reads performance counter 0 with `rdpmc` at CPL 0, then
; counter 0x40, which no processor has. The hypervisor intercepts the
; instruction so that the host's counters stay the host's: counter 0 is a
; counter that never counts (0), and counter 0x40 is #GP(0). The guest's
; #GP handler reports the vector and the error code, steps over the
; two-byte instruction and returns; the guest reports EDX:EAX after each
; read (the fault leaves them as they were).

%include "rkvm.inc"

bits 32
org LOAD_ADDR

IDT_ADDR equ SCRATCH_ADDR

start:
    gate32 13, gp_handler, IDT_ADDR
    lidt [idtr]
    mov eax, 0x11111111         ; markers
    mov edx, 0x22222222
    xor ecx, ecx                ; counter 0
    rdpmc
    out REPORT_PORT, eax
    mov eax, edx
    out REPORT_PORT, eax
    mov eax, 0x33333333         ; markers the fault must leave alone
    mov edx, 0x44444444
    mov ecx, 0x40               ; no such counter
    rdpmc
    out REPORT_PORT, eax
    mov eax, edx
    out REPORT_PORT, eax
    mov al, 0
    out EXIT_PORT, al

gp_handler:
    push eax
    mov eax, 13
    out REPORT_PORT, eax        ; the vector
    mov eax, [esp + 4]
    out REPORT_PORT, eax        ; the error code
    pop eax
    add esp, 4                  ; drop the error code
    add dword [esp], 2          ; past rdpmc (0f 33)
    iret

idtr:
    dw 256 * 8 - 1
    dd IDT_ADDR
