; guest: debug-step
; stage: 12
; mode: prot32
; demonstrates: KVM_DEBUG_GUEST: a loop single-stepped an instruction at a time, then four hardware breakpoints, each stop a `debug` line with RIP
;
; The guest drives the runner's debugger through DEBUG_PORT, as a user
; at a debugger's prompt would. Single-stepping starts with the `out`
; that asks for it: the first stop is after that `out`, and every
; instruction after it stops once, the loop's three rounds included, and
; the `out` to REPORT_PORT too, which exits to the runner first and stops
; once the runner has completed it. The `out` that detaches the debugger
; does not stop. Then four breakpoints, set out of order: each stops the
; guest before its instruction runs (RIP is the breakpoint's address,
; SDM Vol. 3B, 19.2.4: instruction breakpoints are faults), the runner
; removes it, and the guest runs on. A breakpoint on an `out` stops before
; the `out` exits.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

%macro debugger 1
    mov al, %1
    out DEBUG_PORT, al
%endmacro

%macro breakpoint 2
    mov ebx, %2
    debugger 0x10 + %1
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
    breakpoint 0, bp0
    breakpoint 1, bp1
    breakpoint 2, bp2
    breakpoint 3, bp3
    xor eax, eax
bp2:
    inc eax
    nop
bp0:
    inc eax
bp1:
    inc eax
bp3:
    out REPORT_PORT, eax        ; 3, after a stop before it
    mov ecx, 2
.again:                         ; the breakpoints are gone: no stops
    loop .again
    call bp0                    ; nor here
    mov al, 0
    out EXIT_PORT, al
