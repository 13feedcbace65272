; guest: cr3-switch
; stage: 8
; mode: prot32
; memory: 0x800000
; demonstrates: four address spaces map one linear page to four frames; mov cr3 switches between them round robin
;
; Each address space is a page directory of its own. All four share the
; identity page table of the first 4 MiB (where the code, the stack and
; the tables are) and a page table that maps SHARED to one frame; each maps
; PRIVATE to a frame of its own, space 2 through a 4 MiB page, the others
; through a page table of their own. Each frame starts with its space's
; number; the guest visits the spaces three times in turn, and in each it
; reports what PRIVATE holds, counts its visit there and in SHARED. A
; shadow MMU keeps a shadow table per guest table, and must switch to the
; right ones at every mov cr3.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PDS     equ SCRATCH_ADDR            ; the four page directories, one page each
PT_ID   equ SCRATCH_ADDR + 0x4000   ; the shared identity page table of the first 4 MiB
PT_SH   equ SCRATCH_ADDR + 0x5000   ; the shared page table of SHARED
PTS     equ SCRATCH_ADDR + 0x6000   ; the private page tables of spaces 0, 1 and 3 (one page each)
FRAMES  equ SCRATCH_ADDR + 0xa000   ; the frames of spaces 0, 1 and 3 (one page each)
F_SH    equ SCRATCH_ADDR + 0xe000   ; SHARED's frame
BIG     equ 0x400000                ; the 4 MiB frame of space 2
PRIVATE equ 0x40000000              ; linear: a frame per address space (directory entry 256)
SHARED  equ 0x40400000              ; linear: one frame for all (directory entry 257)
PTE_PW  equ 0x003                   ; present, writable
PDE_BIG equ 0x083                   ; present, writable, 4 MiB page (PS)
CR0_PG  equ 0x80000000              ; paging
CR4_PSE equ 0x10                    ; 4 MiB pages

start:
    mov edi, PDS                ; clear every table page and frame
    xor eax, eax                ; with zeros
    mov ecx, 15 * 1024          ; 15 pages of 1024 entries
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov edi, PT_ID              ; the identity page table
    mov eax, PTE_PW             ; entry 0: frame 0, present, writable
    mov ecx, 1024               ; 1024 entries: 4 MiB
identity:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop identity               ; all of them
    mov dword [PT_SH], F_SH | PTE_PW ; SHARED's page

    xor ecx, ecx                ; space 0, 1, 2, 3
spaces:
    mov ebx, ecx                ; the space's number
    shl ebx, 12                 ; times a page
    mov dword [PDS + ebx], PT_ID | PTE_PW ; 0-4 MiB: the shared identity table
    mov dword [PDS + ebx + 4], BIG | PDE_BIG ; 4-8 MiB: identity, one 4 MiB page
    mov dword [PDS + ebx + (SHARED >> 22) * 4], PT_SH | PTE_PW ; SHARED: the shared table
    mov dword [PDS + ebx + (PRIVATE >> 22) * 4], PTS | PTE_PW ; PRIVATE: the space's own table
    add dword [PDS + ebx + (PRIVATE >> 22) * 4], ebx ; (PTS + space * 0x1000)
    mov dword [PTS + ebx], FRAMES | PTE_PW ; which maps the space's own frame
    add dword [PTS + ebx], ebx  ; (FRAMES + space * 0x1000)
    mov [FRAMES + ebx], ecx     ; whose first word is the space's number
    inc ecx                     ; the next space
    cmp ecx, 4                  ; four of them
    jne spaces                  ; all
    mov dword [PDS + 2 * 0x1000 + (PRIVATE >> 22) * 4], BIG | PDE_BIG ; space 2: a 4 MiB page
    mov dword [BIG], 2          ; whose first word is 2
    mov dword [FRAMES + 2 * 0x1000], 0 ; (and space 2's unused frame holds 0)

    mov eax, cr4                ; CR4
    or eax, CR4_PSE             ; CR4.PSE
    mov cr4, eax                ; 4 MiB pages on
    mov eax, PDS                ; space 0's page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; CR0.PG
    mov cr0, eax                ; paging on

    mov edx, 3                  ; three rounds
round:
    mov esi, PDS                ; from space 0
visit:
    mov cr3, esi                ; switch to the space
    mov eax, [PRIVATE]          ; its frame's number
    shl eax, 16                 ; in the upper half of the report
    inc dword [PRIVATE + 4]     ; one more visit to this space
    or eax, [PRIVATE + 4]       ; the visits so far in the lower half
    out REPORT_PORT, eax        ; 0x00S0000N: space S, visit N
    inc dword [SHARED]          ; one more visit to any space
    add esi, 0x1000             ; the next space's directory
    cmp esi, PDS + 4 * 0x1000   ; after space 3
    jne visit                   ; space 0 again
    dec edx                     ; one round done
    jnz round                   ; three rounds

    mov eax, [SHARED]           ; visits, counted in the shared frame
    out REPORT_PORT, eax        ; 12
    mov eax, [F_SH]             ; the same, through the identity map
    out REPORT_PORT, eax        ; 12
    mov eax, [BIG + 4]          ; space 2's visits, through the identity map
    out REPORT_PORT, eax        ; 3
    mov eax, [FRAMES + 3 * 0x1000 + 4] ; space 3's
    out REPORT_PORT, eax        ; 3
    mov eax, [FRAMES + 2 * 0x1000 + 4] ; space 2's unused frame
    out REPORT_PORT, eax        ; 0
    hlt                         ; stop
