; guest: real-store
; stage: 6
; mode: real
; demonstrates: real-mode stores to pages other than the image's own, which the hypervisor maps as they are touched
;
; In real mode every address is physical, and the hypervisor backs guest
; memory page by page as the guest touches it. The guest stores a word
; into a page below its image and one far above it, with the segments it
; started with (every base 0), reads them back and reports their sum.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    mov word [0x3000], 0x1111   ; a page below the image: a fault the hypervisor fixes
    mov word [0xf000], 0x2222   ; a page above it
    mov ax, [0x3000]            ; load both back
    add ax, [0xf000]            ; and add
    out REPORT_PORT, ax         ; 0x3333
    hlt                         ; stop
