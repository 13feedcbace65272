; guest: chaos-mmio
; stage: 10
; mode: prot32
; seed: ebx
; program: 0xa000
; demonstrates: instructions the runner generates from a seed, aimed at the MMIO window through every addressing form, prefix and segment, one step at a time: every run must end in a way a guest may end
;
; Run by `rkvm-run chaos`, never compared with a golden trace. The runner
; writes a program at PROGRAM_ADDR (chaos-mmio.inc describes it): steps,
; each one instruction with the registers, flags and data segments it
; starts with. Most are instructions the emulator knows, with memory
; operands in the window, across its page edges, in RAM, on pages that
; fault, through segments whose limit or rights refuse them; for a
; quarter of the seeds some are random bytes, instructions the emulator
; does not know, and encodings the processor refuses.
;
; The guest runs the steps in turn: it loads the step's state and jumps to
; its code. The instruction is followed by a call through P_AFTER, which
; comes back here; an exception comes to the handler of its vector. Either
; way the guest writes the step's result (how it ended, where, the
; registers and flags) at RESULTS_ADDR, which the runner reads after the
; run, and goes on with the next step. After the last one it writes 0 to
; the exit port. Each step begins with an `out` of STEP_MARK plus its
; number, so that the trace shows which step made which MMIO accesses.
;
; For half the seeds (P_FLAGS bit 0) the guest first turns on 32-bit
; paging, with CR0.WP: a 4 MiB page maps the first 4 MiB to itself, RAM
; flanks the window on both sides, and behind it come a page without
; memory, a page that is not present and the window again, read-only.

%include "rkvm.inc"
%include "chaos-mmio.inc"

bits 32
org LOAD_ADDR

PD      equ TABLES               ; the page directory
PT_LOW  equ TABLES + 0x1000      ; 0xbfc00000-0xbfffffff: the flank below
PT_WIN  equ TABLES + 0x2000      ; 0xc0000000-0xc03fffff: the window and the rest
PTE_PW  equ 0x003                ; present, writable
PTE_P   equ 0x001                ; present, read-only
PDE_4M  equ 0x083                ; present, writable, 4 MiB page

start:
    mov eax, ebx                ; the seed
    out REPORT_PORT, eax        ; shows in the trace
    lgdt [chaos_gdt_descriptor] ; the data segments of the steps
    lidt [idt_descriptor]       ; every exception to its handler
    mov dword [PROGRAM_ADDR + P_AFTER], after_step ; where each step comes back
    test dword [PROGRAM_ADDR + P_FLAGS], PAGING_FLAG ; paging?
    jz next_step                ; no
    mov dword [PD], PDE_4M      ; 0-4 MiB: itself
    mov dword [PD + 0x2ff * 4], PT_LOW | PTE_PW ; 0xbfc00000
    mov dword [PD + 0x300 * 4], PT_WIN | PTE_PW ; 0xc0000000
    mov dword [PT_LOW + 0x3ff * 4], FLANK_BELOW | PTE_PW ; 0xbffff000: RAM
    mov dword [PT_WIN + 0 * 4], MMIO_BASE | PTE_PW ; 0xc0000000: the window
    mov dword [PT_WIN + 1 * 4], FLANK_ABOVE | PTE_PW ; 0xc0001000: RAM
    mov dword [PT_WIN + 2 * 4], (MMIO_BASE + 0x1000) | PTE_PW ; 0xc0002000: no memory
    mov dword [PT_WIN + 4 * 4], MMIO_BASE | PTE_P ; 0xc0004000: the window, read-only
    mov eax, cr4                ; CR4
    or eax, 0x10                ; PSE: 4 MiB pages
    mov cr4, eax                ; ...
    mov eax, PD                 ; the directory
    mov cr3, eax                ; ...
    mov eax, cr0                ; CR0
    or eax, 0x80010000          ; PG and WP
    mov cr0, eax                ; paging on

next_step:
    mov ax, DATA32_SEL          ; flat data
    mov ds, ax                  ; in every data segment
    mov es, ax                  ; ...
    mov fs, ax                  ; ...
    mov gs, ax                  ; ...
    mov ss, ax                  ; ...
    mov esp, GUEST_STACK        ; our stack
    cld                         ; upwards, for our own string moves
    mov ecx, [PROGRAM_ADDR + P_DONE] ; the next step
    cmp ecx, [PROGRAM_ADDR + P_STEPS] ; all done?
    jae finish                  ; yes
    lea eax, [ecx + STEP_MARK]  ; the step begins
    out REPORT_PORT, eax        ; ...
    shl ecx, 8                  ; RECORD_SIZE
    lea esi, [ecx + PROGRAM_ADDR + P_FIRST + R_STATE] ; its state
    mov edi, CUR                ; to a fixed place
    mov ecx, S_SIZE / 4         ; ...
    rep movsd                   ; ...
    mov es, [CUR + S_SEGS + 0]  ; the step's segments
    mov fs, [CUR + S_SEGS + 8]  ; ...
    mov gs, [CUR + S_SEGS + 10] ; ...
    mov ds, [CUR + S_SEGS + 6]  ; (ds last: it reads the others)
    mov esp, CUR + S_FLAGS      ; its flags
    popfd                       ; ...
    mov eax, [ss:CUR + 0 * 8]   ; its registers
    mov ecx, [ss:CUR + 1 * 8]   ; ...
    mov edx, [ss:CUR + 2 * 8]   ; ...
    mov ebx, [ss:CUR + 3 * 8]   ; ...
    mov ebp, [ss:CUR + 5 * 8]   ; ...
    mov esi, [ss:CUR + 6 * 8]   ; ...
    mov edi, [ss:CUR + 7 * 8]   ; ...
    mov esp, [ss:CUR + 4 * 8]   ; its stack, last
    jmp [ss:CUR + S_CODE]       ; and its code

; The step's code calls here after its instruction: [esp] is the return
; address, the step's rsp is esp + 4.
after_step:
    call save                   ; the registers
    pushfd                      ; the flags
    pop dword [ss:SAVE + 16 * 8] ; ...
    mov eax, NO_VECTOR          ; no exception
    xor edx, edx                ; no error code
    pop ecx                     ; where the code stopped
    jmp record                  ; esp is the step's again

; Every exception comes here, from its stub, with the vector on top of the
; error code (0 for the vectors without one), then eip, cs, eflags.
fault:
    call save                   ; the registers
    pop eax                     ; the vector
    pop edx                     ; the error code
    pop ecx                     ; eip
    add esp, 4                  ; cs
    pop dword [ss:SAVE + 16 * 8] ; eflags; esp is the step's again
record:
    mov [ss:SAVE + 4 * 8], esp  ; the step's rsp
    mov bx, DATA32_SEL          ; flat data again
    mov ds, bx                  ; ...
    mov es, bx                  ; ...
    mov edi, [PROGRAM_ADDR + P_DONE] ; the step's result
    imul edi, edi, RESULT_SIZE  ; ...
    add edi, RESULTS_ADDR       ; ...
    mov [edi + X_VECTOR], eax   ; how it ended
    mov [edi + X_ERROR], edx    ; ...
    mov [edi + X_RIP], ecx      ; where
    cmp eax, 14                 ; a page fault?
    jne .flags                  ; no
    mov eax, cr2                ; its address
    mov [edi + X_CR2], eax      ; ...
.flags:
    mov eax, [SAVE + 16 * 8]    ; the flags
    mov [edi + X_FLAGS], eax    ; ...
    cld                         ; (the step may have set DF)
    mov esi, SAVE               ; the registers
    add edi, X_REGS             ; ...
    mov ecx, 8                  ; eight of them
.copy:
    movsd                       ; the low half
    add esi, 4                  ; (the high half stays 0)
    add edi, 4                  ; ...
    loop .copy                  ; ...
    inc dword [PROGRAM_ADDR + P_DONE] ; the step is done
    jmp next_step               ; on with the next

; Saves the eight registers at SAVE (esp as it was before the call).
save:
    mov [ss:SAVE + 0 * 8], eax  ; ...
    mov [ss:SAVE + 1 * 8], ecx  ; ...
    mov [ss:SAVE + 2 * 8], edx  ; ...
    mov [ss:SAVE + 3 * 8], ebx  ; ...
    mov [ss:SAVE + 5 * 8], ebp  ; ...
    mov [ss:SAVE + 6 * 8], esi  ; ...
    mov [ss:SAVE + 7 * 8], edi  ; ...
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

align 8
idt:                            ; 32 interrupt gates, one per exception
%assign v 0
%rep 32
    dw (ABS(stubs) + 16 * v) & 0xffff ; the stub's offset 15..0
    dw CODE32_SEL               ; the code segment
    db 0                        ; reserved
    db 0x8e                     ; present, DPL 0, 32-bit interrupt gate
    dw (ABS(stubs) + 16 * v) >> 16 ; offset 31..16
%assign v v + 1
%endrep
idt_end:

idt_descriptor:
    dw idt_end - idt - 1        ; limit
    dd idt                      ; base

CHAOS_GDT
