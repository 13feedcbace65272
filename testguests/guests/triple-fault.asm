; guest: triple-fault
; stage: 6
; mode: prot32
; demonstrates: a triple fault, which a hypervisor reports as a shutdown
;
; With an IDT of limit 0 no exception can be delivered: the #UD becomes a
; #GP, that a double fault, and the double fault a triple fault. Real
; hardware would reset; KVM stops the guest with KVM_EXIT_SHUTDOWN. The
; trace ends with `shutdown` and, by design, no registers.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    mov esi, farewell           ; say what comes
    mov ecx, farewell_len       ; the length
    mov dx, CONSOLE_PORT        ; on the console
    cld                         ; upwards
    rep outsb                   ; the message
    lidt [empty_idt]            ; an IDT with no room for any vector
    ud2                         ; #UD -> #GP -> #DF -> triple fault
    hlt                         ; never reached

farewell:
    db "about to triple fault", 10
farewell_len equ $ - farewell

empty_idt:
    dw 0                        ; limit 0: not even vector 0 fits
    dd 0                        ; base
