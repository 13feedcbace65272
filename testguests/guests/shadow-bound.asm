; guest: shadow-bound
; stage: 8
; mode: prot32
; demonstrates: a guest that maps more than the shadow's bound of pages still runs: 1,023 aliases of one page, each in its own 4 MiB
;
; 32-bit paging. The first page-directory entry maps the first 4 MiB to
; themselves; each of the other 1,023 points to one shared page table whose
; only entry maps the same physical page DATA. So linear i * 4 MiB is DATA
; for every i from 1 to 1023. A shadow MMU needs a page table of its own for
; every 4 MiB the guest touches: far more than a bound of a few hundred
; shadow pages, which must recycle old ones and go on. The guest writes i
; through alias i, sums DATA through the identity map, then reads every
; alias again (after the recycling) and sums what it reads.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD_ADDR   equ SCRATCH_ADDR          ; the page directory
PT_ADDR   equ SCRATCH_ADDR + 0x1000 ; the identity page table of 0-4 MiB
PT2_ADDR  equ SCRATCH_ADDR + 0x2000 ; the shared page table of the aliases
DATA_ADDR equ SCRATCH_ADDR + 0x3000 ; the page every alias maps
PTE_PW    equ 0x003                 ; present, writable
ALIASES   equ 1023                  ; aliases 1 to 1023

start:
    mov edi, PD_ADDR            ; clear the tables and the data page
    xor eax, eax                ; with zeros
    mov ecx, 4 * 1024           ; 4 pages of 1024 doublewords
    cld                         ; upwards
    rep stosd                   ; nothing is mapped now

    mov edi, PT_ADDR            ; the identity page table
    mov eax, PTE_PW             ; frame 0, present, writable
    mov ecx, 1024               ; 4 MiB of frames
identity:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop identity               ; all of them
    mov dword [PD_ADDR], PT_ADDR | PTE_PW ; 0-4 MiB: identity

    mov dword [PT2_ADDR], DATA_ADDR | PTE_PW ; the shared table maps DATA
    mov edi, PD_ADDR + 4        ; directory entries 1 to 1023
    mov eax, PT2_ADDR | PTE_PW  ; all point to the shared table
    mov ecx, ALIASES            ; 1023 of them
    rep stosd                   ; fill them

    mov eax, PD_ADDR            ; the page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, 0x80000000          ; CR0.PG
    mov cr0, eax                ; paging on

    mov ecx, 1                  ; alias 1 first
write_aliases:
    mov ebx, ecx                ; i
    shl ebx, 22                 ; linear i * 4 MiB: DATA
    mov [ebx + ecx * 4], ecx    ; DATA[i] = i, through alias i
    inc ecx                     ; the next alias
    cmp ecx, ALIASES            ; up to 1023
    jbe write_aliases           ; all of them

    xor eax, eax                ; sum DATA[1..1023] through the identity map
    mov ecx, 1                  ; from 1
sum_identity:
    add eax, [DATA_ADDR + ecx * 4] ; DATA[i]
    inc ecx                     ; the next
    cmp ecx, ALIASES            ; up to 1023
    jbe sum_identity            ; all of them
    out REPORT_PORT, eax        ; 1023 * 1024 / 2 = 0x7fe00

    xor eax, eax                ; and again, each through its own alias
    mov ecx, 1                  ; from 1
sum_aliases:
    mov ebx, ecx                ; i
    shl ebx, 22                 ; alias i
    add eax, [ebx + ecx * 4]    ; DATA[i], through alias i
    inc ecx                     ; the next
    cmp ecx, ALIASES            ; up to 1023
    jbe sum_aliases             ; all of them
    out REPORT_PORT, eax        ; 0x7fe00 again
    hlt                         ; stop
