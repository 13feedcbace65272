; guest: pf-codes
; stage: 8
; mode: prot32
; demonstrates: page faults in 32-bit paging reach the guest's #PF handler with the right CR2, error code and eip
;
; The handler (vector 14) reports three values for every fault: CR2, the
; error code and the saved eip. The error code's bits: 0x1 the page was
; present (a protection fault), 0x2 a write, 0x4 from CPL 3, 0x8 a reserved
; bit was set in an entry. The handler then goes on at the address the test
; left in `resume`, except once, when the test asks it to repair the
; page-table entry and return to the faulting instruction, as an operating
; system does for demand paging. The cases, all at CPL 0: a read and a
; write of a page whose page-table entry is not present, a read where the
; directory entry is not present, a read-only page read and then written
; with CR0.WP = 1 (a fault) and CR0.WP = 0 (no fault), the repaired fault,
; and a 4 MiB page whose directory entry has reserved bit 21 set.
;
; The SDM sets the P bit (0x1) in the error code of every reserved-bit
; fault ("bit 3 of the error code can be set only if bit 0 is also set"),
; and so does KVM's shadow paging; QEMU 7.2's emulated processor, on
; which the oracle runs its guests with nested paging, leaves it clear. So the handler reports a reserved-bit fault's code without P.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD_ADDR   equ SCRATCH_ADDR          ; the page directory
PT_ADDR   equ SCRATCH_ADDR + 0x1000 ; the identity page table of the first 4 MiB
TPT_ADDR  equ SCRATCH_ADDR + 0x2000 ; the page table of the test pages
RO_FRAME  equ SCRATCH_ADDR + 0x3000 ; the frame behind the read-only page
FIX_FRAME equ SCRATCH_ADDR + 0x4000 ; the frame the handler maps in
TEST_VA   equ 0x40000000            ; linear: the test pages (directory entry 256)
NP_PAGE   equ TEST_VA               ; not present
RO_PAGE   equ TEST_VA + 0x1000      ; present, read-only
FIX_PAGE  equ TEST_VA + 0x2000      ; not present until the handler maps it
NO_TABLE  equ 0x80000000            ; linear: its directory entry is not present
BAD_LARGE equ 0xc0000000            ; linear: a 4 MiB page with a reserved bit
PTE_P     equ 0x001                 ; present
PTE_PW    equ 0x003                 ; present, writable
PDE_4M    equ 0x083                 ; present, writable, 4 MiB page (PS)
PDE_BIT21 equ 0x200000              ; reserved in a 4 MiB directory entry
CR0_WP    equ 0x10000               ; supervisor writes obey read-only pages
CR0_PG    equ 0x80000000            ; paging
CR4_PSE   equ 0x10                  ; 4 MiB pages

start:
    lidt [idt_descriptor]       ; our IDT: vector 14 is the page-fault handler
    mov edi, PD_ADDR            ; clear the directory and both page tables
    xor eax, eax                ; with zeros
    mov ecx, 3 * 1024           ; 3 pages of 1024 entries
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov edi, PT_ADDR            ; the identity page table
    mov eax, PTE_PW             ; entry 0: frame 0, present, writable
    mov ecx, 1024               ; 1024 entries: 4 MiB
identity:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop identity               ; all of them
    mov dword [PD_ADDR], PT_ADDR | PTE_PW ; 0-4 MiB: identity
    mov dword [PD_ADDR + (TEST_VA >> 22) * 4], TPT_ADDR | PTE_PW ; the test pages
    mov dword [PD_ADDR + (BAD_LARGE >> 22) * 4], PDE_4M | PDE_BIT21 ; reserved bit 21
    mov dword [TPT_ADDR + 1 * 4], RO_FRAME | PTE_P ; RO_PAGE: present, read-only
    mov dword [RO_FRAME + 0x30], 0x11111111 ; what RO_PAGE holds
    mov eax, PD_ADDR            ; the page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; CR0.PG (CR0.WP is still 0)
    mov cr0, eax                ; paging on

    mov dword [resume], np_write ; after the first fault, go on with the write
np_read:
    mov eax, [NP_PAGE + 0x10]   ; #PF: CR2 0x40000010, error 0x0 (not present, read), eip np_read
np_write:
    mov dword [resume], no_table ; then with the missing directory entry
np_write_insn:
    mov dword [NP_PAGE + 0x20], 1 ; #PF: CR2 0x40000020, error 0x2 (not present, write)
no_table:
    mov dword [resume], ro_read ; then the read-only page
no_table_insn:
    mov eax, [NO_TABLE + 0x44]  ; #PF: CR2 0x80000044, error 0x0: no page table at all
ro_read:
    mov eax, [RO_PAGE + 0x30]   ; reading a read-only page is allowed
    out REPORT_PORT, eax        ; 0x11111111
    mov eax, cr0                ; CR0
    or eax, CR0_WP              ; CR0.WP = 1: read-only binds CPL 0 too
    mov cr0, eax                ; on
    mov dword [resume], wp_off  ; after the fault, turn WP off
wp_write:
    mov dword [RO_PAGE + 0x30], 0x22222222 ; #PF: CR2 0x40001030, error 0x3 (present, write)
wp_off:
    mov eax, [RO_FRAME + 0x30]  ; the frame, through the identity map
    out REPORT_PORT, eax        ; 0x11111111: the write did not happen
    mov eax, cr0                ; CR0
    and eax, ~CR0_WP            ; CR0.WP = 0: CPL 0 may write read-only pages
    mov cr0, eax                ; off
    mov dword [resume], fix     ; if this faulted, the trace would show it
    mov dword [RO_PAGE + 0x30], 0x33333333 ; no fault now
    mov eax, [RO_FRAME + 0x30]  ; the frame
    out REPORT_PORT, eax        ; 0x33333333: written
    mov eax, [TPT_ADDR + 1 * 4] ; RO_PAGE's page-table entry
    out REPORT_PORT, eax        ; 0x00013061: accessed and dirty, still read-only

fix:
    mov dword [fix_pte], TPT_ADDR + 2 * 4 ; the handler makes FIX_PAGE's entry
    mov dword [fix_value], FIX_FRAME | PTE_PW ; present, to FIX_FRAME, and returns
    mov dword [resume], bad_large ; should the write fault twice, go on anyway
fix_write:
    mov dword [FIX_PAGE + 0x40], 0x44444444 ; #PF: CR2 0x40002040, error 0x2; then done
    mov eax, [FIX_FRAME + 0x40] ; the new frame, through the identity map
    out REPORT_PORT, eax        ; 0x44444444: the repeated write went there
    mov eax, [TPT_ADDR + 2 * 4] ; FIX_PAGE's entry
    out REPORT_PORT, eax        ; 0x00014063: accessed and dirty

bad_large:
    mov eax, cr4                ; CR4
    or eax, CR4_PSE             ; CR4.PSE: directory entries with PS map 4 MiB
    mov cr4, eax                ; on
    mov eax, cr3                ; and reload CR3, so that no translation
    mov cr3, eax                ; made before PSE stays cached
    mov dword [resume], done    ; after the fault, finish
bad_large_read:
    mov eax, [BAD_LARGE + 0x123458] ; #PF: CR2 0xc0123458, error 0x9, reported 0x8 (reserved bit)

done:
    mov eax, 0x600d             ; every case done
    out REPORT_PORT, eax        ; 0x600d
    hlt                         ; stop

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
    mov eax, [fix_pte]          ; a page-table entry to repair, or 0
    test eax, eax               ; is there one?
    jz .go_on                   ; no: go on at `resume`
    push ebx                    ; keep ebx
    mov ebx, [fix_value]        ; the new entry
    mov [eax], ebx              ; written: the page is present now. No INVLPG:
    pop ebx                     ; a not-present entry is never cached (SDM 4.10.4.3)
    mov dword [fix_pte], 0      ; repair once only
    pop eax                     ; eax back
    add esp, 4                  ; drop the error code
    iretd                       ; and run the faulting instruction again
.go_on:
    mov eax, [resume]           ; where the test goes on
    mov [esp + 8], eax          ; replaces the saved eip
    pop eax                     ; eax back
    add esp, 4                  ; drop the error code
    iretd                       ; return there

resume:    dd 0                 ; where the handler goes on after a fault
fix_pte:   dd 0                 ; the entry the handler repairs, or 0
fix_value: dd 0                 ; and what it writes there

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
