; guest: out-loop
; stage: 6
; mode: prot32
; demonstrates: a loop of 1000 `out` instructions, the exit benchmark
;
; Each `out` is one exit to userspace and back, so the time this guest takes
; is about 1000 times the cost of an I/O exit. The trace folds the 1000
; identical lines into one, with `(x1000)` at its end.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    mov ecx, 1000               ; the number of exits
    mov al, 0x2a                ; the value written each time
again:
    out ECHO_PORT, al           ; one exit
    loop again                  ; ecx -= 1, and again until it is 0
    hlt                         ; stop
