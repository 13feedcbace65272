; guest: ud-real
; stage: 12
; mode: real
; demonstrates: an invalid opcode in real mode, delivered through the interrupt vector table
;
; In real mode the CPU finds exception handlers in the IVT at address 0:
; four bytes per vector, offset then segment. Under 2006 VMX, real mode ran
; in vm86 mode, where the hypervisor had to reflect such exceptions itself.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    mov word [6 * 4], handler   ; IVT vector 6 (#UD): offset
    mov word [6 * 4 + 2], 0     ; and segment 0
fault:
    ud2                         ; the invalid opcode: #UD
    hlt                         ; never reached

handler:
    pop ax                      ; the saved ip: the address of the ud2
    out REPORT_PORT, ax         ; report it (the label `fault`)
    pop ax                      ; the saved cs
    out REPORT_PORT, ax         ; 0
    mov si, caught              ; say so
    mov cx, caught_len          ; the length
    mov dx, CONSOLE_PORT        ; on the console
    cld                         ; upwards
    rep outsb                   ; the message
    hlt                         ; stop

caught:
    db "caught #UD in real mode", 10
caught_len equ $ - caught
