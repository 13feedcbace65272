; guest: debug-break
; stage: 12
; mode: prot32
; not-on: tcg-svm: QEMU's VMRUN loads DR7 without arming the breakpoints it enables, so no hypervisor's breakpoints fire in L2 there
; demonstrates: KVM_DEBUG_GUEST's execution breakpoints: a stop at each hit, with RIP, on and after `out` and MMIO, two on one instruction, none under RF, in a loop, none once detached
;
; The guest drives the runner's debugger through DEBUG_PORT: `0x10 + n`
; puts breakpoint n at the address in EBX, and the runner removes a
; breakpoint once it is hit, as a debugger's temporary breakpoint is.
; An execution breakpoint is a fault: the stop comes before the
; instruction, RIP at it, and the instruction runs when the guest
; resumes. The hypervisor does not set RFLAGS.RF for that resumption
; (SDM Vol. 3B, 19.3.1.1: a #DB for an instruction breakpoint leaves RF
; as it was), Linux's KVM no more than rkvm, so a breakpoint still armed
; there fires again at once: with two breakpoints on one instruction it
; stops twice, once for each, and then runs it. RF set by the guest
; itself (an `iret` whose EFLAGS image has it, as a #DB handler's does)
; keeps the next instruction from stopping, and is gone once that
; instruction is complete (19.3.1.1), also when the hypervisor completes
; it: an `out`, an emulated MMIO write, a `cpuid`; the instruction after
; each stops.
;
; A breakpoint armed on the instruction after the `out` that arms it,
; or after an `out` or an MMIO access that the hypervisor and the runner
; complete, stops there as soon as the guest resumes. Breakpoint 1 is
; re-armed at the top of a loop and stops in its body three rounds; the
; debugger then detaches, breakpoint 2 (armed on an instruction the last
; rounds reach) with it, and the loop runs on with no stop. ESI, EDI and
; EBP, which nothing touches, and the loop's sum come out intact.
;
; On the tcg-svm platform no breakpoint fires, under Linux's KVM or
; rkvm (see the book's chapter 12): the header leaves this guest out
; there, and its golden trace comes from Linux's kvm_intel on bochs-vmx.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

%macro debugger 1
    mov al, %1
    out DEBUG_PORT, al
%endmacro

; iret_rf TARGET: goes on at TARGET with EFLAGS.RF set, as a #DB
; handler's `iret` does to step over a breakpoint.
%macro iret_rf 1
    pushfd
    or dword [esp], RFLAGS_RF
    push dword CODE32_SEL
    push dword %1
    iret
%endmacro

RFLAGS_RF equ 1 << 16

start:
    mov esi, 0x11111111         ; left alone by every stop
    mov edi, 0x22222222
    mov ebp, 0x33333333

    ; On the instruction after the out that arms it.
    mov ebx, armed
    debugger 0x10
armed:
    nop                         ; stop: the out is complete

    ; On an out, and on the instruction after it.
    mov ebx, on_out
    debugger 0x11
    mov ebx, after_out
    debugger 0x12
    mov eax, 0x55
on_out:
    out REPORT_PORT, eax        ; stop before it, then the out
after_out:
    nop                         ; stop after it

    ; On an MMIO write, and after an MMIO read.
    mov ebx, on_mmio
    debugger 0x10
    mov ebx, after_mmio
    debugger 0x13
    mov edx, 0x12345678
on_mmio:
    mov [MMIO_BASE], edx        ; stop before it, then the write
    mov eax, [MMIO_BASE]        ; the read
after_mmio:
    out REPORT_PORT, eax        ; stop (eax already read), then 0x12345678

    ; Two on one instruction: one #DB for both, and the one left armed
    ; fires again on the resumed instruction.
    mov ebx, twice
    debugger 0x10
    debugger 0x13
    nop
twice:
    nop                         ; stop, and stop again

    ; RF set by the guest's own `iret`: no stop on the instruction it
    ; returns to, even one that exits, and RF gone once that one is
    ; complete, whoever completed it.
    mov ebx, rf_nop
    debugger 0x10
    iret_rf rf_nop
rf_nop:
    nop                         ; no stop: RF (breakpoint 0 stays armed here)
    mov ebx, rf_out
    debugger 0x11
    mov ebx, rf_after_out
    debugger 0x12
    mov eax, 0x66
    iret_rf rf_out
rf_out:
    out REPORT_PORT, eax        ; no stop: RF (breakpoint 1 stays armed)
rf_after_out:
    nop                         ; stop: RF went with the out
    mov ebx, rf_mmio
    debugger 0x12
    mov ebx, rf_after_mmio
    debugger 0x13
    iret_rf rf_mmio
rf_mmio:
    mov [MMIO_BASE + 4], edx    ; no stop: RF, whether the processor or the emulator checks
rf_after_mmio:
    nop                         ; stop: RF went with the emulated write
    mov ebx, rf_after_cpuid
    debugger 0x13
    mov eax, CPUID_BASE_LEAF
    iret_rf rf_cpuid
rf_cpuid:
    cpuid                       ; completed in the kernel, no exit to the runner
rf_after_cpuid:
    nop                         ; stop

    ; A loop: breakpoint 1 re-armed in its first three rounds; then the
    ; debugger detaches, taking breakpoint 2 along.
    mov ebx, late
    debugger 0x12               ; never hit: detached before the guest gets there
    mov ebx, body
    mov ecx, 6
    xor edx, edx
round:
    cmp ecx, 3
    jb late
    je detach
    debugger 0x11               ; rounds 6, 5, 4: breakpoint 1 at body
    jmp body
detach:
    debugger 0                  ; round 3: off, with breakpoint 2
    jmp body
late:
    nop                         ; rounds 2 and 1: no stop
body:
    add edx, ecx                ; stops in rounds 6, 5 and 4
    loop round

    mov eax, edx
    out REPORT_PORT, eax        ; 21
    mov eax, esi
    out REPORT_PORT, eax
    mov eax, edi
    out REPORT_PORT, eax
    mov eax, ebp
    out REPORT_PORT, eax
    mov al, 0
    out EXIT_PORT, al
