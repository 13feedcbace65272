; guest: mem-write
; stage: 6
; mode: prot32
; dump: 0x11000 0x40
; demonstrates: the guest writes memory that the runner reads back through its mapping
;
; After the guest stops, the runner prints the 64 bytes at 0x11000 as
; `dump` lines. The guest writes 0x00, 0x01, ... 0x3f there, then a
; doubleword over bytes 0x3c..0x3f, so the last line ends in ef be ad de.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

DUMP_ADDR equ 0x11000           ; the header's dump address

start:
    mov edi, DUMP_ADDR          ; where to write
    xor eax, eax                ; the first byte value
    mov ecx, 0x40               ; 64 bytes
    cld                         ; upwards
fill:
    stosb                       ; [edi] = al, edi += 1
    inc al                      ; the next value
    loop fill                   ; 64 times
    mov dword [DUMP_ADDR + 0x3c], 0xdeadbeef ; overwrite the last four bytes
    hlt                         ; stop: the runner dumps the memory
