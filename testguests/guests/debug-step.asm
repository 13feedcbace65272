; guest: debug-step
; stage: 12
; mode: prot32
; demonstrates: KVM_DEBUG_GUEST single-steps a loop an instruction at a time, each stop a `debug` line with RIP
;
; The guest drives the runner's debugger through DEBUG_PORT, as a user at
; a debugger's prompt would. Single-stepping starts with the `out` that
; asks for it: the first stop is after that `out`, and every instruction
; after it stops once, the loop's three rounds included, and the `out` to
; REPORT_PORT too, which exits to the runner first and stops once the
; runner has completed it. The `out` that detaches the debugger does not
; stop, nor does anything after it.
;
; The debugger's breakpoints are not used here: QEMU's SVM loads DR7 from
; the VMCB at VMRUN without arming the breakpoints it enables, so on the
; tcg-svm platform no hypervisor's breakpoints fire, Linux's included
; (see the book's chapter 12). The module's side of them is host-tested.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

%macro debugger 1
    mov al, %1
    out DEBUG_PORT, al
%endmacro

start:
    debugger 1                  ; step: the first stop is after this out
    mov ecx, 3
    xor eax, eax
.loop:
    add eax, ecx
    dec ecx
    jnz .loop
    out REPORT_PORT, eax        ; 6, and a stop after it
    debugger 0                  ; detached: no stop after this one
    mov ecx, 2
.again:                         ; detached: no stops
    loop .again
    mov al, 0
    out EXIT_PORT, al
