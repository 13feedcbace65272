; guest: pf-user
; stage: 8
; mode: prot32
; demonstrates: page faults at CPL 3: supervisor pages, read-only user pages, permissions combined from both levels
;
; The guest loads its own GDT (code and data for ring 0 and ring 3, and a
; TSS whose SS0:ESP0 is the stack for interrupts from ring 3), turns on
; 32-bit paging with the first 4 MiB user-accessible, and drops to ring 3
; with iret (IOPL 3, so that ring 3 may use `out`). Every fault brings the
; CPU to ring 0 on the TSS's stack; the handler reports CR2, the error code
; (0x4 says CPL 3), the saved eip and the saved cs (0x1b: ring 3), then
; returns to ring 3 at the address the test left in `resume`. A page is
; writable only if both its directory and its page-table entry say so, and
; user-accessible only if both say so. At the end, ring 3 calls a gate of
; DPL 3 (vector 0x30), whose handler reports the cs it came from and stops.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD_ADDR    equ SCRATCH_ADDR          ; the page directory
PT_ADDR    equ SCRATCH_ADDR + 0x1000 ; the identity page table of the first 4 MiB
TPT_ADDR   equ SCRATCH_ADDR + 0x2000 ; the test pages at 1 GiB
KPT_ADDR   equ SCRATCH_ADDR + 0x3000 ; the test pages under a supervisor-only directory entry
RPT_ADDR   equ SCRATCH_ADDR + 0x4000 ; the test pages under a read-only directory entry
FRAME      equ SCRATCH_ADDR + 0x5000 ; the one frame every test page maps to
USER_STACK equ SCRATCH_ADDR + 0x7000 ; ring 3's stack, growing down
TEST_VA    equ 0x40000000            ; linear: TPT_ADDR's pages (directory entry 256)
SUPER_PAGE equ TEST_VA               ; present, writable, supervisor only
RO_PAGE    equ TEST_VA + 0x1000      ; present, read-only, user
NP_PAGE    equ TEST_VA + 0x2000      ; not present
K_DIR_PAGE equ 0x40400000            ; user page table entry, supervisor directory entry
R_DIR_PAGE equ 0x40800000            ; writable page table entry, read-only directory entry
PTE_P      equ 0x001                 ; present
PTE_PW     equ 0x003                 ; present, writable
PTE_PU     equ 0x005                 ; present, user
PTE_PWU    equ 0x007                 ; present, writable, user
CR0_PG     equ 0x80000000            ; paging
KCODE      equ 0x08                  ; ring 0 code selector in our GDT
KDATA      equ 0x10                  ; ring 0 data
UCODE      equ 0x18 | 3              ; ring 3 code, RPL 3
UDATA      equ 0x20 | 3              ; ring 3 data, RPL 3
TSS_SEL    equ 0x28                  ; the TSS

start:
    lgdt [gdt_descriptor]       ; our GDT: ring 0, ring 3, a TSS
    jmp KCODE:reload            ; reload cs from it
reload:
    mov ax, KDATA               ; ring 0 data
    mov ds, ax                  ; into ds
    mov es, ax                  ; es
    mov ss, ax                  ; and ss
    mov ax, TSS_SEL             ; the TSS
    ltr ax                      ; becomes the task register: SS0:ESP0 for faults from ring 3
    lidt [idt_descriptor]       ; our IDT: #PF and the exit gate

    mov edi, PD_ADDR            ; clear the directory and the page tables
    xor eax, eax                ; with zeros
    mov ecx, 5 * 1024           ; 5 pages of 1024 entries
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov edi, PT_ADDR            ; the identity page table
    mov eax, PTE_PWU            ; entry 0: frame 0, present, writable, user
    mov ecx, 1024               ; 1024 entries: 4 MiB
identity:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop identity               ; all of them
    mov dword [PD_ADDR], PT_ADDR | PTE_PWU ; 0-4 MiB: identity, user
    mov dword [PD_ADDR + (TEST_VA >> 22) * 4], TPT_ADDR | PTE_PWU ; the test pages: user, writable
    mov dword [PD_ADDR + (K_DIR_PAGE >> 22) * 4], KPT_ADDR | PTE_PW ; supervisor only
    mov dword [PD_ADDR + (R_DIR_PAGE >> 22) * 4], RPT_ADDR | PTE_PU ; read-only
    mov dword [TPT_ADDR + 0 * 4], FRAME | PTE_PW ; SUPER_PAGE: supervisor only
    mov dword [TPT_ADDR + 1 * 4], FRAME | PTE_PU ; RO_PAGE: read-only user page
    mov dword [KPT_ADDR], FRAME | PTE_PWU ; K_DIR_PAGE: user in its table only
    mov dword [RPT_ADDR], FRAME | PTE_PWU ; R_DIR_PAGE: writable in its table only
    mov dword [FRAME + 0x10], 0x77777777 ; what the frame holds
    mov eax, PD_ADDR            ; the page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; CR0.PG
    mov cr0, eax                ; paging on

    push dword UDATA            ; ring 3's ss
    push dword USER_STACK       ; and esp
    push dword 0x3002           ; eflags: IOPL 3, interrupts off
    push dword UCODE            ; ring 3's cs
    push dword user             ; and eip
    iretd                       ; to ring 3

user:
    mov ax, UDATA               ; ring 3 data
    mov ds, ax                  ; into ds
    mov es, ax                  ; and es
    xor eax, eax                ; the upper half of eax stays 0
    mov ax, cs                  ; where we are
    out REPORT_PORT, eax        ; 0x1b: ring 3
    mov eax, [RO_PAGE + 0x10]   ; a read-only user page can be read
    out REPORT_PORT, eax        ; 0x77777777
    mov dword [resume], ro_write ; after the fault, the next case
super_read:
    mov eax, [SUPER_PAGE + 0x10] ; #PF: CR2 0x40000010, error 0x5 (present, user)
ro_write:
    mov dword [resume], np_read ; after the fault, the next case
ro_write_insn:
    mov dword [RO_PAGE + 0x14], 1 ; #PF: CR2 0x40001014, error 0x7 (present, write, user)
np_read:
    mov dword [resume], k_dir_read ; after the fault, the next case
np_read_insn:
    mov eax, [NP_PAGE + 0x18]   ; #PF: CR2 0x40002018, error 0x4 (not present, user)
k_dir_read:
    mov dword [resume], r_dir_read ; after the fault, the next case
k_dir_read_insn:
    mov eax, [K_DIR_PAGE + 0x1c] ; #PF: CR2 0x4040001c, error 0x5: the directory entry is supervisor
r_dir_read:
    mov dword [resume], finish  ; if the read faulted, the trace would show it
    mov eax, [R_DIR_PAGE + 0x10] ; reading under a read-only directory entry is allowed
    out REPORT_PORT, eax        ; 0x77777777
    mov dword [resume], finish  ; after the fault, finish
r_dir_write:
    mov dword [R_DIR_PAGE + 0x20], 2 ; #PF: CR2 0x40800020, error 0x7: the directory entry is read-only
finish:
    mov eax, [FRAME + 0x14]     ; the frame, through the identity map
    out REPORT_PORT, eax        ; 0: no faulting write happened
    int 0x30                    ; back to ring 0, through the gate of DPL 3

; The page-fault handler, vector 14, on the TSS's stack. The CPU pushed
; ss, esp, eflags, cs, eip and an error code.
page_fault:
    push eax                    ; keep eax: the error code is at [esp + 4] now
    mov eax, cr2                ; the linear address that faulted
    out REPORT_PORT, eax        ; report it
    mov eax, [esp + 4]          ; the error code
    out REPORT_PORT, eax        ; report it
    mov eax, [esp + 8]          ; the saved eip: the faulting instruction
    out REPORT_PORT, eax        ; report it
    mov eax, [esp + 12]         ; the saved cs
    out REPORT_PORT, eax        ; report it: 0x1b, the fault came from ring 3
    mov eax, [resume]           ; where the test goes on
    mov [esp + 8], eax          ; replaces the saved eip
    pop eax                     ; eax back
    add esp, 4                  ; drop the error code
    iretd                       ; back to ring 3

; The exit gate, vector 0x30: ring 3 is done.
leave_user:
    mov eax, [esp + 4]          ; the saved cs
    out REPORT_PORT, eax        ; 0x1b
    mov eax, [esp + 12]         ; the saved esp: ring 3's stack
    out REPORT_PORT, eax        ; 0x17000: nothing left on it
    xor eax, eax                ; the upper half of eax stays 0
    mov ax, cs                  ; where we are now
    out REPORT_PORT, eax        ; 0x08: ring 0
    hlt                         ; stop

resume: dd 0                    ; where the handler goes on after a fault

align 8
gdt:
    dq 0                        ; the null descriptor
    dq 0x00CF9A000000FFFF       ; 0x08: flat code, ring 0
    dq 0x00CF92000000FFFF       ; 0x10: flat data, ring 0
    dq 0x00CFFA000000FFFF       ; 0x18: flat code, ring 3 (DPL 3)
    dq 0x00CFF2000000FFFF       ; 0x20: flat data, ring 3 (DPL 3)
    dw tss_end - tss - 1        ; 0x28: the TSS: limit 15..0
    dw ABS(tss) & 0xffff        ; base 15..0
    db (ABS(tss) >> 16) & 0xff  ; base 23..16
    db 0x89                     ; present, DPL 0, available 32-bit TSS
    db 0                        ; limit 19..16, flags
    db ABS(tss) >> 24           ; base 31..24
gdt_end:

gdt_descriptor:
    dw gdt_end - gdt - 1        ; limit
    dd gdt                      ; base

align 8
tss:
    dd 0                        ; previous task link
    dd STACK_TOP                ; esp0: ring 0's stack for interrupts from ring 3
    dd KDATA                    ; ss0
    times 22 dd 0               ; esp1 to the LDT selector: unused
    dw 0                        ; trap flag
    dw tss_end - tss            ; I/O map base: beyond the limit, no bitmap
tss_end:

align 8
idt:
    times 14 dq 0               ; vectors 0-13: not present
    dw ABS(page_fault) & 0xffff ; vector 14: handler offset 15..0
    dw KCODE                    ; the handler's code segment
    db 0                        ; reserved
    db 0x8e                     ; present, DPL 0, 32-bit interrupt gate
    dw ABS(page_fault) >> 16    ; handler offset 31..16
    times 0x30 - 15 dq 0        ; vectors 15-0x2f: not present
    dw ABS(leave_user) & 0xffff ; vector 0x30: handler offset 15..0
    dw KCODE                    ; the handler's code segment
    db 0                        ; reserved
    db 0xee                     ; present, DPL 3: ring 3 may call it with int
    dw ABS(leave_user) >> 16    ; handler offset 31..16
idt_end:

idt_descriptor:
    dw idt_end - idt - 1        ; limit
    dd idt                      ; base
