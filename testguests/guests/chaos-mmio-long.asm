; guest: chaos-mmio-long
; stage: 10
; mode: long64
; seed: ebx
; program: 0xa000
; demonstrates: the steps of chaos-mmio in 64-bit mode: REX prefixes, 8-byte operands, RIP-relative and 32-bit addresses, FS and GS bases, the window mapped at 1 GiB, 3 GiB and 512 GiB
;
; Like chaos-mmio (which see), but in 64-bit mode on the runner's page
; tables, to which the guest adds the window and its neighbours (with
; CR0.WP) three times: at 3 GiB (after a RAM page), at 1 GiB, within reach
; of a RIP-relative displacement from the steps' code, and at 512 GiB,
; above 4 GiB. Only FS and GS have a base here; the steps load them from
; the guest's GDT.

%include "rkvm.inc"
%include "chaos-mmio.inc"

bits 64
org LOAD_ADDR

PDPT    equ PML4_ADDR + 0x1000   ; the runner's PDPT (1 GiB per entry)
PD_WIN  equ TABLES               ; a directory: entry 0 is PT_WIN
PT_WIN  equ TABLES + 0x1000      ; the window and its neighbours
PD_LOW  equ TABLES + 0x2000      ; 2-3 GiB: entry 511 is PT_LOW
PT_LOW  equ TABLES + 0x3000      ; 0xbffff000: the flank below
PDPT_H  equ TABLES + 0x4000      ; 512 GiB: entry 0 is PD_WIN
PTE_PW  equ 0x003                ; present, writable
PTE_P   equ 0x001                ; present, read-only

start:
    mov eax, ebx                ; the seed
    out REPORT_PORT, eax        ; shows in the trace
    lgdt [chaos_gdt_descriptor] ; the data segments of the steps
    lidt [idt_descriptor]       ; every exception to its handler
    mov qword [PROGRAM_ADDR + P_AFTER], after_step ; where each step comes back
    mov dword [PT_WIN + 0 * 8], MMIO_BASE | PTE_PW ; +0: the window
    mov dword [PT_WIN + 1 * 8], FLANK_ABOVE | PTE_PW ; +0x1000: RAM
    mov dword [PT_WIN + 2 * 8], (MMIO_BASE + 0x1000) | PTE_PW ; +0x2000: no memory
    mov dword [PT_WIN + 4 * 8], MMIO_BASE | PTE_P ; +0x4000: the window, read-only
    mov dword [PD_WIN], PT_WIN | PTE_PW ; ...
    mov dword [PT_LOW + 511 * 8], FLANK_BELOW | PTE_PW ; 0xbffff000: RAM
    mov dword [PD_LOW + 511 * 8], PT_LOW | PTE_PW ; ...
    mov dword [PDPT + 1 * 8], PD_WIN | PTE_PW ; 1 GiB
    mov dword [PDPT + 2 * 8], PD_LOW | PTE_PW ; 2 GiB
    mov dword [PDPT + 3 * 8], PD_WIN | PTE_PW ; 3 GiB
    mov dword [PDPT_H], PD_WIN | PTE_PW ; 512 GiB
    mov dword [PML4_ADDR + 1 * 8], PDPT_H | PTE_PW ; ...
    mov rax, cr3                ; the new entries
    mov cr3, rax                ; take effect
    mov rax, cr0                ; CR0
    or eax, 0x10000             ; WP: read-only pages are read-only here too
    mov cr0, rax                ; ...

next_step:
    mov rsp, GUEST_STACK        ; our stack
    cld                         ; upwards, for our own string moves
    mov ecx, [PROGRAM_ADDR + P_DONE] ; the next step
    cmp ecx, [PROGRAM_ADDR + P_STEPS] ; all done?
    jae finish                  ; yes
    lea eax, [rcx + STEP_MARK]  ; the step begins
    out REPORT_PORT, eax        ; ...
    shl ecx, 8                  ; RECORD_SIZE
    lea rsi, [rcx + PROGRAM_ADDR + P_FIRST + R_STATE] ; its state
    mov edi, CUR                ; to a fixed place
    mov ecx, S_SIZE / 8         ; ...
    rep movsq                   ; ...
    mov fs, [CUR + S_SEGS + 8]  ; the step's FS and GS, with their bases
    mov gs, [CUR + S_SEGS + 10] ; ...
    mov rsp, CUR + S_FLAGS      ; its flags
    popfq                       ; ...
    mov rax, [CUR + 0 * 8]      ; its registers
    mov rcx, [CUR + 1 * 8]      ; ...
    mov rdx, [CUR + 2 * 8]      ; ...
    mov rbx, [CUR + 3 * 8]      ; ...
    mov rbp, [CUR + 5 * 8]      ; ...
    mov rsi, [CUR + 6 * 8]      ; ...
    mov rdi, [CUR + 7 * 8]      ; ...
    mov r8, [CUR + 8 * 8]       ; ...
    mov r9, [CUR + 9 * 8]       ; ...
    mov r10, [CUR + 10 * 8]     ; ...
    mov r11, [CUR + 11 * 8]     ; ...
    mov r12, [CUR + 12 * 8]     ; ...
    mov r13, [CUR + 13 * 8]     ; ...
    mov r14, [CUR + 14 * 8]     ; ...
    mov r15, [CUR + 15 * 8]     ; ...
    mov rsp, [CUR + 4 * 8]      ; its stack, last
    jmp [CUR + S_CODE]          ; and its code

; The step's code calls here after its instruction: [rsp] is the return
; address, the step's rsp is rsp + 8.
after_step:
    call save                   ; the registers
    pushfq                      ; the flags
    pop qword [SAVE + 16 * 8]   ; ...
    mov eax, NO_VECTOR          ; no exception
    xor edx, edx                ; no error code
    pop rcx                     ; where the code stopped
    mov [SAVE + 4 * 8], rsp     ; the step's rsp
    jmp record                  ; ...

; Every exception comes here, from its stub, with the vector on top of the
; error code (0 for the vectors without one), then rip, cs, rflags, rsp, ss.
fault:
    call save                   ; the registers
    pop rax                     ; the vector
    pop rdx                     ; the error code
    pop rcx                     ; rip
    mov rbx, [rsp + 8]          ; rflags
    mov [SAVE + 16 * 8], rbx    ; ...
    mov rbx, [rsp + 16]         ; the step's rsp
    mov [SAVE + 4 * 8], rbx     ; ...
record:
    mov edi, [PROGRAM_ADDR + P_DONE] ; the step's result
    imul edi, edi, RESULT_SIZE  ; ...
    add edi, RESULTS_ADDR       ; ...
    mov [rdi + X_VECTOR], rax   ; how it ended
    mov [rdi + X_ERROR], rdx    ; ...
    mov [rdi + X_RIP], rcx      ; where
    cmp eax, 14                 ; a page fault?
    jne .flags                  ; no
    mov rax, cr2                ; its address
    mov [rdi + X_CR2], rax      ; ...
.flags:
    mov rax, [SAVE + 16 * 8]    ; the flags
    mov [rdi + X_FLAGS], rax    ; ...
    cld                         ; (the step may have set DF)
    mov esi, SAVE               ; the registers
    add edi, X_REGS             ; ...
    mov ecx, 16                 ; ...
    rep movsq                   ; ...
    inc dword [PROGRAM_ADDR + P_DONE] ; the step is done
    jmp next_step               ; on with the next

; Saves the sixteen registers at SAVE (rsp as it was before the call).
save:
    mov [SAVE + 0 * 8], rax     ; ...
    mov [SAVE + 1 * 8], rcx     ; ...
    mov [SAVE + 2 * 8], rdx     ; ...
    mov [SAVE + 3 * 8], rbx     ; ...
    mov [SAVE + 5 * 8], rbp     ; ...
    mov [SAVE + 6 * 8], rsi     ; ...
    mov [SAVE + 7 * 8], rdi     ; ...
    mov [SAVE + 8 * 8], r8      ; ...
    mov [SAVE + 9 * 8], r9      ; ...
    mov [SAVE + 10 * 8], r10    ; ...
    mov [SAVE + 11 * 8], r11    ; ...
    mov [SAVE + 12 * 8], r12    ; ...
    mov [SAVE + 13 * 8], r13    ; ...
    mov [SAVE + 14 * 8], r14    ; ...
    mov [SAVE + 15 * 8], r15    ; ...
    ret                         ; (rsp is recorded by the caller)

finish:
    xor eax, eax                ; every step ran
    out EXIT_PORT, al           ; stop
    hlt                         ; (not reached: the exit port stops the guest)

; The 32 exception stubs, 16 bytes each: vector v's is at stubs + 16 * v.
align 16
stubs:
%assign v 0
%rep 32
%if v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30
%else
    push byte 0                 ; no error code: a 0 in its place
%endif
    push byte v                 ; the vector
    jmp fault                   ; to the common handler
    align 16, db 0xcc           ; the next stub
%assign v v + 1
%endrep

align 16
idt:                            ; 32 interrupt gates, one per exception
%assign v 0
%rep 32
    dw (ABS(stubs) + 16 * v) & 0xffff ; the stub's offset 15..0
    dw CODE64_SEL               ; the code segment
    db 0                        ; no IST
    db 0x8e                     ; present, DPL 0, 64-bit interrupt gate
    dw (ABS(stubs) + 16 * v) >> 16 ; offset 31..16
    dd 0                        ; offset 63..32
    dd 0                        ; reserved
%assign v v + 1
%endrep
idt_end:

idt_descriptor:
    dw idt_end - idt - 1        ; limit
    dq idt                      ; base

CHAOS_GDT
