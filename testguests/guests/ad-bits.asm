; guest: ad-bits
; stage: 8
; mode: prot32
; memory: 0x800000
; demonstrates: accessed and dirty bits in 32-bit and PAE entries: reads, writes, fetches, 4 KiB and large pages, bits cleared and set again
;
; The processor sets the accessed bit (0x20) of every entry it uses to
; translate an address, and the dirty bit (0x40) of the entry that maps the
; page when it writes to it: of the page-table entry, or of the directory
; entry of a 4 MiB or 2 MiB page. A directory entry that points to a page
; table gets only the accessed bit. Under shadow paging the hypervisor must
; do all of this itself, and set the dirty bit only when the guest writes.
;
; The same routine, `exercise`, runs twice over five 4 KiB test pages and
; one large page at the same linear addresses: first under 32-bit paging
; with a 4 MiB page, then, after the guest switches to PAE paging, with a
; 2 MiB page. Page 0 is read, page 1 written, page 2 read (the trace shows
; its entry accessed but not dirty) and then written (now dirty), page 3 is
; fetched from (it holds a `ret`) and page 4 is never touched. The large
; page is read deep inside, then written. Then the guest clears the bits in
; two entries, invalidates the pages with INVLPG, and touches them again:
; the bits must come back.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD32     equ SCRATCH_ADDR           ; 32-bit paging: the page directory
PT32     equ SCRATCH_ADDR + 0x1000  ; its identity page table of the first 4 MiB
TPT32    equ SCRATCH_ADDR + 0x2000  ; its page table of the test pages
PDPT     equ SCRATCH_ADDR + 0x3000  ; PAE paging: the four PDPT entries
PD0      equ SCRATCH_ADDR + 0x4000  ; its directory of 0-1 GiB
PD1      equ SCRATCH_ADDR + 0x5000  ; its directory of 1-2 GiB
TPTP     equ SCRATCH_ADDR + 0x6000  ; its page table of the test pages
FRAMES   equ SCRATCH_ADDR + 0x7000  ; the frames of the five test pages, one after another
TEST_VA  equ 0x40000000             ; linear: test page i is at TEST_VA + i * 0x1000
LARGE    equ 0x40400000             ; linear: the large page
LARGE_PA equ 0x400000               ; physical: what it maps
DEEP     equ 0x1ff010               ; an offset deep inside it (inside 2 MiB too)
PTE_PW   equ 0x003                  ; present, writable
PDE_BIG  equ 0x083                  ; present, writable, large page (PS)
AD       equ 0x060                  ; the accessed and dirty bits
CR0_PG   equ 0x80000000             ; paging
CR4_PSE  equ 0x10                   ; 4 MiB pages in 32-bit paging
CR4_PAE  equ 0x20                   ; PAE paging

start:
    mov edi, PD32               ; clear the seven table pages
    xor eax, eax                ; with zeros
    mov ecx, 7 * 1024           ; 7 pages of 1024 doublewords
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov byte [FRAMES + 3 * 0x1000], 0xc3 ; test page 3 holds a `ret`

    mov edi, PT32               ; 32-bit paging: the identity page table
    mov eax, PTE_PW             ; entry 0: frame 0, present, writable
    mov ecx, 1024               ; 1024 entries: 4 MiB
identity:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop identity               ; all of them
    mov edi, TPT32              ; the test pages' table
    mov eax, FRAMES | PTE_PW    ; page 0 to the first frame
    mov ecx, 5                  ; five pages
test_pages32:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop test_pages32           ; all five
    mov dword [PD32], PT32 | PTE_PW ; 0-4 MiB: identity
    mov dword [PD32 + (TEST_VA >> 22) * 4], TPT32 | PTE_PW ; the test pages
    mov dword [PD32 + (LARGE >> 22) * 4], LARGE_PA | PDE_BIG ; a 4 MiB page

    mov eax, cr4                ; CR4
    or eax, CR4_PSE             ; CR4.PSE
    mov cr4, eax                ; 4 MiB pages on
    mov eax, PD32               ; the page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; CR0.PG
    mov cr0, eax                ; 32-bit paging on
    mov esi, entries32          ; where the entries are
    call exercise               ; the accesses and the reports

    mov edi, TPTP               ; PAE paging: the test pages' table
    mov eax, FRAMES | PTE_PW    ; page 0 to the first frame
    mov ecx, 5                  ; five pages
test_pages_pae:
    stosd                       ; the entry's low half
    add edi, 4                  ; its high half stays 0
    add eax, 0x1000             ; the next frame
    loop test_pages_pae         ; all five
    mov dword [PDPT], PD0 | 1   ; 0-1 GiB: present only
    mov dword [PDPT + 8], PD1 | 1 ; 1-2 GiB: present only
    mov dword [PD0], 0 | PDE_BIG ; 0-2 MiB: identity, one 2 MiB page
    mov dword [PD1], TPTP | PTE_PW ; the test pages
    mov dword [PD1 + ((LARGE >> 21) & 511) * 8], LARGE_PA | PDE_BIG ; a 2 MiB page

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
    mov esi, entries_pae        ; where the entries are now
    call exercise               ; the same accesses and reports
    hlt                         ; stop

; The accesses and the reports. esi points to the addresses of the
; entries of the five test pages, of the directory entry of their page
; table and of the large page's directory entry. Only the low doubleword
; of an entry is reported: the bits are there.
exercise:
    mov eax, [TEST_VA + 0 * 0x1000 + 0x10] ; read page 0
    mov [TEST_VA + 1 * 0x1000 + 0x10], eax ; write page 1
    mov eax, [TEST_VA + 2 * 0x1000 + 0x10] ; read page 2
    mov ebx, [esi + 2 * 4]      ; page 2's entry
    mov eax, [ebx]              ; after the read
    out REPORT_PORT, eax        ; frame 2 | 0x23: accessed, not dirty
    mov dword [TEST_VA + 2 * 0x1000 + 0x10], 2 ; now write page 2
    mov eax, [ebx]              ; its entry again
    out REPORT_PORT, eax        ; frame 2 | 0x63: dirty too
    call TEST_VA + 3 * 0x1000   ; fetch from page 3: its `ret`
    mov eax, [LARGE + DEEP]     ; read the large page, deep inside
    mov ebx, [esi + 6 * 4]      ; its directory entry
    mov eax, [ebx]              ; after the read
    out REPORT_PORT, eax        ; 0x004000a3: accessed, not dirty
    mov dword [LARGE + DEEP], 6 ; write it
    mov eax, [ebx]              ; its directory entry again
    out REPORT_PORT, eax        ; 0x004000e3: dirty too

    xor ecx, ecx                ; now every entry, in order
.report:
    mov ebx, [esi + ecx * 4]    ; the entry's address
    mov eax, [ebx]              ; the entry
    out REPORT_PORT, eax        ; pages 0-4: 0x23, 0x63, 0x63, 0x23, 0x03; table 0x23; large 0xe3
    inc ecx                     ; the next
    cmp ecx, 7                  ; seven of them
    jne .report                 ; all

    mov ebx, [esi + 1 * 4]      ; page 1's entry
    and dword [ebx], ~AD        ; accessed and dirty cleared
    invlpg [TEST_VA + 1 * 0x1000] ; and the page's translation invalidated
    mov eax, [ebx]              ; the entry now
    out REPORT_PORT, eax        ; frame 1 | 0x03
    mov eax, [TEST_VA + 1 * 0x1000 + 0x10] ; read page 1
    mov eax, [ebx]              ; its entry
    out REPORT_PORT, eax        ; frame 1 | 0x23: accessed again, not dirty
    mov [TEST_VA + 1 * 0x1000 + 0x14], eax ; write page 1
    mov eax, [ebx]              ; its entry
    out REPORT_PORT, eax        ; frame 1 | 0x63: dirty again
    mov ebx, [esi + 6 * 4]      ; the large page's directory entry
    and dword [ebx], ~AD        ; accessed and dirty cleared
    invlpg [LARGE]              ; any address in the page invalidates all of it
    mov dword [LARGE + DEEP + 4], 7 ; write it, without reading first
    mov eax, [ebx]              ; its directory entry
    out REPORT_PORT, eax        ; 0x004000e3: accessed and dirty again
    ret                         ; done

entries32:
    dd TPT32 + 0 * 4            ; test page 0's entry
    dd TPT32 + 1 * 4            ; test page 1's
    dd TPT32 + 2 * 4            ; test page 2's
    dd TPT32 + 3 * 4            ; test page 3's
    dd TPT32 + 4 * 4            ; test page 4's
    dd PD32 + (TEST_VA >> 22) * 4 ; the directory entry of their page table
    dd PD32 + (LARGE >> 22) * 4 ; the 4 MiB page's directory entry
entries_pae:
    dd TPTP + 0 * 8             ; test page 0's entry
    dd TPTP + 1 * 8             ; test page 1's
    dd TPTP + 2 * 8             ; test page 2's
    dd TPTP + 3 * 8             ; test page 3's
    dd TPTP + 4 * 8             ; test page 4's
    dd PD1                      ; the directory entry of their page table
    dd PD1 + ((LARGE >> 21) & 511) * 8 ; the 2 MiB page's directory entry
