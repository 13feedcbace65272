; guest: string-io
; stage: 6
; mode: prot32
; demonstrates: rep outsb and rep insb, forwards and backwards (DF=1), outsw, rep with ecx = 0
;
; The 2006 ABI hands a whole `rep outsb` to userspace in one exit (count and
; the linear address of the data); today's KVM may split it. The trace shows
; one line per element either way, in the order the guest made them.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    cld                         ; DF = 0: strings go upwards
    mov esi, greeting           ; the text
    mov ecx, greeting_len       ; its length
    mov dx, CONSOLE_PORT        ; to the console
    rep outsb                   ; the whole line in one instruction

    mov esi, four               ; bytes 01 02 03 04
    mov ecx, 4                  ; four of them
    mov dx, ECHO_PORT           ; to the echo port
    rep outsb                   ; forwards: 01 02 03 04
    std                         ; DF = 1: strings go downwards
    mov esi, four + 3           ; start at the last byte
    mov ecx, 4                  ; four of them
    mov dx, REPORT_PORT         ; to the report port this time
    rep outsb                   ; backwards: 04 03 02 01
    cld                         ; upwards again

    xor ecx, ecx                ; a count of zero
    rep outsb                   ; does nothing at all: no trace line

    mov edi, buffer             ; into the buffer
    mov ecx, 8                  ; eight bytes
    mov dx, COUNTER_PORT        ; from the counter: 00 01 ... 07
    rep insb                    ; buffer[0..8] = 00 01 02 03 04 05 06 07
    std                         ; downwards
    mov edi, buffer + 15        ; from the end of the buffer
    mov ecx, 8                  ; eight bytes: 08 09 ... 0f
    rep insb                    ; buffer[8..16] = 0f 0e 0d 0c 0b 0a 09 08
    cld                         ; upwards again

    mov esi, buffer             ; send the buffer back out
    mov ecx, 4                  ; as four doublewords
    mov dx, REPORT_PORT         ; to the report port
    rep outsd                   ; 0x03020100 0x07060504 0x0c0d0e0f 0x08090a0b

    mov esi, word_value         ; one word
    outsw                       ; outsw without rep: a single element, 0xbeef
    mov edi, buffer             ; and one word in
    mov dx, COUNTER_PORT        ; from the counter
    insw                        ; insw without rep: 0x1110
    mov eax, [buffer]           ; what insw stored, and the bytes after it
    out REPORT_PORT, eax        ; 0x03021110
    hlt                         ; stop

greeting:
    db "rep outsb to the console", 10
greeting_len equ $ - greeting
four:
    db 0x01, 0x02, 0x03, 0x04
word_value:
    dw 0xbeef
buffer:
    times 16 db 0
