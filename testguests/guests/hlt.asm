; guest: hlt
; stage: 5
; mode: prot32
; demonstrates: the smallest guest, one hlt in 32-bit protected mode with paging off
;
; The runner has already set flat 32-bit segments, CR0.PE and rip = LOAD_ADDR,
; so the very first instruction can stop the guest. The trace is one `hlt`
; line and the registers: rip is one past the hlt, rsp is STACK_TOP.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    hlt                         ; stop: the hypervisor reports KVM_EXIT_HLT
