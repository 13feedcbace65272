; guest: pf-pae
; stage: 8
; mode: prot32
; demonstrates: page faults in PAE paging: reserved bits (RSVD), EFER.NXE set by wrmsr, execute-disable pages (I/D)
;
; The handler (vector 14) reports CR2, the error code and the saved eip of
; every fault, then goes on at the address the test left in `resume`. The
; error code's bits: 0x1 present (a protection or reserved-bit fault), 0x2
; write, 0x4 CPL 3, 0x8 a reserved bit was set (RSVD), 0x10 an instruction
; fetch (I/D: only given when EFER.NXE = 1 in PAE paging). Bit 63 of a PAE
; entry is execute-disable (XD) when EFER.NXE = 1 and a reserved bit when
; EFER.NXE = 0; bits 20:13 of a directory entry that maps a 2 MiB page are
; always reserved. The pages the fetches aim at hold code that would report
; 0xbad and stop, so a fetch that does not fault shows in the trace.
;
; The SDM sets the P bit (0x1) in the error code of every reserved-bit
; fault ("bit 3 of the error code can be set only if bit 0 is also set"),
; and so does KVM's shadow paging; QEMU 7.2's emulated processor, on
; which the oracle runs its guests with nested paging, leaves it clear. So the handler reports a reserved-bit fault's code without P.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PDPT_ADDR equ SCRATCH_ADDR          ; the four PDPT entries
PD0_ADDR  equ SCRATCH_ADDR + 0x1000 ; the directory of 0-1 GiB
PD1_ADDR  equ SCRATCH_ADDR + 0x2000 ; the directory of 1-2 GiB
TPT_ADDR  equ SCRATCH_ADDR + 0x3000 ; the page table at 1 GiB
XPT_ADDR  equ SCRATCH_ADDR + 0x4000 ; the page table under an XD directory entry
XD_FRAME  equ SCRATCH_ADDR + 0x5000 ; the frame behind the XD page
BAD_FRAME equ SCRATCH_ADDR + 0x6000 ; the frame under the XD directory entry
TEST_VA   equ 0x40000000            ; linear: TPT_ADDR's pages
NP_PAGE   equ TEST_VA               ; not present
XD_PAGE   equ TEST_VA + 0x1000      ; bit 63 set: reserved, later execute-disable
RSVD_2M   equ 0x40200000            ; a 2 MiB page with reserved bit 13 set
XD_TABLE  equ 0x40400000            ; an executable page under an XD directory entry
PTE_PW    equ 0x003                 ; present, writable
PDE_2M    equ 0x083                 ; present, writable, 2 MiB page (PS)
PDE_BIT13 equ 0x2000                ; reserved in a 2 MiB directory entry
XD_HIGH   equ 0x80000000            ; bit 63 of an entry, in its high doubleword
MSR_EFER  equ 0xc0000080            ; the extended feature enable register
EFER_NXE  equ 0x800                 ; no-execute enable
CR0_PG    equ 0x80000000            ; paging
CR4_PAE   equ 0x20                  ; PAE paging

start:
    lidt [idt_descriptor]       ; our IDT: vector 14 is the page-fault handler
    mov edi, PDPT_ADDR          ; clear the five table pages
    xor eax, eax                ; with zeros
    mov ecx, 5 * 1024           ; 5 pages of 1024 doublewords
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov dword [PDPT_ADDR], PD0_ADDR | 1 ; 0-1 GiB: present only
    mov dword [PDPT_ADDR + 8], PD1_ADDR | 1 ; 1-2 GiB: present only
    mov dword [PD0_ADDR], 0 | PDE_2M ; 0-2 MiB: identity, one large page
    mov dword [PD1_ADDR], TPT_ADDR | PTE_PW ; 1 GiB: a page table
    mov dword [PD1_ADDR + 1 * 8], 0 | PDE_2M | PDE_BIT13 ; RSVD_2M: reserved bit 13
    mov dword [PD1_ADDR + 2 * 8], XPT_ADDR | PTE_PW ; XD_TABLE: a page table,
    mov dword [PD1_ADDR + 2 * 8 + 4], XD_HIGH ; whose directory entry says XD
    mov dword [TPT_ADDR + 1 * 8], XD_FRAME | PTE_PW ; XD_PAGE: present, writable,
    mov dword [TPT_ADDR + 1 * 8 + 4], XD_HIGH ; and bit 63
    mov dword [XPT_ADDR], BAD_FRAME | PTE_PW ; XD_TABLE's page: executable itself
    mov dword [XD_FRAME + 0x30], 0x55555555 ; what XD_PAGE holds
    mov esi, bad_code           ; the code a fetch would find: report 0xbad
    mov edi, XD_FRAME           ; at the start of XD_PAGE
    mov ecx, bad_code_len       ; its length
    rep movsb                   ; copied
    mov esi, bad_code           ; the same code
    mov edi, BAD_FRAME          ; at the start of XD_TABLE
    mov ecx, bad_code_len       ; its length
    rep movsb                   ; copied

    mov eax, cr4                ; CR4
    or eax, CR4_PAE             ; CR4.PAE
    mov cr4, eax                ; PAE on (paging still off)
    mov eax, PDPT_ADDR          ; the PDPT
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; CR0.PG
    mov cr0, eax                ; paging on

    mov dword [resume], rsvd_2m ; after the fault, the next case
np_read:
    mov eax, [NP_PAGE + 0x10]   ; #PF: CR2 0x40000010, error 0x0 (not present)
rsvd_2m:
    mov dword [resume], rsvd_xd ; after the fault, the next case
rsvd_2m_read:
    mov eax, [RSVD_2M + 0x20]   ; #PF: CR2 0x40200020, error 0x9, reported 0x8 (reserved bit)
rsvd_xd:
    mov dword [resume], nxe_on  ; after the fault, turn NXE on
rsvd_xd_read:
    mov eax, [XD_PAGE + 0x30]   ; #PF: CR2 0x40001030, reported 0x8: bit 63 is reserved while NXE = 0

nxe_on:
    mov ecx, MSR_EFER           ; EFER
    rdmsr                       ; edx:eax = EFER
    or eax, EFER_NXE            ; no-execute enable
    wrmsr                       ; EFER.NXE = 1: bit 63 means execute-disable now
    rdmsr                       ; read it back
    out REPORT_PORT, eax        ; 0x800
    mov eax, cr3                ; reload CR3, so that no translation made
    mov cr3, eax                ; while NXE was 0 stays cached
    mov dword [resume], xd_fetch ; if the read faulted, the trace would show it
    mov eax, [XD_PAGE + 0x30]   ; reading an XD page is allowed
    out REPORT_PORT, eax        ; 0x55555555
    mov dword [XD_PAGE + 0x30], 0x66666666 ; so is writing it
    mov eax, [XD_FRAME + 0x30]  ; through the identity map
    out REPORT_PORT, eax        ; 0x66666666
xd_fetch:
    mov dword [resume], np_fetch ; after the fault, the next case
    jmp XD_PAGE                 ; #PF: CR2 = eip = 0x40001000, error 0x11 (present, fetch)
np_fetch:
    mov dword [resume], xd_pde_fetch ; after the fault, the next case
    jmp NP_PAGE + 0x80          ; #PF: CR2 = eip = 0x40000080, error 0x10 (not present, fetch)
xd_pde_fetch:
    mov dword [resume], rsvd_fetch ; after the fault, the next case
    jmp XD_TABLE                ; #PF: CR2 = eip = 0x40400000, error 0x11: XD in the directory entry
rsvd_fetch:
    mov dword [resume], done    ; after the fault, finish
    jmp RSVD_2M + 0x100         ; #PF: CR2 = eip = 0x40200100, error 0x19, reported 0x18 (reserved, fetch)

done:
    mov eax, [TPT_ADDR + 1 * 8 + 4] ; XD_PAGE's entry, high half
    out REPORT_PORT, eax        ; 0x80000000: XD kept
    mov eax, [TPT_ADDR + 1 * 8] ; and low half
    out REPORT_PORT, eax        ; 0x00015063: accessed and dirty
    hlt                         ; stop

; What a fetch from a page that must not execute would run. It uses no
; absolute address, so it runs wherever it is copied.
bad_code:
    mov eax, 0xbad              ; the fetch did not fault
    out REPORT_PORT, eax        ; say so
    hlt                         ; and stop
bad_code_len equ $ - bad_code

; The page-fault handler, vector 14. The CPU pushed eflags, cs, eip and an
; error code; we report CR2, the error code and the eip.
page_fault:
    push eax                    ; keep eax: the error code is at [esp + 4] now
    mov eax, cr2                ; the linear address that faulted
    out REPORT_PORT, eax        ; report it
    mov eax, [esp + 4]          ; the error code
    test al, 0x8                ; a reserved-bit fault?
    jz .code                    ; no: report it as it is
    and al, ~0x1                ; yes: without its P bit (see above)
.code:
    out REPORT_PORT, eax        ; report it
    mov eax, [esp + 8]          ; the saved eip: the faulting instruction
    out REPORT_PORT, eax        ; report it
    mov eax, [resume]           ; where the test goes on
    mov [esp + 8], eax          ; replaces the saved eip
    pop eax                     ; eax back
    add esp, 4                  ; drop the error code
    iretd                       ; return there

resume: dd 0                    ; where the handler goes on after a fault

align 8
idt:
    times 14 dq 0               ; vectors 0-13: not present
    dw ABS(page_fault) & 0xffff ; vector 14: handler offset 15..0
    dw CODE32_SEL               ; the handler's code segment
    db 0                        ; reserved
    db 0x8e                     ; present, DPL 0, 32-bit interrupt gate
    dw ABS(page_fault) >> 16    ; handler offset 31..16
idt_end:

idt_descriptor:
    dw idt_end - idt - 1        ; limit
    dd idt                      ; base
