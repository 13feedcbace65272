; guest: ac-loop
; stage: 8
; mode: prot32
; timeout: 2
; demonstrates: an alignment check whose delivery raises another one, forever (CVE-2015-5307): the host must keep its CPU
;
; CR0.AM on, then CPL 3 with EFLAGS.AC and a misaligned stack. The #AC
; handler's gate points at a conforming code segment, so its delivery
; stays at CPL 3 and pushes onto that misaligned stack: another #AC, and
; so on, without ever reaching an instruction boundary. A hypervisor that
; does not intercept #AC never gets its CPU back: neither a host interrupt
; nor the VMX-preemption timer ends the loop (it was measured so under
; Bochs). rkvm intercepts #AC and gives it back to the guest, one exit per
; delivery, so the host keeps its CPU and the runner's timeout ends the
; run. A processor that does not raise #AC here (QEMU's TCG never does)
; completes the push and spins at CPL 3 instead: the trace is the same.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    lgdt [gdt_descriptor]       ; our GDT, with ring-3 and conforming segments
    lidt [idt_descriptor]       ; #AC through the conforming segment
    mov eax, cr0                ; alignment checking
    or eax, 1 << 18             ; CR0.AM
    mov cr0, eax                ; on
    out REPORT_PORT, eax        ; before CPL 3
    push dword 0x2b             ; ss: ring-3 data
    push dword 0x6ff1           ; esp: misaligned
    push dword 0x40002          ; eflags: AC
    push dword 0x23             ; cs: ring-3 code
    push dword user             ; eip
    iret                        ; to CPL 3
user:
    push eax                    ; misaligned: #AC
spin:
    jmp spin                    ; without #AC: spin until the timeout

handler:
    hlt                         ; never reached either

align 8
gdt:
    dq 0                        ; null
    dq 0x00CF9A000000FFFF       ; 0x08: code, DPL 0
    dq 0x00CF92000000FFFF       ; 0x10: data, DPL 0
    dq 0x00CF9E000000FFFF       ; 0x18: conforming code, DPL 0
    dq 0x00CFFA000000FFFF       ; 0x20: code, DPL 3
    dq 0x00CFF2000000FFFF       ; 0x28: data, DPL 3
gdt_end:

gdt_descriptor:
    dw gdt_end - gdt - 1
    dd gdt

align 8
idt:
    times 17 dq 0               ; vectors 0-16: not present
    dw ABS(handler) & 0xffff    ; vector 17 (#AC): offset 15..0
    dw 0x18                     ; the conforming segment: CPL stays 3
    db 0
    db 0x8e                     ; present, DPL 0, 32-bit interrupt gate
    dw ABS(handler) >> 16       ; offset 31..16
idt_end:

idt_descriptor:
    dw idt_end - idt - 1
    dd idt
