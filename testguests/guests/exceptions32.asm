; guest: exceptions32
; stage: 12
; mode: prot32
; demonstrates: faults and traps with and without error codes, and software interrupts, through the guest's own IDT: the vector, the error code, the saved eip and CR2 each handler sees
;
; Each test makes one event: #DE (`div` by zero), #BP (`int3`), #OF
; (`into` with OF set), #BR (`bound` out of range), #UD (`ud2`), #GP
; with a selector as error code (DS loaded with a selector past the GDT's
; limit, SS with a code segment), `int 3` and `int 0x40`; then, with
; 32-bit paging on, #PF for a read and a write of a page that is not
; present and for a write to a read-only page (CR0.WP set), each with its
; error code and CR2. A fault saves the eip of the faulting instruction,
; a trap (`int3`, `into`, `int n`) that of the next one.
;
; Each test runs on a page of stack it has not touched before, so the
; event's delivery is the first write to that page: a hypervisor with
; shadow page tables takes a page fault in the middle of the delivery and
; must deliver the event again, with its error code, or for a software
; interrupt with its instruction length.
;
; The handler writes to REPORT_PORT, for each event: the vector (one
; byte), the error code if the event has one (4 bytes), the saved eip and,
; for #PF, CR2. Then it goes on at the address the test left in `resume`.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

IDT_ADDR  equ SCRATCH_ADDR            ; 256 gates of 8 bytes
PD_ADDR   equ SCRATCH_ADDR + 0x1000   ; the page directory
STACKS    equ SCRATCH_ADDR + 0x2000   ; test N's stack is the page below STACKS + N * 0x1000
RO_PAGE   equ 0x00400000              ; linear: a read-only 4 MiB page onto physical 0
NO_PAGE   equ 0x00800000              ; linear: its directory entry is not present
NONE      equ 0xffffffff              ; the stubs' error code for events without one
PDE_LARGE equ 0x83                    ; present, writable, 4 MiB
PDE_RO    equ 0x81                    ; present, read-only, 4 MiB
CR0_WP    equ 1 << 16
CR0_PG    equ 1 << 31
CR4_PSE   equ 1 << 4

%assign stack_page 1

; expect RESUME: the handler goes on at RESUME; the test gets a stack
; page it has not touched yet.
%macro expect 1
    mov dword [resume], %1
    mov esp, STACKS + stack_page * 0x1000
    %assign stack_page stack_page + 1
%endmacro

; stub VECTOR: the handler of an event without an error code.
%macro stub 1
vector%1:
    push dword NONE             ; in place of an error code
    push dword %1               ; the vector
    jmp report
%endmacro

; stub_code VECTOR: the handler of an event with an error code.
%macro stub_code 1
vector%1:
    push dword %1               ; the vector, above the error code
    jmp report
%endmacro

start:
    gate32 0, vector0, IDT_ADDR
    gate32 3, vector3, IDT_ADDR
    gate32 4, vector4, IDT_ADDR
    gate32 5, vector5, IDT_ADDR
    gate32 6, vector6, IDT_ADDR
    gate32 13, vector13, IDT_ADDR
    gate32 14, vector14, IDT_ADDR
    gate32 0x40, vector0x40, IDT_ADDR
    lidt [idtr]

    expect de_next
    mov eax, 1
    xor edx, edx
    xor ecx, ecx
de_at:
    div ecx                     ; #DE, a fault: eip de_at
de_next:
    expect bp_next
    int3                        ; #BP, a trap: eip bp_next
bp_next:
    expect of_next
    mov al, 0x7f
    add al, 1                   ; OF = 1
    into                        ; #OF, a trap: eip of_next
of_next:
    expect br_next
    mov eax, 5
br_at:
    bound eax, [bounds]         ; 5 is not in [0, 3]: #BR, a fault: eip br_at
br_next:
    expect ud_next
ud_at:
    ud2                         ; #UD, a fault: eip ud_at
ud_next:
    expect gp1_next
    mov ax, 0x23                ; index 4, RPL 3: past the GDT's limit of 31
gp1_at:
    mov ds, ax                  ; #GP(0x20): the selector without its RPL
gp1_next:
    expect gp2_next
    mov ax, CODE32_SEL
gp2_at:
    mov ss, ax                  ; SS must be writable data: #GP(0x08)
gp2_next:
    expect int3_next
    int 3                       ; the two-byte form (cd 03): vector 3, eip int3_next
int3_next:
    expect int_next
    int 0x40                    ; a software interrupt: eip int_next
int_next:

    mov dword [PD_ADDR], PDE_LARGE              ; 0 to 4 MiB onto itself
    mov dword [PD_ADDR + 4], PDE_RO             ; 4 to 8 MiB read-only, onto 0 to 4 MiB
    mov eax, PD_ADDR
    mov cr3, eax
    mov eax, cr4
    or eax, CR4_PSE
    mov cr4, eax                                ; 4 MiB pages
    mov eax, cr0
    or eax, CR0_PG | CR0_WP
    mov cr0, eax                                ; paging on; read-only means read-only at CPL 0 too
    mov eax, [RO_PAGE + LOAD_ADDR]
    out REPORT_PORT, eax                        ; the alias reads the image's first bytes

    expect pf1_next
pf1_at:
    mov eax, [NO_PAGE + 0x10]   ; #PF(0x0): not present, a read; CR2 0x00800010
pf1_next:
    expect pf2_next
pf2_at:
    mov [NO_PAGE + 0x123], eax  ; #PF(0x2): not present, a write; CR2 0x00800123
pf2_next:
    expect pf3_next
pf3_at:
    mov [RO_PAGE + 0x1000], eax ; #PF(0x3): present, a write; CR2 0x00401000
pf3_next:

    mov esi, done
    mov ecx, done_len
    mov dx, CONSOLE_PORT
    cld
    rep outsb
    mov al, 0
    out EXIT_PORT, al

    stub 0
    stub 3
    stub 4
    stub 5
    stub 6
    stub_code 13
    stub_code 14
    stub 0x40

; The stack: the vector, the error code (or NONE), then the processor's
; eip, cs and eflags.
report:
    push eax
    mov eax, [esp + 4]
    out REPORT_PORT, al         ; the vector
    mov eax, [esp + 8]
    cmp eax, NONE
    je .no_code
    out REPORT_PORT, eax        ; the error code
.no_code:
    mov eax, [esp + 12]
    out REPORT_PORT, eax        ; the saved eip
    cmp dword [esp + 4], 14
    jne .resume
    mov eax, cr2
    out REPORT_PORT, eax        ; CR2: the linear address that faulted
.resume:
    mov eax, [resume]
    mov [esp + 12], eax         ; go on where the test said
    pop eax
    add esp, 8                  ; the vector and the error code
    iret

align 4
resume:
    dd 0
bounds:
    dd 0, 3
idtr:
    dw 256 * 8 - 1
    dd IDT_ADDR
done:
    db "every event reported", 10
done_len equ $ - done
