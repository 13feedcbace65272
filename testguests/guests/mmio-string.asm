; guest: mmio-string
; stage: 10
; mode: prot32
; preload: 0x10000 0x40
; dump: 0x10100 0x40
; demonstrates: movs, stos and lods through the MMIO window, with and without rep, upwards and downwards, and a zero count
;
; RAM at 0x10000 holds the test pattern (00: 11 18 1f 26 ...); the
; window's bytes never written read as their offset. `rep movs` copies
; RAM to the window and the window to RAM (the dump at 0x10100 shows
; what arrived), with DF = 0 and DF = 1, and once the window to itself;
; `rep stos` fills the window; `lods` reads it. Every element is one MMIO
; access, in the order the processor makes them. After each instruction
; the guest reports esi, edi and ecx (and eax after lods and stos), so
; the trace shows the registers stepping by the element size, upwards or
; downwards. A zero count accesses nothing and changes no register.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

SRC     equ 0x10000             ; the pattern in RAM
DST     equ 0x10100             ; RAM the window is copied to
WIN     equ MMIO_BASE           ; the echo window

; REGS: report esi, edi, ecx.
%macro REGS 0
    push eax                    ; keep eax
    mov eax, esi                ; esi
    out REPORT_PORT, eax        ; reported
    mov eax, edi                ; edi
    out REPORT_PORT, eax        ; reported
    mov eax, ecx                ; ecx
    out REPORT_PORT, eax        ; reported
    pop eax                     ; eax back
%endmacro

start:
    cld                         ; upwards
    mov esi, SRC                ; RAM
    mov edi, WIN + 0x100        ; to the window
    mov ecx, 5                  ; five bytes
    rep movsb                   ; RAM -> MMIO, bytes, up
    REGS                        ; 0x10005, 0xc0000105, 0

    mov esi, SRC + 0x8          ; RAM
    mov edi, WIN + 0x110        ; to the window
    mov ecx, 3                  ; three words
    rep movsw                   ; RAM -> MMIO, words, up
    REGS                        ; 0x1000e, 0xc0000116, 0

    std                         ; downwards
    mov esi, SRC + 0x1c         ; the last of three doublewords
    mov edi, WIN + 0x128        ; the last of three in the window
    mov ecx, 3                  ; three doublewords
    rep movsd                   ; RAM -> MMIO, doublewords, down
    REGS                        ; 0x10010, 0xc000011c, 0

    mov esi, SRC + 0x23         ; RAM
    mov edi, WIN + 0x133        ; the window
    movsb                       ; one byte without rep, down
    REGS                        ; 0x10022, 0xc0000132, 0

    cld                         ; upwards
    mov esi, WIN + 0x200        ; never written: 00 01 02 ...
    mov edi, DST                ; to RAM
    mov ecx, 4                  ; four doublewords
    rep movsd                   ; MMIO -> RAM, doublewords, up
    REGS                        ; 0xc0000210, 0x10110, 0

    mov esi, WIN + 0x100        ; what the first copy wrote
    mov edi, DST + 0x10         ; to RAM
    mov ecx, 5                  ; five bytes
    rep movsb                   ; MMIO -> RAM, bytes, up
    REGS                        ; 0xc0000105, 0x10115, 0

    std                         ; downwards
    mov esi, WIN + 0x114        ; the last of the words copied
    mov edi, DST + 0x24         ; RAM
    mov ecx, 3                  ; three words
    rep movsw                   ; MMIO -> RAM, words, down
    REGS                        ; 0xc000010e, 0x1011e, 0

    mov esi, WIN + 0x2f0        ; never written
    mov edi, DST + 0x2c         ; RAM
    movsd                       ; one doubleword without rep, down
    REGS                        ; 0xc00002ec, 0x10128, 0

    cld                         ; upwards
    mov esi, WIN + 0x120        ; the window
    mov edi, WIN + 0x300        ; to the window
    mov ecx, 2                  ; two doublewords
    rep movsd                   ; MMIO -> MMIO: a read and a write each
    REGS                        ; 0xc0000128, 0xc0000308, 0

    mov eax, 0x8badcafe         ; the value to store
    mov edi, WIN + 0x400        ; the window
    mov ecx, 3                  ; three bytes
    rep stosb                   ; fill, bytes, up
    REGS                        ; edi 0xc0000403
    mov ecx, 2                  ; two words
    rep stosw                   ; fill, words, up
    REGS                        ; edi 0xc0000407
    std                         ; downwards
    mov edi, WIN + 0x418        ; the window
    mov ecx, 3                  ; three doublewords
    rep stosd                   ; fill, doublewords, down
    REGS                        ; edi 0xc000040c
    stosw                       ; one word without rep, down
    REGS                        ; edi 0xc000040a

    cld                         ; upwards
    mov esi, WIN + 0x400        ; what stos wrote
    lodsb                       ; one byte
    out REPORT_PORT, eax        ; 0x8badcafe
    lodsw                       ; one word
    out REPORT_PORT, eax        ; 0x8badfefe
    lodsd                       ; one doubleword
    out REPORT_PORT, eax        ; 0xcafecafe
    REGS                        ; esi 0xc0000407
    mov eax, 0x11223344         ; a value rep lodsb changes only the low byte of
    std                         ; downwards
    mov esi, WIN + 0x313        ; a byte the window copy wrote
    mov ecx, 4                  ; four bytes
    rep lodsb                   ; each replaces al: the last stays
    out REPORT_PORT, eax        ; ...
    REGS                        ; esi 0xc000030f, ecx 0
    mov esi, WIN + 0x502        ; never written
    lodsw                       ; one word, down
    out REPORT_PORT, eax        ; ...0x0302
    REGS                        ; esi 0xc0000500

    cld                         ; a zero count
    mov ecx, 0                  ; ecx = 0 (xor would leave AF undefined)
    mov esi, WIN + 0x600        ; the window
    mov edi, DST + 0x30         ; RAM
    rep movsb                   ; nothing moves
    REGS                        ; unchanged
    mov edi, WIN + 0x600        ; the window
    rep stosd                   ; nothing is stored
    rep lodsw                   ; nothing is loaded
    REGS                        ; unchanged
    out REPORT_PORT, eax        ; unchanged

    hlt                         ; stop
