; guest: hlt-real
; stage: 5
; mode: real
; demonstrates: the smallest real-mode guest, one hlt at 0000:8000
;
; Real mode is how an x86 CPU comes out of reset. All segments have base 0,
; so the first instruction is at linear address LOAD_ADDR.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    hlt                         ; stop: the hypervisor reports KVM_EXIT_HLT
