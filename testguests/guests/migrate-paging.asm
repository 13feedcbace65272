; guest: migrate-paging
; stage: 11
; mode: prot32
; demonstrates: a guest that rewrites its own page tables while `rkvm-run migrate` moves it to a second VM
;
; Sixteen linear pages at WINDOW are mapped by a page table the guest
; rewrites every round: window page i shows frame FRAMES + (i + round) mod
; 32, so each round moves every window page to another frame, reloads
; CR3 and adds to one doubleword of each window page. After 24 such rounds
; only window page 0 moves, for 24 more rounds that also wait a while.
; The checksum of the 32 frames ends the trace: it depends on every
; mapping the guest made and every write through it.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD_ADDR  equ SCRATCH_ADDR           ; the page directory
PT_ADDR  equ SCRATCH_ADDR + 0x1000  ; identity map of the first 4 MiB
WPT_ADDR equ SCRATCH_ADDR + 0x2000  ; the window's page table
FRAMES   equ 0x40000                ; 32 frames the window shows
WINDOW   equ 0x40000000             ; linear: 16 pages
PTE_PW   equ 0x003                  ; present, writable
CR0_PG   equ 0x80000000
DELAY    equ 20000
QUIET    equ 5000000            ; iterations of the last stretch

start:
    mov edi, PD_ADDR            ; clear the three tables
    xor eax, eax
    mov ecx, 3 * 1024
    rep stosd
    mov dword [PD_ADDR], PT_ADDR | PTE_PW
    mov dword [PD_ADDR + (WINDOW >> 22) * 4], WPT_ADDR | PTE_PW
    mov edi, PT_ADDR            ; identity map
    mov eax, PTE_PW
    mov ecx, 1024
identity:
    stosd
    add eax, 0x1000
    loop identity
    mov eax, PD_ADDR
    mov cr3, eax
    mov eax, cr0
    or eax, CR0_PG
    mov cr0, eax
    jmp paged
paged:
    xor ebx, ebx                ; round
round:
    mov ebp, 16                 ; window pages moved this round:
    cmp ebx, 24                 ; all 16 at first,
    jb .map
    mov ebp, 1                  ; then only page 0
.map:
    xor esi, esi                ; window page i
.entry:
    lea eax, [esi + ebx]        ; frame (i + round) mod 32
    and eax, 31
    shl eax, 12
    add eax, FRAMES | PTE_PW
    mov [WPT_ADDR + esi * 4], eax
    inc esi
    cmp esi, ebp
    jb .entry
    mov eax, cr3                ; forget the old mappings
    mov cr3, eax
    xor esi, esi
.write:
    mov edi, esi                ; window page i, doubleword `round`
    shl edi, 12
    add [WINDOW + edi + ebx * 4], ebx
    inc dword [WINDOW + edi + 0xffc]
    inc esi
    cmp esi, ebp
    jb .write
    cmp ebx, 24
    jb .report
    mov ecx, DELAY              ; the quiet rounds wait
.wait:
    loop .wait
.report:
    mov eax, ebx
    out REPORT_PORT, eax        ; a round
    inc ebx
    cmp ebx, 48
    jb round

    mov ecx, QUIET              ; a last stretch that writes nothing,
quiet:                          ; long enough on any platform for the
    loop quiet                  ; migration to stop the guest in it
    mov esi, FRAMES             ; the checksum of the 32 frames
    mov ecx, 32 * 1024
    xor edx, edx
sum:
    lodsd
    rol edx, 3
    add edx, eax
    loop sum
    mov eax, edx
    out REPORT_PORT, eax
    mov al, 0
    out EXIT_PORT, al
