; guest: exit-port
; stage: 6
; mode: real
; demonstrates: the test-exit port, which stops a guest without hlt
;
; A byte written to EXIT_PORT ends the run: the trace says `exit 0x2a` and
; nothing more. The runner never completes the `out`, so the registers are
; not traced: whether rip is already past it depends on the hypervisor.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    mov al, 0x2a                ; the exit value
    out EXIT_PORT, al           ; stop here: the runner does not resume
    hlt                         ; never reached
