; guest: console
; stage: 6
; mode: real
; demonstrates: console text, one `out` to port 0xE9 per character
;
; Each `out` is one exit to the runner, which collects the characters and
; prints each finished line as a `console` line of the trace.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    mov si, message             ; ds:si walks the message (ds = 0)
    mov dx, CONSOLE_PORT        ; the port for `out dx, al`
    cld                         ; lodsb counts upwards
next:
    lodsb                       ; al = [ds:si], si += 1
    test al, al                 ; the message ends with a zero byte
    jz done                     ; ... and then we are done
    out dx, al                  ; one character to the console: one exit
    jmp next                    ; and the next one
done:
    hlt                         ; stop

message:
    db "Hello from a real-mode guest!", 10, 0
