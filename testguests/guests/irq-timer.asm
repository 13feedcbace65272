; guest: irq-timer
; stage: 12
; mode: prot32
; demonstrates: a guest that halts and wakes on timer interrupts the runner injects, counting them in its handler
;
; The guest points IDT vector 0x20 at its handler, arms the runner's timer
; for five ticks (TIMER_PORT) and halts with interrupts on. Each `hlt`
; waits for a tick: the runner raises vector 0x20 (`irq 0x20` in the
; trace), hands it over with KVM_INTERRUPT once the last exit says the
; guest can take it, and the handler counts it, reports the count and
; returns to the instruction after the `hlt`.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

IDT_ADDR equ SCRATCH_ADDR       ; 256 gates of 8 bytes
TICKS    equ 5

start:
    gate32 0x20, timer, IDT_ADDR
    lidt [idtr]
    mov al, TICKS
    out TIMER_PORT, al          ; five halts wait for a tick each
    sti
idle:
    hlt                         ; until the next interrupt
    cmp dword [ticks], TICKS
    jb idle
    mov eax, [ticks]
    out REPORT_PORT, eax        ; all counted
    cli
    mov al, 0
    out EXIT_PORT, al

timer:                          ; vector 0x20, with interrupts off
    push eax
    inc dword [ticks]
    mov eax, [ticks]
    out REPORT_PORT, eax        ; the count so far
    pop eax
    iret

idtr:
    dw 256 * 8 - 1
    dd IDT_ADDR
ticks:
    dd 0
