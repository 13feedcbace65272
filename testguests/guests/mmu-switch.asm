; guest: mmu-switch
; stage: 9
; mode: prot32
; demonstrates: eight address spaces switched round robin by `mov cr3`, 50 rounds, eight pages touched in each: the shadow cache's benchmark
;
; 32-bit paging. Each address space has its own page directory: entry 0
; maps the first 4 MiB to themselves through one page table they all
; share (the code, the stack and the tables), and entry 0x100 maps linear
; 0x40000000 through a page table of its own, whose first eight entries
; map eight frames of its own. Each visit loads the space's CR3, adds one
; to each of its eight pages and sums them. A naive shadow MMU throws its
; shadow pages away at every `mov cr3` and faults them in again; a cache
; keeps them, and after the first round only the `mov cr3`s exit.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

SPACES    equ 8
ROUNDS    equ 50
PAGES     equ 8
PD_BASE   equ SCRATCH_ADDR          ; directory i at PD_BASE + i * 0x1000
PT_SHARED equ SCRATCH_ADDR + 0x8000 ; the identity table of 0-4 MiB
PT_BASE   equ SCRATCH_ADDR + 0x9000 ; space i's own table at PT_BASE + i * 0x1000
FRAMES    equ SCRATCH_ADDR + 0x11000 ; space i's page j at FRAMES + (i * PAGES + j) * 0x1000
DATA_VA   equ 0x40000000            ; where each space sees its own pages
PTE_PW    equ 0x003                 ; present, writable

start:
    mov edi, PD_BASE            ; clear the directories and tables
    xor eax, eax                ; with zeros
    mov ecx, (SPACES * 2 + 1) * 1024 ; 17 pages
    cld                         ; upwards
    rep stosd                   ; nothing is mapped now

    mov edi, PT_SHARED          ; the shared identity table
    mov eax, PTE_PW             ; frame 0
    mov ecx, 1024               ; 4 MiB
identity:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop identity               ; all of them

    xor esi, esi                ; space 0 first
spaces:
    mov ebx, esi                ; i
    shl ebx, 12                 ; i * 0x1000
    mov dword [PD_BASE + ebx], PT_SHARED | PTE_PW ; 0-4 MiB: identity
    lea eax, [PT_BASE + ebx]    ; space i's own table
    or eax, PTE_PW              ; present, writable
    mov [PD_BASE + ebx + (DATA_VA >> 22) * 4], eax ; maps DATA_VA
    mov eax, esi                ; i
    imul eax, PAGES * 0x1000    ; i * PAGES pages
    add eax, FRAMES | PTE_PW    ; its first frame
    lea edi, [PT_BASE + ebx]    ; its table's first entries
    mov ecx, PAGES              ; one per page
own_pages:
    stosd                       ; page j
    add eax, 0x1000             ; the next frame
    loop own_pages              ; all of them
    inc esi                     ; the next space
    cmp esi, SPACES             ; all eight
    jne spaces                  ; done

    mov eax, PD_BASE            ; space 0
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, 0x80000000          ; CR0.PG
    mov cr0, eax                ; paging on

    xor ebp, ebp                ; the sum of everything read
    mov edx, ROUNDS             ; rounds left
rounds:
    xor esi, esi                ; space 0 first
visit:
    mov eax, esi                ; i
    shl eax, 12                 ; i * 0x1000
    add eax, PD_BASE            ; its directory
    mov cr3, eax                ; switch to space i
    mov ecx, PAGES              ; its pages
    mov edi, DATA_VA            ; from the first
touch:
    inc dword [edi]             ; add one to the page's first word
    add ebp, [edi]              ; and sum it
    add edi, 0x1000             ; the next page
    loop touch                  ; all eight
    inc esi                     ; the next space
    cmp esi, SPACES             ; all eight
    jne visit                   ; one round
    dec edx                     ; a round done
    jnz rounds                  ; all fifty

    mov eax, ebp                ; the sum: 64 words counted 1 to 50
    out REPORT_PORT, eax        ; 64 * (50 * 51 / 2) = 0x13ec0
    hlt                         ; stop
