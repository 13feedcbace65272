; guest: dirty-rounds
; stage: 11
; mode: prot32
; dirty-log: yes
; demonstrates: which pages the dirty log reports, round by round: written pages once per round, pages made writable, the guest's page tables when their accessed and dirty bits change
;
; Each `out` to DIRTY_PORT ends a round: the runner reads the log into the
; trace (`dirty ...`, the frames written since the last read) and the log
; starts afresh. A round writes a known set of pages, with paging off and
; then on. Reading the log write-protects again every page it named, so a
; page written in two rounds is reported in both, and a page that is only
; read after its round is not reported again. What each round should
; report is said before it; Linux's KVM, with and without nested paging,
; gives the same rounds.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD_ADDR  equ SCRATCH_ADDR           ; frame 0x10: the page directory
PT_ADDR  equ SCRATCH_ADDR + 0x1000  ; frame 0x11: the page table of the first 4 MiB
PTE_P    equ 0x001                  ; present
PTE_PW   equ 0x003                  ; present, writable
PTE_A    equ 0x020                  ; accessed
PTE_D    equ 0x040                  ; dirty
CR0_PG   equ 0x80000000             ; paging

%macro round 0
    out DIRTY_PORT, al          ; the runner reads and clears the log
%endmacro

%macro touch_tables 0
    add dword [PD_ADDR + 0xffc], 2 ; the last entries: bit 0 stays clear,
    add dword [PT_ADDR + 0xffc], 2 ; so they stay not present
%endmacro

start:
    ; Round 0: only the code page has been reached: frame 8.
    round

    ; Round 1: three pages written: 0x20-0x22.
    mov dword [0x20000], 1
    mov dword [0x21000], 2
    mov dword [0x22000], 3
    round

    ; Round 2: 0x21 written again, 0x20 and 0x22 only read: 0x21.
    mov eax, [0x20000]
    mov eax, [0x22000]
    mov dword [0x21004], 4
    round

    ; Round 3: a string store over four pages: 0x40-0x43.
    mov edi, 0x40000            ; four pages
    mov ecx, 0x1000             ; of doublewords
    mov eax, 0x5a5a5a5a         ; a pattern
    cld                         ; upwards
    rep stosd                   ; 16 KiB
    round

    ; Round 4: the stack (esp starts at 0x7000): frame 6.
    call touch_stack
    round

    ; Round 5: nothing written: none.
    mov eax, [0x40000]
    round

    ; Round 6: a doubleword across a page boundary: 0x24 and 0x25.
    mov dword [0x24ffe], 0x11223344
    round

    ; Round 7: the guest builds page tables and turns paging on: the
    ; directory and the table, 0x10-0x11 (the walks that follow set their
    ; accessed bits too).
    mov edi, PD_ADDR            ; clear the directory and the table
    xor eax, eax
    mov ecx, 0x800
    rep stosd
    mov dword [PD_ADDR], PT_ADDR | PTE_PW ; the directory's first entry
    mov edi, PT_ADDR            ; identity-map the first 4 MiB,
    mov eax, PTE_PW             ; present and writable, accessed and dirty
    mov ecx, 1024               ; clear: the walk sets them
fill:
    stosd
    add eax, 0x1000
    loop fill
    mov eax, PD_ADDR
    mov cr3, eax
    mov eax, cr0
    or eax, CR0_PG
    mov cr0, eax                ; paging on
    jmp paged
paged:
    round

    ; From here on each round first writes an unused (not present) entry
    ; of the directory and of the table, so both are dirty in every round
    ; however the walks go: a processor with nested paging may treat its
    ; own reads of a guest table as writes, a shadow MMU writes a table
    ; only to set a bit that was clear.

    ; Round 8: a page written through a clean entry: 0x10-0x11 and 0x50.
    touch_tables
    mov dword [0x50000], 5
    round

    ; Round 9: a page written before paging, now only read through a
    ; clean entry: not dirty, 0x10-0x11.
    touch_tables
    mov eax, [0x20000]
    round

    ; Round 10: the guest points linear 0x60000 at frame 0x61 and writes
    ; it: 0x10-0x11 and 0x61.
    touch_tables
    mov dword [PT_ADDR + 0x60 * 4], 0x61000 | PTE_PW
    invlpg [0x60000]
    mov dword [0x60000], 6
    round

    ; Round 11: the tables only: 0x10-0x11.
    touch_tables
    round

    ; Round 12: 0x50 again, its entry already dirty: 0x10-0x11 and 0x50.
    touch_tables
    mov dword [0x50004], 7
    round

    mov al, 0
    out EXIT_PORT, al           ; done

touch_stack:
    push eax                    ; a write to the stack page
    pop eax
    ret
