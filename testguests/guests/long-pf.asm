; guest: long-pf
; stage: 8
; mode: long64
; memory: 0x800000
; demonstrates: page faults in 64-bit mode: a handler in a 64-bit IDT, 2 MiB pages, missing entries at every level, a CR2 above 4 GiB, EFER.NXE
;
; The guest starts in 64-bit mode on the runner's tables, builds four-level
; tables of its own and loads them into CR3. Its IDT has 16-byte gates; in
; 64-bit mode the CPU always pushes ss and rsp, then rflags, cs, rip and the
; error code. The handler reports CR2 (low half, then high half), the error
; code and the low half of the saved rip, then goes on at `resume`. The
; cases: a read of a 4 KiB page that is not present; a read where the
; directory entry (a 2 MiB region), the PDPT entry and the PML4 entry are
; missing, the last two far above 4 GiB; a 2 MiB page that is read-only
; (written with CR0.WP = 1), one with reserved bit 13 set, and, after the
; guest sets EFER.NXE by wrmsr, one that is execute-disable, as is a 4 KiB
; page. The fetched pages hold code that would report 0xbad and stop.
;
; The SDM sets the P bit (0x1) in the error code of every reserved-bit
; fault ("bit 3 of the error code can be set only if bit 0 is also set"),
; and so does KVM's shadow paging; QEMU 7.2's emulated processor, on
; which the oracle runs its guests with nested paging, leaves it clear. So the handler reports a reserved-bit fault's code without P.

%include "rkvm.inc"

bits 64
org LOAD_ADDR

PML4      equ SCRATCH_ADDR          ; the guest's own PML4
PDPT      equ SCRATCH_ADDR + 0x1000 ; the PDPT of the first 512 GiB
PD        equ SCRATCH_ADDR + 0x2000 ; the directory of the first 1 GiB
PT        equ SCRATCH_ADDR + 0x3000 ; a page table at 6 MiB
PDPT_HI   equ SCRATCH_ADDR + 0x4000 ; the PDPT of the last 512 GiB
PD_HI     equ SCRATCH_ADDR + 0x5000 ; the directory at -2 GiB
FRAME     equ SCRATCH_ADDR + 0x6000 ; a 4 KiB frame
BIG       equ 0x200000              ; physical: a 2 MiB frame
RO_2M     equ 0x200000              ; linear: BIG, read-only (directory entry 1)
RSVD_2M   equ 0x400000              ; linear: reserved bit 13 set (directory entry 2)
SMALL     equ 0x600000              ; linear: 4 KiB pages (directory entry 3)
XD_2M     equ 0x800000              ; linear: BIG, execute-disable (directory entry 4)
NO_2M     equ 0xa00000              ; linear: directory entry 5 not present
HIGH      equ 0xffffffff80000000    ; linear: BIG again, writable (PML4 511, PDPT 510)
NO_PDPTE  equ 0xffffffffc0000000    ; linear: PDPT_HI's entry 511, not present
NO_PML4E  equ 0x0000008000000000    ; linear: PML4 entry 1, not present
PTE_P     equ 0x001                 ; present
PTE_PW    equ 0x003                 ; present, writable
PDE_2M    equ 0x083                 ; present, writable, 2 MiB page (PS)
PDE_BIT13 equ 0x2000                ; reserved in a 2 MiB directory entry
XD_HIGH   equ 0x80000000            ; bit 63 of an entry, in its high doubleword
MSR_EFER  equ 0xc0000080            ; the extended feature enable register
EFER_NXE  equ 0x800                 ; no-execute enable
CR0_WP    equ 0x10000               ; CPL 0 obeys read-only pages

start:
    lidt [idt_descriptor]       ; our IDT: vector 14 is the page-fault handler
    mov edi, PML4               ; clear the table pages
    xor eax, eax                ; with zeros
    mov ecx, 6 * 1024           ; 6 pages of 1024 doublewords
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov dword [PML4], PDPT | PTE_PW ; 0-512 GiB
    mov dword [PML4 + 511 * 8], PDPT_HI | PTE_PW ; the last 512 GiB
    mov dword [PDPT], PD | PTE_PW ; 0-1 GiB
    mov dword [PD], 0 | PDE_2M  ; 0-2 MiB: identity
    mov dword [PD + 1 * 8], BIG | PDE_2M & ~2 ; RO_2M: BIG, read-only
    mov dword [PD + 2 * 8], BIG | PDE_2M | PDE_BIT13 ; RSVD_2M: a reserved bit
    mov dword [PD + 3 * 8], PT | PTE_PW ; SMALL: 4 KiB pages
    mov dword [PD + 4 * 8], BIG | PDE_2M ; XD_2M: BIG,
    mov dword [PD + 4 * 8 + 4], XD_HIGH ; execute-disable
    mov dword [PT + 1 * 8], FRAME | PTE_PW ; SMALL + 0x1000: FRAME,
    mov dword [PT + 1 * 8 + 4], XD_HIGH ; execute-disable
    mov dword [PDPT_HI + 510 * 8], PD_HI | PTE_PW ; -2 GiB
    mov dword [PD_HI], BIG | PDE_2M ; HIGH: BIG, writable
    mov dword [BIG + 0x10], 0xb16b16 ; what BIG holds
    mov esi, bad_code           ; the code a fetch would find: report 0xbad
    mov edi, BIG                ; at the start of BIG
    mov ecx, bad_code_len       ; its length
    rep movsb                   ; copied
    mov esi, bad_code           ; the same code
    mov edi, FRAME              ; at the start of FRAME
    mov ecx, bad_code_len       ; its length
    rep movsb                   ; copied
    mov eax, PML4               ; the guest's own tables
    mov cr3, rax                ; into CR3: the code and stack stay identity-mapped
    mov rax, cr0                ; CR0
    or eax, CR0_WP              ; CR0.WP: read-only binds CPL 0 too
    mov cr0, rax                ; on

    mov rbx, HIGH               ; the high alias of BIG
    mov eax, [rbx + 0x10]       ; read through it
    out REPORT_PORT, eax        ; 0x00b16b16
    mov eax, [RO_2M + 0x10]     ; and through the read-only 2 MiB page
    out REPORT_PORT, eax        ; 0x00b16b16

    mov qword [resume], no_2m   ; after the fault, the next case
np_read:
    mov eax, [SMALL + 0x10]     ; #PF: CR2 0x600010, error 0x0: the page-table entry is missing
no_2m:
    mov qword [resume], no_pdpte ; after the fault, the next case
no_2m_read:
    mov eax, [NO_2M + 0x20]     ; #PF: CR2 0xa00020, error 0x0: the directory entry is missing
no_pdpte:
    mov qword [resume], no_pml4e ; after the fault, the next case
    mov rbx, NO_PDPTE + 0x30    ; an address above 4 GiB
    mov eax, [rbx]              ; #PF: CR2 0xffffffffc0000030, error 0x0: the PDPT entry is missing
no_pml4e:
    mov qword [resume], ro_2m   ; after the fault, the next case
    mov rbx, NO_PML4E + 0x40    ; at 512 GiB
    mov eax, [rbx]              ; #PF: CR2 0x8000000040, error 0x0: the PML4 entry is missing
ro_2m:
    mov qword [resume], rsvd_2m ; after the fault, the next case
ro_2m_write:
    mov dword [RO_2M + 0x50], 1 ; #PF: CR2 0x200050, error 0x3 (present, write)
rsvd_2m:
    mov qword [resume], nxe_on  ; after the fault, turn NXE on
rsvd_2m_read:
    mov eax, [RSVD_2M + 0x60]   ; #PF: CR2 0x400060, error 0x9, reported 0x8 (reserved bit)

nxe_on:
    mov ecx, MSR_EFER           ; EFER
    rdmsr                       ; edx:eax = EFER
    or eax, EFER_NXE            ; no-execute enable
    wrmsr                       ; EFER.NXE = 1: bit 63 means execute-disable now
    rdmsr                       ; read it back
    out REPORT_PORT, eax        ; 0xd00: NXE, LMA, LME
    mov rax, cr3                ; reload CR3, so that no translation made
    mov cr3, rax                ; while NXE was 0 stays cached
    mov qword [resume], xd_4k   ; after the fault, the next case
    mov ebx, XD_2M              ; BIG again, execute-disable
    jmp rbx                     ; #PF: CR2 = rip = 0x800000, error 0x11 (present, fetch)
xd_4k:
    mov qword [resume], done    ; after the fault, finish
    mov ebx, SMALL + 0x1000     ; FRAME, execute-disable
    jmp rbx                     ; #PF: CR2 = rip = 0x601000, error 0x11

done:
    mov eax, [BIG + 0x50]       ; the read-only page, through the identity map
    out REPORT_PORT, eax        ; 0: the faulting write did not happen
    hlt                         ; stop

; What a fetch from a page that must not execute would run. It uses no
; absolute address, so it runs wherever it is copied.
bad_code:
    mov eax, 0xbad              ; the fetch did not fault
    out REPORT_PORT, eax        ; say so
    hlt                         ; and stop
bad_code_len equ $ - bad_code

; The page-fault handler, vector 14. The CPU pushed ss, rsp, rflags, cs,
; rip and the error code.
page_fault:
    push rax                    ; keep rax: the error code is at [rsp + 8] now
    mov rax, cr2                ; the linear address that faulted
    out REPORT_PORT, eax        ; report its low half
    shr rax, 32                 ; and its high half
    out REPORT_PORT, eax        ; report it
    mov rax, [rsp + 8]          ; the error code
    test al, 0x8                ; a reserved-bit fault?
    jz .code                    ; no: report it as it is
    and al, ~0x1                ; yes: without its P bit (see above)
.code:
    out REPORT_PORT, eax        ; report it
    mov rax, [rsp + 16]         ; the saved rip: the faulting instruction
    out REPORT_PORT, eax        ; report its low half
    mov rax, [resume]           ; where the test goes on
    mov [rsp + 16], rax         ; replaces the saved rip
    pop rax                     ; rax back
    add rsp, 8                  ; drop the error code
    iretq                       ; return there

align 8
resume: dq 0                    ; where the handler goes on after a fault

align 16
idt:
    times 14 dq 0, 0            ; vectors 0-13: not present
    dw ABS(page_fault) & 0xffff ; vector 14: handler offset 15..0
    dw CODE64_SEL               ; the handler's code segment
    db 0                        ; no interrupt stack
    db 0x8e                     ; present, DPL 0, 64-bit interrupt gate
    dw ABS(page_fault) >> 16    ; handler offset 31..16
    dd 0                        ; handler offset 63..32
    dd 0                        ; reserved
idt_end:

idt_descriptor:
    dw idt_end - idt - 1        ; limit
    dq idt                      ; base
