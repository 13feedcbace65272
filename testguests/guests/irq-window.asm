; guest: irq-window
; stage: 12
; mode: prot32
; demonstrates: interrupts wait while IF is clear and while the instruction after sti runs, then go in lowest vector first
;
; The guest raises vectors 0x22 and 0x21 with interrupts off (IRQ_PORT):
; neither may go in, and the runner asks for the interrupt window
; instead. `sti` turns interrupts on after the next instruction (SDM Vol.
; 3A, 6.8.3), so the `mov` after it runs first, then 0x21 and 0x22 are
; delivered (each handler reports its vector, with IF clear until its
; `iret`), then the report of 2. Then a port write is the instruction in
; the shadow of `sti`: it exits to the runner, and vector 0x24 may go in
; only once the write is done.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

IDT_ADDR equ SCRATCH_ADDR


%macro raise 1
    mov al, %1
    out IRQ_PORT, al
%endmacro

%macro report 1
    mov eax, %1
    out REPORT_PORT, eax
%endmacro

start:
    gate32 0x21, handler21, IDT_ADDR
    gate32 0x22, handler22, IDT_ADDR
    gate32 0x24, handler24, IDT_ADDR
    lidt [idtr]
    cli
    raise 0x22
    raise 0x21
    report 1                    ; nothing delivered yet: IF is clear
    sti
    mov eax, 2                  ; in the shadow of sti
    out REPORT_PORT, eax        ; after 0x21 and 0x22
    cli
    raise 0x24
    mov eax, 3
    sti
    out REPORT_PORT, eax        ; in the shadow of sti, and it exits: 0x24 after it
    report 4
    cli
    mov al, 0
    out EXIT_PORT, al

handler21:
    push eax
    report 0x21
    pop eax
    iret
handler22:
    push eax
    report 0x22
    pop eax
    iret
handler24:
    push eax
    report 0x24
    pop eax
    iret

idtr:
    dw 256 * 8 - 1
    dd IDT_ADDR
