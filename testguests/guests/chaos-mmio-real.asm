; guest: chaos-mmio-real
; stage: 12
; mode: real
; seed: ebx
; program: 0xa000
; demonstrates: the steps of chaos-mmio in real mode: 16-bit addresses, 66 and 67 prefixes, segments that kept a base of the window or below it from protected mode
;
; Like chaos-mmio (which see), but in real mode. Real mode cannot name
; the window with a selector, but a segment keeps the base it was last
; loaded with: before each step the guest turns CR0.PE on, loads ES, DS,
; FS and GS with the step's selectors from its own GDT, and turns PE off
; again, without a far jump (as mmio-real does). Paging stays off.
;
; Every interrupt vector leads to a `call fault` in a table of 256, whose
; return address tells the vector. rkvm on Intel VMX delivers exceptions
; through it too (stage 12); only a #GP whose instruction rkvm cannot
; emulate goes to userspace there, and ends the run.

%include "rkvm.inc"
%include "chaos-mmio.inc"

bits 16
org LOAD_ADDR

start:
    cli                         ; no interrupts
    mov eax, ebx                ; the seed
    out REPORT_PORT, eax        ; shows in the trace
    o32 lgdt [chaos_gdt_descriptor] ; the data segments of the steps
    xor di, di                  ; the IVT: every vector to its call
    mov ax, vectors             ; ...
    mov cx, 256                 ; ...
.ivt:
    mov [di], ax                ; offset
    mov word [di + 2], 0        ; segment
    add di, 4                   ; the next vector
    add ax, 3                   ; its call
    loop .ivt                   ; ...
    mov dword [PROGRAM_ADDR + P_AFTER], after_step ; where each step comes back

next_step:
    mov eax, cr0                ; CR0 (no call: the stack may be anywhere)
    or al, 1                    ; PE
    mov cr0, eax                ; protected mode, still 16-bit code
    mov ax, SEL_REAL0           ; our own segments, base 0
    mov ds, ax                  ; ...
    mov es, ax                  ; ...
    mov ss, ax                  ; ...
    mov eax, cr0                ; CR0
    and al, 0xfe                ; PE off
    mov cr0, eax                ; real mode; the segments keep their bases
    mov esp, GUEST_STACK        ; our stack
    cld                         ; upwards, for our own string moves
    mov ecx, [PROGRAM_ADDR + P_DONE] ; the next step
    cmp ecx, [PROGRAM_ADDR + P_STEPS] ; all done?
    jae finish                  ; yes
    lea eax, [ecx + STEP_MARK]  ; the step begins
    out REPORT_PORT, eax        ; ...
    shl cx, 8                   ; RECORD_SIZE
    mov si, cx                  ; its state
    add si, PROGRAM_ADDR + P_FIRST + R_STATE ; ...
    mov di, CUR                 ; to a fixed place
    mov cx, S_SIZE / 4          ; ...
    rep movsd                   ; ...
    call protected              ; the step's segments
    mov es, [CUR + S_SEGS + 0]  ; ...
    mov fs, [CUR + S_SEGS + 8]  ; ...
    mov gs, [CUR + S_SEGS + 10] ; ...
    mov ds, [CUR + S_SEGS + 6]  ; (ds last: it reads the others)
    call real                   ; they keep their bases
    mov sp, CUR + S_FLAGS       ; its flags
    popfd                       ; ...
    mov eax, [ss:CUR + 0 * 8]   ; its registers
    mov ecx, [ss:CUR + 1 * 8]   ; ...
    mov edx, [ss:CUR + 2 * 8]   ; ...
    mov ebx, [ss:CUR + 3 * 8]   ; ...
    mov ebp, [ss:CUR + 5 * 8]   ; ...
    mov esi, [ss:CUR + 6 * 8]   ; ...
    mov edi, [ss:CUR + 7 * 8]   ; ...
    mov esp, [ss:CUR + 4 * 8]   ; its stack, last
    jmp word [ss:CUR + S_CODE]  ; and its code

; CR0.PE on, and off again (eax is lost).
protected:
    mov eax, cr0                ; CR0
    or al, 1                    ; PE
    mov cr0, eax                ; protected mode, still 16-bit code
    ret                         ; ...
real:
    mov eax, cr0                ; CR0
    and al, 0xfe                ; PE off
    mov cr0, eax                ; real mode; the segments keep their bases
    ret                         ; ...

; The step's code calls here after its instruction: [sp] is the return
; address, the step's sp is sp + 2.
after_step:
    call save                   ; the registers
    pushfd                      ; the flags
    pop dword [ss:SAVE + 16 * 8] ; ...
    mov eax, NO_VECTOR          ; no exception
    xor edx, edx                ; no error code
    pop cx                      ; where the code stopped
    movzx ecx, cx               ; ...
    jmp record                  ; sp is the step's again

; Every interrupt comes here, from its call in `vectors`, then ip, cs and
; flags (real mode pushes no error code).
fault:
    call save                   ; the registers
    pop ax                      ; the call's return address
    sub ax, vectors + 3         ; 3 bytes per vector
    mov bl, 3                   ; ...
    div bl                      ; al: the vector
    movzx eax, al               ; ...
    xor edx, edx                ; no error code
    pop cx                      ; ip
    movzx ecx, cx               ; ...
    add sp, 2                   ; cs
    pop word [ss:SAVE + 16 * 8] ; flags; sp is the step's again
    mov word [ss:SAVE + 16 * 8 + 2], 0 ; (the upper half was not pushed)
record:
    mov [ss:SAVE + 4 * 8], esp  ; the step's rsp
    mov ebx, cr0                ; our own segments again, base 0: random
    or bl, 1                    ; bytes may have loaded any (`pop ss`
    mov cr0, ebx                ; among them, which would leave the
    mov bx, SEL_REAL0           ; count of steps done where we cannot
    mov ds, bx                  ; find it, and run the step for ever)
    mov es, bx                  ; ...
    mov ss, bx                  ; ...
    mov ebx, cr0                ; ...
    and bl, 0xfe                ; ...
    mov cr0, ebx                ; ...
    mov di, [PROGRAM_ADDR + P_DONE] ; the step's result
    imul di, di, RESULT_SIZE    ; ...
    add di, RESULTS_ADDR        ; ...
    mov [di + X_VECTOR], eax    ; how it ended
    mov [di + X_ERROR], edx     ; ...
    mov [di + X_RIP], ecx       ; where
    mov eax, [SAVE + 16 * 8]    ; the flags
    mov [di + X_FLAGS], eax     ; ...
    mov si, SAVE                ; the registers
    mov cx, 8                   ; eight of them
.copy:
    mov eax, [si]               ; the low half
    mov [di + X_REGS], eax      ; (the high half stays 0)
    add si, 8                   ; ...
    add di, 8                   ; ...
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
    ret                         ; (esp is recorded by the caller)

finish:
    xor eax, eax                ; every step ran
    out EXIT_PORT, al           ; stop
    hlt                         ; (not reached: the exit port stops the guest)

; One call per interrupt vector, 3 bytes each.
vectors:
%rep 256
    call fault                  ; ...
%endrep

CHAOS_GDT
