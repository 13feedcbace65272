; guest: mem-read
; stage: 6
; mode: prot32
; preload: 0x10000 0x100
; demonstrates: the guest reads a pattern the runner wrote into guest memory before the run
;
; The runner writes byte i of 0x10000..0x10100 as (i * 7 + 0x11) & 0xFF
; through its mapping of guest memory (mmap of /dev/rkvm, or its own
; memory given to Linux KVM). The guest checks every byte and says so.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PATTERN_ADDR equ 0x10000        ; the header's preload address
PATTERN_LEN  equ 0x100          ; and length

start:
    mov esi, PATTERN_ADDR       ; the pattern
    xor ecx, ecx                ; i = 0
check:
    imul eax, ecx, PATTERN_MUL  ; i * 7
    add eax, PATTERN_ADD        ; + 0x11; only al matters
    cmp al, [esi + ecx]         ; is byte i right?
    jne bad                     ; no: say where
    inc ecx                     ; next byte
    cmp ecx, PATTERN_LEN        ; all of them?
    jb check                    ; not yet
    mov esi, good_text          ; every byte was right
    mov ecx, good_len           ; say so
    jmp say                     ; on the console
bad:
    mov eax, ecx                ; the first wrong offset
    out REPORT_PORT, eax        ; report it
    mov esi, bad_text           ; and complain
    mov ecx, bad_len            ; on the console
say:
    mov dx, CONSOLE_PORT        ; the console
    cld                         ; upwards
    rep outsb                   ; the message
    mov eax, [PATTERN_ADDR + 0xfc] ; the last four bytes, as the runner wrote them
    out REPORT_PORT, eax        ; 0x0a03fcf5
    hlt                         ; stop

good_text:
    db "pattern ok", 10
good_len equ $ - good_text
bad_text:
    db "pattern WRONG", 10
bad_len equ $ - bad_text
