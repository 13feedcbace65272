; guest: exit-port
; stage: 6
; mode: real
; demonstrates: the test-exit port, which stops a guest without hlt
;
; A byte written to EXIT_PORT ends the run: the trace says `exit 0x2a`, and
; the registers show rip still at the `out`, because the runner never
; completes that instruction.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    mov al, 0x2a                ; the exit value
    out EXIT_PORT, al           ; stop here: the runner does not resume
    hlt                         ; never reached
