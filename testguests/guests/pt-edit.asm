; guest: pt-edit
; stage: 8
; mode: prot32
; demonstrates: the guest edits its live page tables through aliases: a page's entry while it reads the page, an entry through the page it maps, a directory entry through a recursive mapping
;
; The page table TPT of the test page PAGE is itself mapped at PT_ALIAS (by
; its own entry 1), and the page directory maps itself in its last entry,
; so that every page-table entry appears at 0xffc00000 and every directory
; entry at 0xfffff000 (the recursive mapping of older Windows and Linux
; kernels). The guest writes entries only through these aliases: whole
; entries, a single byte, a locked read-modify-write, the alias's own entry
; through the alias. After each change it invalidates what the SDM says
; may be cached (INVLPG of the page, or a reload of CR3 after a directory
; entry changes) and reads through the changed mapping. A shadow MMU
; write-protects the guest's page tables and must notice every such write,
; however it is made; here the page directory is also a page table.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD_ADDR  equ SCRATCH_ADDR           ; the page directory
PT_ADDR  equ SCRATCH_ADDR + 0x1000  ; the identity page table of the first 4 MiB
TPT      equ SCRATCH_ADDR + 0x2000  ; the page table of PAGE
TPT2     equ SCRATCH_ADDR + 0x3000  ; another page table for the same 4 MiB
FRAMES   equ SCRATCH_ADDR + 0x4000  ; five frames, one after another; frame i holds 0xf000 + i
PAGE     equ 0x40000000             ; linear: the test page, entry 0 of TPT
PT_ALIAS equ 0x40001000             ; linear: TPT itself, through entry 1 of TPT
PTES     equ 0xffc00000             ; linear: every page-table entry, through the recursive entry
PDES     equ 0xfffff000             ; linear: every directory entry, through it too
PTE_PW   equ 0x003                  ; present, writable
PTE_W    equ 0x002                  ; writable
CR0_PG   equ 0x80000000             ; paging
CR0_WP   equ 0x10000                ; CPL 0 obeys read-only pages

start:
    lidt [idt_descriptor]       ; our IDT: vector 14 is the page-fault handler
    mov edi, PD_ADDR            ; clear the tables and the frames
    xor eax, eax                ; with zeros
    mov ecx, 9 * 1024           ; 9 pages of 1024 doublewords
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov edi, PT_ADDR            ; the identity page table
    mov eax, PTE_PW             ; entry 0: frame 0, present, writable
    mov ecx, 1024               ; 1024 entries: 4 MiB
identity:
    stosd                       ; one entry
    add eax, 0x1000             ; the next frame
    loop identity               ; all of them
    mov edi, FRAMES             ; each frame's first word is its number
    mov eax, 0xf000             ; frame 0
    mov ecx, 5                  ; five frames
frames:
    mov [edi], eax              ; its number
    add edi, 0x1000             ; the next frame
    inc eax                     ; and number
    loop frames                 ; all five
    mov dword [PD_ADDR], PT_ADDR | PTE_PW ; 0-4 MiB: identity
    mov dword [PD_ADDR + (PAGE >> 22) * 4], TPT | PTE_PW ; PAGE's table
    mov dword [PD_ADDR + 1023 * 4], PD_ADDR | PTE_PW ; the last 4 MiB: the directory as a page table
    mov dword [TPT], FRAMES | PTE_PW ; PAGE: frame 0
    mov dword [TPT + 4], TPT | PTE_PW ; PT_ALIAS: TPT itself
    mov dword [TPT2], FRAMES + 4 * 0x1000 | PTE_PW ; in TPT2, PAGE is frame 4
    mov eax, PD_ADDR            ; the page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG | CR0_WP     ; CR0.PG, and CR0.WP for the read-only case
    mov cr0, eax                ; paging on

    mov eax, [PAGE]             ; PAGE
    out REPORT_PORT, eax        ; 0xf000: frame 0
    mov ebx, FRAMES + 0x1000 | PTE_PW ; frames 1, 2, 3
remap:
    mov [PT_ALIAS], ebx         ; PAGE's entry, through the alias of its table
    invlpg [PAGE]               ; forget PAGE's old translation
    mov eax, [PAGE]             ; read PAGE again
    out REPORT_PORT, eax        ; 0xf001, then 0xf002, 0xf003
    add ebx, 0x1000             ; the next frame
    cmp ebx, FRAMES + 4 * 0x1000 | PTE_PW ; up to frame 3
    jne remap                   ; three times
    mov eax, [PT_ALIAS]         ; PAGE's entry, through the alias
    out REPORT_PORT, eax        ; 0x00017023: frame 3, accessed
    mov dword [PAGE + 4], 0x3333 ; write PAGE
    mov eax, [PTES + (PAGE >> 12) * 4] ; its entry, through the recursive mapping
    out REPORT_PORT, eax        ; 0x00017063: dirty too

    and byte [PT_ALIAS], ~PTE_W ; one byte of the entry: read-only now
    invlpg [PAGE]               ; forget the writable translation
    mov dword [resume], unlock  ; after the fault, make it writable again
ro_write:
    mov dword [PAGE + 8], 0x5555 ; #PF: CR2 0x40000008, error 0x3 (present, write)
unlock:
    lock or dword [PT_ALIAS], PTE_W ; a locked read-modify-write: writable again
    invlpg [PAGE]               ; forget the read-only translation
    mov dword [PAGE + 8], 0x8888 ; no fault now
    mov eax, [FRAMES + 3 * 0x1000 + 8] ; frame 3, through the identity map
    out REPORT_PORT, eax        ; 0x8888

    mov dword [PT_ALIAS + 4], FRAMES + 0x1000 | PTE_PW ; the alias's own entry, through the alias:
    invlpg [PT_ALIAS]           ; PT_ALIAS is frame 1 now
    mov eax, [PT_ALIAS]         ; frame 1's first word
    out REPORT_PORT, eax        ; 0xf001
    mov eax, [TPT + 4]          ; the entry, through the identity map
    out REPORT_PORT, eax        ; 0x00015023: frame 1, accessed

    mov dword [PDES + (PAGE >> 22) * 4], TPT2 | PTE_PW ; PAGE's directory entry: TPT2 now
    mov eax, cr3                ; a changed directory entry may be cached
    mov cr3, eax                ; until CR3 is loaded
    mov eax, [PAGE]             ; PAGE, through TPT2
    out REPORT_PORT, eax        ; 0xf004: frame 4
    mov eax, [PTES + (PAGE >> 12) * 4] ; PAGE's entry, in TPT2 now
    out REPORT_PORT, eax        ; 0x00018023: frame 4, accessed
    mov eax, [PDES + (PAGE >> 22) * 4] ; PAGE's directory entry
    out REPORT_PORT, eax        ; 0x00013023: TPT2, accessed
    mov eax, [PDES + 1023 * 4]  ; the recursive entry, through itself
    out REPORT_PORT, eax        ; 0x00010063: accessed, and dirty: it was the page-table
                                ; entry of the write to PAGE's directory entry
    hlt                         ; stop

; The page-fault handler, vector 14. The CPU pushed eflags, cs, eip and an
; error code; we report CR2, the error code and the eip.
page_fault:
    push eax                    ; keep eax: the error code is at [esp + 4] now
    mov eax, cr2                ; the linear address that faulted
    out REPORT_PORT, eax        ; report it
    mov eax, [esp + 4]          ; the error code
    out REPORT_PORT, eax        ; report it
    mov eax, [esp + 8]          ; the saved eip: the faulting instruction
    out REPORT_PORT, eax        ; report it
    mov eax, [resume]           ; where the test goes on
    mov [esp + 8], eax          ; replaces the saved eip
    pop eax                     ; eax back
    add esp, 4                  ; drop the error code
    iretd                       ; return there

resume: dd 0                    ; where the handler goes on after a fault

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
