; guest: paging32
; stage: 8
; mode: prot32
; demonstrates: the guest turns on 32-bit paging: identity map, an alias page, accessed and dirty bits
;
; Two-level paging: CR3 points at a page directory of 1024 entries, each
; covering 4 MiB through a page table of 1024 entries of 4 KiB. The first
; 4 MiB are mapped to themselves; linear ALIAS maps to the physical page
; DATA_ADDR. Writes through one address must be visible through the other,
; and the CPU (or the shadow MMU) must set the accessed and dirty bits.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD_ADDR   equ SCRATCH_ADDR          ; the page directory
PT_ADDR   equ SCRATCH_ADDR + 0x1000 ; the page table of the first 4 MiB
PT2_ADDR  equ SCRATCH_ADDR + 0x2000 ; the page table of the alias
DATA_ADDR equ SCRATCH_ADDR + 0x3000 ; the page the alias maps to
ALIAS     equ 0x40000000            ; linear; far above guest memory
PTE_PW    equ 0x003                 ; present, writable

start:
    mov edi, PD_ADDR            ; clear the three table pages
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

    mov dword [PD_ADDR], PT_ADDR | PTE_PW                  ; 0-4 MiB: identity
    mov dword [PD_ADDR + (ALIAS >> 22) * 4], PT2_ADDR | PTE_PW ; the alias's 4 MiB
    mov dword [PT2_ADDR], DATA_ADDR | PTE_PW               ; ALIAS -> DATA_ADDR

    mov eax, PD_ADDR            ; the page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, 0x80000000          ; CR0.PG
    mov cr0, eax                ; paging on: the next fetch is translated

    mov dword [ALIAS + 0x10], 0xcafef00d ; write through the alias
    mov eax, [DATA_ADDR + 0x10] ; read through the identity map
    out REPORT_PORT, eax        ; 0xcafef00d
    mov dword [DATA_ADDR + 0x20], 0x600dd00d ; write through the identity map
    mov eax, [ALIAS + 0x20]     ; read through the alias
    out REPORT_PORT, eax        ; 0x600dd00d
    mov eax, [PT2_ADDR]         ; the alias's page-table entry
    out REPORT_PORT, eax        ; DATA_ADDR | 0x63: accessed and dirty set
    mov eax, [PD_ADDR + (ALIAS >> 22) * 4] ; the alias's directory entry
    out REPORT_PORT, eax        ; PT2_ADDR | 0x23: accessed set

    mov esi, done_text          ; say so, through translated addresses
    mov ecx, done_len           ; the length
    mov dx, CONSOLE_PORT        ; on the console
    rep outsb                   ; the message
    hlt                         ; stop

done_text:
    db "32-bit paging works", 10
done_len equ $ - done_text
