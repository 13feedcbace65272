; guest: io-sizes
; stage: 6
; mode: prot32
; demonstrates: out and in of sizes 1, 2 and 4, with an immediate port and with dx
;
; The echo port returns what was last written to it; the counter port returns
; 0x00, 0x01, 0x02, ... one byte at a time; an unassigned port reads all ones.
; An `in` of size 1 or 2 replaces only al or ax: the rest of eax is kept,
; which the final registers show (ebx, ecx, esi, edi, ebp keep the results).

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    mov al, 0x5a                ; a byte
    out ECHO_PORT, al           ; out, size 1, immediate port
    mov ax, 0x1234              ; a word
    out ECHO_PORT, ax           ; out, size 2
    mov eax, 0x89abcdef         ; a doubleword
    out ECHO_PORT, eax          ; out, size 4: the echo now holds 0x89abcdef

    mov eax, 0x11223344         ; upper bytes that an `in al` must keep
    in al, ECHO_PORT            ; in, size 1: eax = 0x112233ef
    mov ebx, eax                ; keep it
    mov eax, 0x11223344         ; again
    in ax, ECHO_PORT            ; in, size 2: eax = 0x1122cdef
    mov ecx, eax                ; keep it
    in eax, ECHO_PORT           ; in, size 4: eax = 0x89abcdef
    mov esi, eax                ; keep it

    mov dx, COUNTER_PORT        ; the port number in dx this time
    in al, dx                   ; 0x00
    in ax, dx                   ; 0x0201
    in eax, dx                  ; 0x06050403
    mov edi, eax                ; keep it

    mov dx, 0x0510              ; a port no device answers
    in eax, dx                  ; all ones: 0xffffffff
    mov ebp, eax                ; keep it
    out dx, ax                  ; traced and ignored

    mov eax, ebx                ; report what the first `in` gave
    out REPORT_PORT, eax        ; 0x112233ef
    mov eax, ecx                ; and the second
    out REPORT_PORT, eax        ; 0x1122cdef
    hlt                         ; stop
