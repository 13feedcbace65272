; guest: ud
; stage: 6
; mode: prot32
; demonstrates: an invalid opcode (#UD, vector 6) caught by the guest's own IDT
;
; The exception never reaches userspace: the CPU (or the hypervisor, which
; may intercept #UD and inject it back) delivers it through the guest's IDT
; to the handler, which reports the saved eip and cs.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    lidt [idt_descriptor]       ; our IDT: vectors 0-6, only 6 present
fault:
    ud2                         ; the invalid opcode: #UD
    hlt                         ; never reached: the handler does not return

handler:
    pop eax                     ; the saved eip: the address of the ud2
    out REPORT_PORT, eax        ; report it (the label `fault`)
    pop eax                     ; the saved cs
    out REPORT_PORT, eax        ; report it: CODE32_SEL
    mov esi, caught             ; and say so
    mov ecx, caught_len         ; on the console
    mov dx, CONSOLE_PORT        ; the console
    cld                         ; upwards
    rep outsb                   ; the message
    hlt                         ; stop

caught:
    db "caught #UD", 10
caught_len equ $ - caught

align 8
idt:
    times 6 dq 0                ; vectors 0-5: not present
    dw ABS(handler) & 0xffff    ; vector 6: handler offset 15..0
    dw CODE32_SEL               ; the handler's code segment
    db 0                        ; reserved
    db 0x8e                     ; present, DPL 0, 32-bit interrupt gate
    dw ABS(handler) >> 16       ; handler offset 31..16
idt_end:

idt_descriptor:
    dw idt_end - idt - 1        ; limit
    dd idt                      ; base
