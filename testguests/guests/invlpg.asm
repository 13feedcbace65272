; guest: invlpg
; stage: 8
; mode: prot32
; memory: 0x1000000
; demonstrates: INVLPG after a page-table entry changes: a new frame, a removed present bit, a 4 MiB page, an unmapped address
;
; The processor may keep using a translation it cached after the entry
; changes in memory; INVLPG of an address removes the cached translation
; of the page that contains it, so that the next access walks the tables
; again (SDM 4.10.4). A 4 MiB page goes as a whole, whichever address
; inside it is named. Under shadow paging, INVLPG is where the hypervisor
; learns that the guest changed an entry. Every access below follows an
; INVLPG of its page, so its result is the same on every correct x86.
; INVLPG of an address nothing maps does nothing: no fault.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PD_ADDR  equ SCRATCH_ADDR           ; the page directory
PT_ADDR  equ SCRATCH_ADDR + 0x1000  ; the identity page table of the first 4 MiB
TPT_ADDR equ SCRATCH_ADDR + 0x2000  ; the page table of the test page
FRAME_A  equ SCRATCH_ADDR + 0x3000  ; the frames the test page maps in turn
FRAME_B  equ SCRATCH_ADDR + 0x4000  ; ...
BIG_A    equ 0x400000               ; physical: the 4 MiB frames the large page maps in turn
BIG_B    equ 0x800000               ; ...
PAGE     equ 0x40000000             ; linear: the test page
BIG      equ 0x40400000             ; linear: the 4 MiB test page
NOWHERE  equ 0x80000000             ; linear: nothing maps it
PTE_P    equ 0x001                  ; present
PTE_PW   equ 0x003                  ; present, writable
PDE_BIG  equ 0x083                  ; present, writable, 4 MiB page (PS)
CR0_PG   equ 0x80000000             ; paging
CR4_PSE  equ 0x10                   ; 4 MiB pages

start:
    lidt [idt_descriptor]       ; our IDT: vector 14 is the page-fault handler
    mov edi, PD_ADDR            ; clear the directory and both page tables
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
    mov dword [PD_ADDR], PT_ADDR | PTE_PW ; 0-4 MiB: identity
    mov dword [PD_ADDR + 1 * 4], BIG_A | PDE_BIG ; 4-8 MiB: identity
    mov dword [PD_ADDR + 2 * 4], BIG_B | PDE_BIG ; 8-12 MiB: identity
    mov dword [PD_ADDR + (PAGE >> 22) * 4], TPT_ADDR | PTE_PW ; the test page's table
    mov dword [PD_ADDR + (BIG >> 22) * 4], BIG_A | PDE_BIG ; BIG maps BIG_A
    mov dword [TPT_ADDR], FRAME_A | PTE_PW ; PAGE maps FRAME_A
    mov dword [FRAME_A], 0xaaaaaaaa ; what each frame holds
    mov dword [FRAME_B], 0xbbbbbbbb ; ...
    mov dword [BIG_A + 0x2ff000], 0xa4a4a4a4 ; ...
    mov dword [BIG_B + 0x2ff000], 0xb4b4b4b4 ; ...
    mov eax, cr4                ; CR4
    or eax, CR4_PSE             ; CR4.PSE
    mov cr4, eax                ; 4 MiB pages on
    mov eax, PD_ADDR            ; the page directory
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; CR0.PG
    mov cr0, eax                ; paging on

    mov eax, [PAGE]             ; the test page
    out REPORT_PORT, eax        ; 0xaaaaaaaa: FRAME_A
    mov dword [TPT_ADDR], FRAME_B | PTE_PW ; the entry changes to FRAME_B
    invlpg [PAGE]               ; forget the old translation
    mov eax, [PAGE]             ; the test page again
    out REPORT_PORT, eax        ; 0xbbbbbbbb: FRAME_B
    mov dword [PAGE + 4], 0xb0b0b0b0 ; write through it
    mov eax, [FRAME_B + 4]      ; FRAME_B, through the identity map
    out REPORT_PORT, eax        ; 0xb0b0b0b0
    mov eax, [FRAME_A + 4]      ; FRAME_A
    out REPORT_PORT, eax        ; 0: untouched

    and dword [TPT_ADDR], ~PTE_P ; the present bit goes
    invlpg [PAGE]               ; forget the translation
    mov dword [resume], np_write ; after the fault, the next case
np_read:
    mov eax, [PAGE + 8]         ; #PF: CR2 0x40000008, error 0x0 (not present)
np_write:
    mov dword [resume], back    ; after the fault, go on
np_write_insn:
    mov dword [PAGE + 0xc], 1   ; #PF: CR2 0x4000000c, error 0x2 (not present, write)
back:
    mov dword [TPT_ADDR], FRAME_A | PTE_PW ; present again, on FRAME_A
    mov eax, [PAGE]             ; no INVLPG needed: nothing was cached
    out REPORT_PORT, eax        ; 0xaaaaaaaa: FRAME_A
    mov eax, [FRAME_B + 0xc]    ; the faulting write
    out REPORT_PORT, eax        ; 0: did not happen

    mov eax, [BIG + 0x2ff000]   ; the 4 MiB page
    out REPORT_PORT, eax        ; 0xa4a4a4a4: BIG_A
    mov dword [PD_ADDR + (BIG >> 22) * 4], BIG_B | PDE_BIG ; BIG maps BIG_B now
    invlpg [BIG + 0x123000]     ; an address inside it: the whole 4 MiB page goes
    mov eax, [BIG + 0x2ff000]   ; another offset
    out REPORT_PORT, eax        ; 0xb4b4b4b4: BIG_B

    mov dword [resume], done    ; should INVLPG fault, finish
    invlpg [NOWHERE]            ; no translation, no table: nothing happens
    invlpg [PAGE + 0x1000]      ; a not-present entry in a present table: nothing either
    mov eax, 0x600d             ; no fault
    out REPORT_PORT, eax        ; 0x600d
done:
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
