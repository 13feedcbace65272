; guest: debug-regs
; stage: 12
; mode: prot32
; demonstrates: a guest's own debug registers with no debugger attached: values kept, DR4/DR5 aliases, and single steps with EFLAGS.TF through its own #DB handler, with DR6
;
; Every `mov` to or from a debug register exits to the hypervisor, which
; keeps the guest's values (SDM Vol. 3B, 19.2). The guest writes and
; reads back DR0-DR3, reads DR6 and DR7 as reset left them and DR5 as
; DR7's alias (CR4.DE is clear), and writes DR7. Then its #DB handler
; (vector 1) reports DR6 and the return EIP for three single steps with
; EFLAGS.TF (traps: EIP is the next instruction's; the third handler
; clears TF in the saved EFLAGS), and clears DR6 each time.
;
; The guest's own breakpoints and DR7.GD are not used here: on the tcg-svm
; platform QEMU arms no breakpoint that VMRUN's DR7 enables and has no
; general detect, so Linux's KVM, which lets a guest at the registers
; directly, and rkvm, which does not, could not agree (chapter 12). The
; module's rules for both are host-tested.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

IDT_ADDR equ SCRATCH_ADDR

%macro report 1
    mov eax, %1
    out REPORT_PORT, eax
%endmacro

start:
    gate32 1, db_handler, IDT_ADDR
    lidt [idtr]
    mov eax, 0x11111111
    mov dr0, eax
    mov eax, 0x22222222
    mov dr1, eax
    mov eax, 0x33333333
    mov dr2, eax
    mov eax, 0x44444444
    mov dr3, eax
    mov ebx, dr0
    mov ecx, dr1
    mov edx, dr2
    mov esi, dr3
    mov eax, ebx
    out REPORT_PORT, eax
    mov eax, ecx
    out REPORT_PORT, eax
    mov eax, edx
    out REPORT_PORT, eax
    mov eax, esi
    out REPORT_PORT, eax
    mov eax, dr6
    out REPORT_PORT, eax        ; 0xffff0ff0
    mov eax, dr7
    out REPORT_PORT, eax        ; 0x400
    mov eax, dr5
    out REPORT_PORT, eax        ; DR7 again

    mov eax, 0x401
    mov dr7, eax
    mov eax, dr7
    out REPORT_PORT, eax        ; 0x401
    mov eax, 0x400
    mov dr7, eax

    ; Three single steps.
    mov dword [steps], 3
    pushfd
    or dword [esp], 0x100
    popfd                       ; TF on after this instruction
    nop
    nop
    nop                         ; the third step's handler clears TF
    report 0x55

    cli
    mov al, 0
    out EXIT_PORT, al

db_handler:                     ; #DB: report DR6 and where it returns to
    push eax
    mov eax, dr6
    out REPORT_PORT, eax
    mov eax, [esp + 4]
    out REPORT_PORT, eax
    xor eax, eax
    mov dr6, eax                ; clear B0-B3, BD, BS for the next one
    mov eax, 0x400
    mov dr7, eax                ; no breakpoint, no general detect
    cmp dword [steps], 0
    je .done
    dec dword [steps]
    jnz .done
    and dword [esp + 12], ~0x100 ; the last step: TF off in the saved EFLAGS
.done:
    pop eax
    iret

idtr:
    dw 256 * 8 - 1
    dd IDT_ADDR
steps:
    dd 0
