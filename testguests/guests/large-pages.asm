; guest: large-pages
; stage: 8
; mode: prot32
; memory: 0x1000000
; demonstrates: 4 MiB pages (CR4.PSE) in 32-bit paging and 2 MiB pages in PAE paging: aliases, deep offsets, reads across two large pages
;
; A directory entry with PS set maps a whole large page: 4 MiB in 32-bit
; paging (only when CR4.PSE = 1; with CR4.PSE = 0 the PS bit is ignored and
; the entry points to a page table), 2 MiB in PAE paging. A shadow MMU may
; build the large page out of 4 KiB pieces, and must then get every offset
; inside it right. The guest has 16 MiB of memory; the physical large pages
; at 4 MiB and 8 MiB are mapped in swapped order at 1 GiB, so that a read
; across their boundary gets its bytes from two distant frames. Every
; value is written through one mapping and read through another.
;
; The entry read with CR4.PSE = 0 is not used again once PSE is on: Linux's
; KVM with shadow paging (kvm_amd npt=0, Linux 6.1) goes on translating the
; pages it had mapped through that entry's page table even after CR4.PSE is
; set and CR3 reloaded, where the processor must walk again and find the
; 4 MiB page; the oracle cannot judge such a read.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD32    equ SCRATCH_ADDR            ; 32-bit paging: the page directory
PT32    equ SCRATCH_ADDR + 0x1000   ; its identity page table of the first 4 MiB
PDPT    equ SCRATCH_ADDR + 0x2000   ; PAE paging: the four PDPT entries
PD0     equ SCRATCH_ADDR + 0x3000   ; its directory of 0-1 GiB
PD1     equ SCRATCH_ADDR + 0x4000   ; its directory of 1-2 GiB
PTP     equ SCRATCH_ADDR + 0x5000   ; its one page table of 4 KiB pages
A_FRAME equ SCRATCH_ADDR + 0x6000   ; a frame the ignored-PS entry leads to
IGNORED equ 0xc0000000              ; linear: directory entry 768, PS set while CR4.PSE = 0
BIG1    equ 0x400000                ; physical: the 4 MiB frame at 4 MiB
BIG2    equ 0x800000                ; physical: the 4 MiB frame at 8 MiB
TEST_VA equ 0x40000000              ; linear: directory entry 256 (32-bit), PDPT entry 1 (PAE)
CR0_PG  equ 0x80000000              ; paging
CR4_PSE equ 0x10                    ; 4 MiB pages in 32-bit paging
CR4_PAE equ 0x20                    ; PAE paging
PTE_PW  equ 0x003                   ; present, writable
PDE_BIG equ 0x083                   ; present, writable, large page (PS)

start:
    mov edi, PD32               ; clear the six table pages
    xor eax, eax                ; with zeros
    mov ecx, 6 * 1024           ; 6 pages of 1024 doublewords
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov edi, PT32               ; the identity page table
    mov eax, PTE_PW             ; entry 0: frame 0, present, writable
    mov ecx, 1024               ; 1024 entries: 4 MiB
identity:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop identity               ; all of them
    mov dword [PD32], PT32 | PTE_PW ; 0-4 MiB: identity, 4 KiB pages
    mov dword [PD32 + (IGNORED >> 22) * 4], BIG1 | PDE_BIG ; PS set, but CR4.PSE is 0:
    mov dword [BIG1], A_FRAME | PTE_PW ; BIG1 is read as a page table, whose entry 0
    mov dword [A_FRAME + 0x10], 0xaaaa0010 ; maps A_FRAME

    mov eax, PD32               ; the page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; CR0.PG
    mov cr0, eax                ; 32-bit paging on, CR4.PSE = 0
    mov eax, [IGNORED + 0x10]   ; through the page table at BIG1
    out REPORT_PORT, eax        ; 0xaaaa0010: A_FRAME's word

    mov eax, cr4                ; CR4
    or eax, CR4_PSE             ; CR4.PSE
    mov cr4, eax                ; 4 MiB pages on
    mov eax, cr3                ; and reload CR3, so that no translation
    mov cr3, eax                ; made before PSE stays cached
    mov dword [PD32 + 1 * 4], BIG1 | PDE_BIG ; 4-8 MiB: identity, one 4 MiB page
    mov dword [PD32 + 2 * 4], BIG2 | PDE_BIG ; 8-12 MiB: identity, one 4 MiB page
    mov dword [PD32 + 256 * 4], BIG1 | PDE_BIG ; 1 GiB: an alias of BIG1,
    mov dword [PD32 + 257 * 4], BIG2 | PDE_BIG ; 1 GiB + 4 MiB: one of BIG2,
    mov dword [PD32 + 258 * 4], BIG1 | PDE_BIG ; 1 GiB + 8 MiB: and BIG1 again after it
    mov eax, [BIG1]             ; BIG1's first word, through the identity map: the entry
    out REPORT_PORT, eax        ; 0x00016023 that mapped A_FRAME, marked accessed
    mov eax, [PD32 + (IGNORED >> 22) * 4] ; and the directory entry that led to it
    out REPORT_PORT, eax        ; 0x004000a3: accessed
    mov dword [BIG1 + 0x123454], 0x12345454 ; deep inside BIG1, through the identity map
    mov eax, [TEST_VA + 0x123454] ; through the entry of 1 GiB
    out REPORT_PORT, eax        ; 0x12345454
    mov eax, [TEST_VA + 0x800000 + 0x123454] ; through the entry of 1 GiB + 8 MiB
    out REPORT_PORT, eax        ; 0x12345454
    mov dword [TEST_VA + 0x400000 + 0x3ffff8], 0x3ffff8f8 ; near the end of BIG2, through the alias
    mov eax, [BIG2 + 0x3ffff8]  ; through the identity map
    out REPORT_PORT, eax        ; 0x3ffff8f8
    mov word [BIG2 + 0x3ffffe], 0x2211 ; the last two bytes of BIG2
    mov word [BIG1], 0x4433     ; the first two bytes of BIG1
    mov eax, [TEST_VA + 0x800000 - 2] ; across the two aliases: two bytes of each
    out REPORT_PORT, eax        ; 0x44332211

    mov dword [PDPT], PD0 | 1   ; PAE paging: 0-1 GiB present only
    mov dword [PDPT + 8], PD1 | 1 ; 1-2 GiB present only
    mov dword [PD0], 0 | PDE_BIG ; 0-2 MiB: identity, one 2 MiB page
    mov dword [PD0 + 2 * 8], BIG1 | PDE_BIG ; 4-6 MiB: identity
    mov dword [PD0 + 3 * 8], BIG1 + 0x200000 | PDE_BIG ; 6-8 MiB: identity
    mov dword [PD1], BIG1 + 0x200000 | PDE_BIG ; 1 GiB: the 2 MiB at 6 MiB,
    mov dword [PD1 + 1 * 8], BIG1 | PDE_BIG ; then the 2 MiB at 4 MiB
    mov dword [PD1 + 2 * 8], PTP | PTE_PW ; 1 GiB + 4 MiB: a page table,
    mov dword [PTP + 5 * 8], BIG1 + 0x205000 | PTE_PW ; whose entry 5 is a 4 KiB piece of the first
    mov eax, cr0                ; CR0
    and eax, ~CR0_PG            ; CR0.PG = 0
    mov cr0, eax                ; paging off (the code is identity-mapped)
    mov eax, cr4                ; CR4
    or eax, CR4_PAE             ; CR4.PAE (only with paging off)
    mov cr4, eax                ; PAE on
    mov eax, PDPT               ; the PDPT
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; CR0.PG
    mov cr0, eax                ; PAE paging on

    mov dword [BIG1 + 0x200000 + 0x1abcd0], 0x1abcd0d0 ; deep inside the 2 MiB at 6 MiB
    mov eax, [TEST_VA + 0x1abcd0] ; through its alias
    out REPORT_PORT, eax        ; 0x1abcd0d0
    mov dword [TEST_VA + 0x5010], 0x50105010 ; through the 2 MiB alias, 0x5010 in
    mov eax, [TEST_VA + 0x400000 + 0x5010] ; through the 4 KiB alias of that piece
    out REPORT_PORT, eax        ; 0x50105010
    mov eax, [BIG1 + 0x205010]  ; through the identity map
    out REPORT_PORT, eax        ; 0x50105010
    mov word [BIG1 + 0x200000 + 0x1ffffe], 0x6655 ; the last two bytes of 6-8 MiB
    mov word [BIG1], 0x8877     ; the first two bytes of 4-6 MiB
    mov eax, [TEST_VA + 0x200000 - 2] ; across the two 2 MiB aliases
    out REPORT_PORT, eax        ; 0x88776655
    mov eax, [TEST_VA + 0x200000 + 0x123454] ; the value 32-bit paging left deep in BIG1
    out REPORT_PORT, eax        ; 0x12345454
    hlt                         ; stop
