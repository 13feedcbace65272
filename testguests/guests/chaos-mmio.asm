; guest: chaos-mmio
; stage: 10
; mode: prot32
; seed: ebx
; demonstrates: random instructions from a seed whose memory operands point into the MMIO window: every run must end in a way a guest may end
;
; Run by `rkvm-run chaos`, never compared with a golden trace: the runner
; puts the seed in ebx, and the guest draws everything from it with a
; xorshift generator. STEPS times it writes 16 random bytes into a code
; buffer (sixteen int3 follow them), loads eax, ebx, edx, esi, edi and ebp
; with MMIO_BASE plus a random offset below 4 KiB and ecx with a small
; random count, and enters the buffer with iret, its RFLAGS random in the
; status flags and DF, with TF set: the processor stops after the first
; instruction with a debug exception (vector 1). Every exception comes to
; a handler, which reports the vector and eip (and the error code and a
; count for any other vector than 1), puts the segments and the stack
; back, and goes on with the next step. After the last step the guest
; writes the number of exceptions other than #DB it caught to the exit
; port.
;
; A hypervisor that emulates an instruction (an MMIO access, an I/O
; port) may not raise the single-step trap after it: Linux's KVM was seen
; not to (kvm_amd, Linux 6.1), and neither does rkvm. The step then runs
; on into the following random bytes, so these must end: no random byte
; may jump backwards or repeat without bound. The limits:
; - No control transfer: jcc, jmp, call, ret, iret, loop and jecxz (their
;   opcodes become 90, nop), FF /2 to /5 (the FF becomes FE: #UD), 0F 80
;   to 0F 8F (the second byte becomes 0B: ud2). Exceptions and int n go
;   to the handler. So a step runs forwards, at the latest into an int3.
; - rep and repne (F3, F2) only as the first byte, when ecx is at most 7.
; - 0F 00, 0F 01, 0F 22, 0F 23 (lldt, ltr, lgdt, lidt, lmsw, invlpg, the
;   SVM and VMX instructions, mov to CR and DR) and syscall, sysret,
;   sysenter and sysexit become 0F 0B: a random CR3, CR0 or descriptor
;   table would make the guest's handler unreachable or put page tables in
;   MMIO.
; - The string I/O opcodes 6C-6F become nop: with their memory in the
;   window they would ask userspace to copy between a port and MMIO, which
;   2006's ABI leaves to userspace and this runner does not do.
; - A first byte F4 (hlt) becomes F5 (cmc), so that few runs end at once.
; - The stack is RAM above 64 KiB, and the dwords above it hold 0x102
;   (TF and the fixed bit): popf keeps TF.
;
; A run may also end early, in ways a guest may end: hlt, an out to the
; exit port, an instruction the hypervisor cannot emulate (an MMIO access
; its instruction emulator does not know: KVM_EXIT_UNKNOWN on rkvm, an
; internal-error exit on Linux), or a triple fault (a descriptor table
; overwritten through a random address).

%include "rkvm.inc"

bits 32
org LOAD_ADDR

BUF        equ 0x30000          ; the code buffer: 16 random bytes, then ud2s
STACK      equ 0x60000          ; the stack of the random instructions and the handler
STEPS      equ 24               ; instructions per run
EFL_TF     equ 0x100            ; the trap flag
EFL_OF     equ 0x800            ; OF

start:
    mov eax, ebx                ; the seed the runner gave
    out REPORT_PORT, eax        ; shows in the trace
    lea eax, [ebx + 1]          ; seed + 1
    imul eax, eax, 0x9e3779b1   ; spread over all bits
    or eax, 1                   ; never 0, where xorshift would stay
    mov [rng], eax              ; the generator's state
    lidt [idt_descriptor]       ; every exception to our handler

next_step:
    mov ax, DATA32_SEL          ; flat data
    mov ds, ax                  ; in every data segment
    mov es, ax                  ; ...
    mov fs, ax                  ; ...
    mov gs, ax                  ; ...
    mov ss, ax                  ; ...
    mov esp, STACK              ; the stack
    cld                         ; upwards, for the guest's own work
    inc dword [steps]           ; one more step
    cmp dword [steps], STEPS    ; all done?
    ja finish                   ; yes

    mov edi, STACK              ; the dwords above the stack
    mov eax, 0x102              ; TF and the fixed bit
    mov ecx, 64                 ; 256 bytes
    rep stosd                   ; ...

    mov edi, BUF + 16           ; after the random bytes
    mov eax, 0xcccccccc         ; int3
    mov ecx, 4                  ; sixteen of them
    rep stosd                   ; (again each step: the chaos may write there)
    mov edi, BUF                ; 16 random bytes
    mov ecx, 4                  ; four dwords
.fill:
    call rand                   ; ...
    stosd                       ; ...
    loop .fill                  ; ...
    mov esi, BUF                ; now the limits
    mov ecx, 16                 ; each byte
.limit:
    mov al, [esi]               ; the byte
    mov edi, forbidden          ; one-byte opcodes that become nop
    mov edx, ecx                ; (keep the count)
    mov ecx, forbidden_len      ; ...
    repne scasb                 ; among them?
    mov ecx, edx                ; the count again
    jne .rep                    ; no
    mov byte [esi], 0x90        ; a nop instead
    jmp .next                   ; ...
.rep:
    cmp al, 0xf2                ; repne or rep
    jb .group5                  ; ...
    cmp al, 0xf3                ; ...
    ja .group5                  ; ...
    cmp esi, BUF                ; only as the first byte
    je .next                    ; ...
    mov byte [esi], 0x90        ; a nop instead
    jmp .next                   ; ...
.group5:
    cmp al, 0xff                ; FF /2 to /5 are calls and jumps
    jne .pair                   ; ...
    mov al, [esi + 1]           ; the ModRM byte
    shr al, 3                   ; its reg field
    and al, 7                   ; ...
    cmp al, 2                   ; 2 to 5?
    jb .next                    ; ...
    cmp al, 5                   ; ...
    ja .next                    ; ...
    mov byte [esi], 0xfe        ; FE /2 to /5: #UD
    jmp .next                   ; ...
.pair:
    cmp al, 0x0f                ; a two-byte opcode?
    jne .next                   ; no
    mov al, [esi + 1]           ; the second byte (the 17th is an int3)
    mov edi, forbidden_0f       ; second bytes that become 0B (ud2)
    mov edx, ecx                ; (keep the count)
    mov ecx, forbidden_0f_len   ; ...
    repne scasb                 ; among them?
    mov ecx, edx                ; the count again
    jne .jcc                    ; no
    mov byte [esi + 1], 0x0b    ; ud2 instead
    jmp .next                   ; ...
.jcc:
    and al, 0xf0                ; 0F 80 to 0F 8F: jcc rel32
    cmp al, 0x80                ; ...
    jne .next                   ; ...
    mov byte [esi + 1], 0x0b    ; ud2 instead
.next:
    inc esi                     ; the next byte
    loop .limit                 ; all sixteen
    cmp byte [BUF], 0xf4        ; hlt first?
    jne .registers              ; no
    mov byte [BUF], 0xf5        ; cmc instead

.registers:
    call rand                   ; RFLAGS for the instruction
    mov edx, eax                ; ...
    and edx, 0x4d5              ; CF PF AF ZF SF DF at random
    test eax, 0x10000           ; OF half the time
    jz .no_of                   ; ...
    or edx, EFL_OF              ; ...
.no_of:
    or edx, EFL_TF | 2          ; TF: stop after one instruction
    push edx                    ; the iret frame: RFLAGS
    push dword CODE32_SEL       ; cs
    push dword BUF              ; eip
    call window                 ; the registers
    mov ebp, eax                ; ...
    call window                 ; ...
    mov edi, eax                ; ...
    call window                 ; ...
    mov esi, eax                ; ...
    call window                 ; ...
    mov edx, eax                ; ...
    call window                 ; ...
    mov ebx, eax                ; ...
    call rand                   ; a small count
    and eax, 7                  ; 0-7
    mov ecx, eax                ; ...
    call window                 ; the last one
    iret                        ; one instruction, then vector 1

finish:
    mov eax, [faults]           ; the exceptions caught (not #DB)
    out EXIT_PORT, al           ; stop: the runner's chaos counts them
    hlt                         ; (not reached: the exit port stops the guest)

; MMIO_BASE plus a random offset below 4 KiB, in eax.
window:
    call rand                   ; ...
    and eax, 0xfff              ; the offset
    or eax, MMIO_BASE           ; in the window
    ret                         ; done

; The generator: xorshift32. Returns the next number in eax.
rand:
    push edx                    ; keep edx
    mov eax, [rng]              ; the state
    mov edx, eax                ; x
    shl edx, 13                 ; x << 13
    xor eax, edx                ; x ^= x << 13
    mov edx, eax                ; x
    shr edx, 17                 ; x >> 17
    xor eax, edx                ; x ^= x >> 17
    mov edx, eax                ; x
    shl edx, 5                  ; x << 5
    xor eax, edx                ; x ^= x << 5
    mov [rng], eax              ; the new state
    pop edx                     ; edx back
    ret                         ; and the number

; Every exception comes here, from its stub, with the vector on top of the
; error code (0 for the vectors without one), then eip, cs, eflags.
fault:
    mov ax, DATA32_SEL          ; flat data, whatever the instruction loaded
    mov ds, ax                  ; ...
    pop eax                     ; the vector
    pop edx                     ; the error code
    pop ecx                     ; the saved eip
    out REPORT_PORT, eax        ; the vector
    xchg eax, ecx               ; ...
    out REPORT_PORT, eax        ; the eip
    cmp ecx, 1                  ; a debug exception: the step is done
    je next_step                ; ...
    mov eax, edx                ; any other: its error code
    out REPORT_PORT, eax        ; ...
    inc dword [faults]          ; one more caught
    jmp next_step               ; on with the next step

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

rng:    dd 0                    ; the generator's state
steps:  dd 0                    ; steps begun
faults: dd 0                    ; exceptions caught, #DB not counted

forbidden:                      ; the one-byte opcodes that become nop
    db 0x6c, 0x6d, 0x6e, 0x6f   ; ins, outs
    db 0x70, 0x71, 0x72, 0x73, 0x74, 0x75, 0x76, 0x77 ; jcc rel8
    db 0x78, 0x79, 0x7a, 0x7b, 0x7c, 0x7d, 0x7e, 0x7f ; ...
    db 0xe0, 0xe1, 0xe2, 0xe3   ; loopne, loope, loop, jecxz
    db 0xe8, 0xe9, 0xea, 0xeb   ; call, jmp, jmp far, jmp rel8
    db 0x9a, 0xc2, 0xc3, 0xca, 0xcb, 0xcf ; call far, ret, ret far, iret
forbidden_len equ $ - forbidden
forbidden_0f:                   ; the second bytes of 0F xx that become 0B
    db 0x00, 0x01, 0x22, 0x23   ; lldt, ltr, lgdt, lidt, lmsw, invlpg, SVM and VMX, mov to CR and DR
    db 0x05, 0x07, 0x34, 0x35   ; syscall, sysret, sysenter, sysexit
forbidden_0f_len equ $ - forbidden_0f

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
