; guest: spin
; stage: 5
; mode: real
; timeout: 1
; demonstrates: a guest that never stops, interrupts off: a signal must still end KVM_RUN (EINTR)
;
; The guest loops with RFLAGS.IF clear and makes no exit of its own. Only
; the host's timer interrupt takes the CPU back from it (an external
; interrupt exit, which the guest's IF must not mask); the runner's watchdog
; signal then makes KVM_RUN return EINTR, and the trace ends in `timeout 1`.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    cli                         ; interrupts off: the guest's own IF is clear
spin:
    jmp spin                    ; forever, without an exit
