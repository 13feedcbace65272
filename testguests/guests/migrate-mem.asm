; guest: migrate-mem
; stage: 11
; mode: prot32
; demonstrates: a guest that keeps writing memory while `rkvm-run migrate` moves it to a second VM: many pages at first, then a few
;
; First eight passes over 64 pages (256 KiB at 0x20000), each a report
; (`out` to REPORT_PORT, where the migration's rounds end); then 48 rounds
; that each change two pages and wait a while; then a checksum of all 64
; pages. A page the migration failed to copy changes the checksum, and so
; the trace. A long stretch before the checksum writes nothing: the
; migration stops the guest there, whatever the platform's speed.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

DATA     equ 0x20000            ; 64 pages
HOT      equ 0x30000            ; the two pages of the second phase
DELAY    equ 20000              ; iterations of the wait in each round
QUIET    equ 5000000            ; iterations of the last stretch

start:
    xor ebx, ebx                ; pass number
fill_pass:
    mov edi, DATA
    mov ecx, 64 * 1024          ; doublewords in 64 pages
    mov eax, ebx                ; the pattern starts at the pass number
fill:
    stosd
    add eax, 0x9e3779b9         ; and moves on by the golden ratio
    loop fill
    mov eax, ebx
    out REPORT_PORT, eax        ; a round
    inc ebx
    cmp ebx, 8
    jb fill_pass

    xor ebx, ebx                ; round number
hot_round:
    mov esi, HOT
    mov ecx, 2 * 1024           ; doublewords in two pages
hot:
    add [esi], ebx              ; change every doubleword
    add esi, 4
    loop hot
    mov ecx, DELAY              ; then wait, writing nothing
idle:
    loop idle
    mov eax, ebx
    out REPORT_PORT, eax        ; a round
    inc ebx
    cmp ebx, 48
    jb hot_round

    mov ecx, QUIET              ; a last stretch that writes nothing,
quiet:                          ; long enough on any platform for the
    loop quiet                  ; migration to stop the guest in it
    mov esi, DATA               ; the checksum of all 64 pages
    mov ecx, 64 * 1024
    xor edx, edx
sum:
    lodsd
    rol edx, 5
    xor edx, eax
    loop sum
    mov eax, edx
    out REPORT_PORT, eax        ; the checksum
    mov al, 0
    out EXIT_PORT, al
