; guest: pae
; stage: 8
; mode: prot32
; demonstrates: the guest turns on PAE paging: a 2 MiB page, an alias page, accessed and dirty bits
;
; PAE paging has three levels of 64-bit entries: CR3 points at four PDPT
; entries of 1 GiB each, each to a page directory of 512 entries of 2 MiB.
; A directory entry with PS set maps a whole 2 MiB page (the identity map
; here); otherwise it points to a page table of 512 entries of 4 KiB (the
; alias). PDPT entries have no writable or accessed bit: only present.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PDPT_ADDR equ SCRATCH_ADDR          ; the four PDPT entries
PD_ADDR   equ SCRATCH_ADDR + 0x1000 ; the directory of 0-1 GiB
PD2_ADDR  equ SCRATCH_ADDR + 0x2000 ; the directory of 1-2 GiB
PT2_ADDR  equ SCRATCH_ADDR + 0x3000 ; the page table of the alias
DATA_ADDR equ SCRATCH_ADDR + 0x4000 ; the page the alias maps to
ALIAS     equ 0x40000000            ; linear: PDPT 1, directory 0, table 0
PTE_PW    equ 0x003                 ; present, writable
PDE_2M    equ 0x083                 ; present, writable, 2 MiB page (PS)

start:
    mov edi, PDPT_ADDR          ; clear the four table pages
    xor eax, eax                ; with zeros
    mov ecx, 4 * 1024           ; 4 pages of 1024 doublewords
    cld                         ; upwards
    rep stosd                   ; no entry is present now

    mov dword [PDPT_ADDR], PD_ADDR | 1        ; 0-1 GiB: present only
    mov dword [PDPT_ADDR + 8], PD2_ADDR | 1   ; 1-2 GiB: present only
    mov dword [PD_ADDR], 0 | PDE_2M           ; 0-2 MiB: one large page, identity
    mov dword [PD2_ADDR], PT2_ADDR | PTE_PW   ; the alias's 2 MiB: a page table
    mov dword [PT2_ADDR], DATA_ADDR | PTE_PW  ; ALIAS -> DATA_ADDR

    mov eax, cr4                ; CR4
    or eax, 0x20                ; CR4.PAE
    mov cr4, eax                ; PAE on (paging still off)
    mov eax, PDPT_ADDR          ; the PDPT
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, 0x80000000          ; CR0.PG
    mov cr0, eax                ; paging on: loads the four PDPT entries

    mov dword [ALIAS + 0x10], 0xcafef00d ; write through the alias
    mov eax, [DATA_ADDR + 0x10] ; read through the identity map
    out REPORT_PORT, eax        ; 0xcafef00d
    mov dword [DATA_ADDR + 0x20], 0x600dd00d ; write through the identity map
    mov eax, [ALIAS + 0x20]     ; read through the alias
    out REPORT_PORT, eax        ; 0x600dd00d
    mov eax, [PT2_ADDR]         ; the alias's page-table entry
    out REPORT_PORT, eax        ; DATA_ADDR | 0x63: accessed and dirty
    mov eax, [PD2_ADDR]         ; the alias's directory entry
    out REPORT_PORT, eax        ; PT2_ADDR | 0x23: accessed
    mov eax, [PD_ADDR]          ; the large page's entry
    out REPORT_PORT, eax        ; 0xe3: accessed and dirty (the stores above)

    mov esi, done_text          ; say so, through translated addresses
    mov ecx, done_len           ; the length
    mov dx, CONSOLE_PORT        ; on the console
    rep outsb                   ; the message
    hlt                         ; stop

done_text:
    db "PAE paging works", 10
done_len equ $ - done_text
