; guest: mmio-forms
; stage: 10
; mode: prot32
; demonstrates: every mov form on MMIO (88-8B, C6, C7, moffs A0-A3), movzx and movsx, xchg, push and pop of MMIO, the bit tests, and the 32-bit and 16-bit addressing forms, with a segment whose base is the window
;
; The register or memory that receives each value is reported, or the
; window's `mmio-write` line shows it. The addressing forms put the window
; behind every kind of effective address: disp32 alone, base + disp8 and
; disp32 (a negative one too), SIB with index and scale, with no base,
; with esp and ebp as base, and, through a data segment whose base is
; MMIO_BASE (the guest's own GDT, in fs), 16-bit addresses (67 prefix).
; bt, bts, btr and btc with a register offset reach outside the operand
; (the offset is signed); CF is reported (the other flags but ZF are
; undefined, and ZF is left as it was).

%include "rkvm.inc"

bits 32
org LOAD_ADDR

WIN_SEL equ 0x18                ; the guest's GDT: data, base MMIO_BASE, limit 0xffff

; FLAGS mask: report RFLAGS & mask (eax is lost).
%macro FLAGS 1
    pushfd                      ; the flags
    pop eax                     ; ...
    and eax, %1                 ; the defined ones
    out REPORT_PORT, eax        ; reported
%endmacro

; REPORT reg: report a 32-bit register (eax is lost).
%macro REPORT 1
    mov eax, %1                 ; the value
    out REPORT_PORT, eax        ; reported
%endmacro

start:
    mov ebx, MMIO_BASE          ; the echo window
    ; mov, every opcode
    mov ecx, 0x44332211         ; a value
    mov [ebx + 0x10], cl        ; 88: byte from a register
    mov [ebx + 0x11], ch        ; 88: from a high-byte register
    mov [ebx + 0x12], cx        ; 66 89: word
    mov [ebx + 0x14], ecx       ; 89: doubleword
    mov dl, [ebx + 0x14]        ; 8A: byte
    mov dh, [ebx + 0x15]        ; 8A: into a high-byte register
    mov si, [ebx + 0x16]        ; 66 8B: word, the rest of esi kept
    mov edi, [ebx + 0x12]       ; 8B: doubleword
    REPORT edx                  ; 0x00002211
    REPORT esi                  ; 0x00004433
    REPORT edi                  ; 0x22112211: the word at 0x12 was written twice
    mov byte [ebx + 0x18], 0xa5 ; C6: byte immediate
    mov word [ebx + 0x1a], 0xb6c7 ; 66 C7: word immediate
    mov dword [ebx + 0x1c], 0xd8e9fa0b ; C7: doubleword immediate
    mov al, [MMIO_BASE + 0x1c]  ; A0: moffs byte
    out REPORT_PORT, eax        ; al = 0x0b, the rest of eax kept
    mov ax, [MMIO_BASE + 0x1e]  ; 66 A1: moffs word
    out REPORT_PORT, eax        ; ax = 0xd8e9
    mov eax, [MMIO_BASE + 0x18] ; A1: moffs doubleword
    out REPORT_PORT, eax        ; 0xb6c719a5: byte 0x19 never written
    mov [MMIO_BASE + 0x20], al  ; A2: moffs byte
    mov [MMIO_BASE + 0x22], ax  ; 66 A3: moffs word
    mov [MMIO_BASE + 0x24], eax ; A3: moffs doubleword

    ; movzx and movsx
    mov ecx, -1                 ; all ones, to see what is kept
    movzx ecx, byte [ebx + 0x85] ; 0F B6: 0x85
    REPORT ecx                  ; 0x00000085
    movsx ecx, byte [ebx + 0x85] ; 0F BE: 0xffffff85
    REPORT ecx                  ; ...
    movzx ecx, word [ebx + 0x8e] ; 0F B7: 0x8f8e
    REPORT ecx                  ; ...
    movsx ecx, word [ebx + 0x8e] ; 0F BF: 0xffff8f8e
    REPORT ecx                  ; ...
    movsx ecx, word [ebx + 0x70] ; positive: 0x00007170
    REPORT ecx                  ; ...
    mov ecx, 0x55555555         ; the upper half stays for a 16-bit destination
    movzx cx, byte [ebx + 0x90] ; 66 0F B6: cx = 0x0090
    REPORT ecx                  ; 0x55550090
    movsx cx, byte [ebx + 0x90] ; 66 0F BE: cx = 0xff90
    REPORT ecx                  ; 0x5555ff90

    ; xchg with the window: a read and a write each
    mov ecx, 0x0000aa00         ; ch = 0xaa
    xchg [ebx + 0x30], ch       ; 86: ch = 0x30, the window 0xaa
    mov edx, 0x1234bbcc         ; a word
    xchg dx, [ebx + 0x32]       ; 66 87: dx = 0x3332
    mov esi, 0xdeadbeef         ; a doubleword
    xchg [ebx + 0x34], esi      ; 87: esi = 0x37363534
    REPORT ecx                  ; 0x00003000
    REPORT edx                  ; 0x12343332
    REPORT esi                  ; 0x37363534
    mov eax, [ebx + 0x30]       ; the window now
    out REPORT_PORT, eax        ; 0xbbcc31aa

    ; push and pop with a memory operand in the window
    push dword [ebx + 0x40]     ; FF /6: the window to the stack
    push word [ebx + 0x44]      ; 66 FF /6: a word
    pop dword [ebx + 0x48]      ; 8F /0: 0x41404544, the stack to the window
    pop word [ebx + 0x4c]       ; 66 8F /0: the last word
    mov eax, esp                ; balanced again
    out REPORT_PORT, eax        ; 0x7000
    push dword 0x600dcafe       ; a value
    mov esi, 4                  ; an index
    pop dword [ebx + esi * 4 + 0x40] ; pop to a SIB address: 0xc0000050
    REPORT esp                  ; 0x7000

    ; the bit tests: CF reported
    mov dword [ebx + 0x60], 0x0000ff00 ; an operand
    mov dword [ebx + 0x64], 0x00000008 ; and the next one
    bt dword [ebx + 0x60], 8    ; 0F BA /4: bit 8 is set
    FLAGS 0x1                   ; CF = 1
    bts dword [ebx + 0x60], 0   ; 0F BA /5: bit 0 was clear
    FLAGS 0x1                   ; CF = 0
    btr word [ebx + 0x60], 15   ; 0F BA /6: a word
    FLAGS 0x1                   ; CF = 1
    btc dword [ebx + 0x60], 31  ; 0F BA /7
    FLAGS 0x1                   ; CF = 0
    mov ecx, 35                 ; a register offset past the operand
    bt [ebx + 0x60], ecx        ; 0F A3: bit 3 of the doubleword at 0x64
    FLAGS 0x1                   ; CF = 1
    bts [ebx + 0x60], ecx       ; 0F AB: already set
    FLAGS 0x1                   ; CF = 1
    mov ecx, -1                 ; a negative offset
    btr [ebx + 0x60], ecx       ; 0F B3: bit 31 of the doubleword at 0x5c
    FLAGS 0x1                   ; CF = 0: 0x5f has bit 7 clear
    mov cx, 17                  ; a word offset past the operand
    btc [ebx + 0x60], cx        ; 66 0F BB: bit 1 of the word at 0x62
    FLAGS 0x1                   ; ...
    mov cx, -17                 ; backwards, word size
    btc [ebx + 0x60], cx        ; bit 15 of the word at 0x5c
    FLAGS 0x1                   ; ...
    mov eax, [ebx + 0x60]       ; the operand now
    out REPORT_PORT, eax        ; ...

    ; addressing forms: each reads a doubleword of the window
    mov ecx, [dword MMIO_BASE + 0x100] ; mod 00, disp32 alone
    REPORT ecx                  ; 0x03020100
    mov edi, MMIO_BASE + 0x180  ; a base
    mov ecx, [edi - 0x70]       ; disp8, negative
    REPORT ecx                  ; 0x13121110
    mov ecx, [edi + 0x7c]       ; disp8, the largest
    REPORT ecx                  ; 0xfffefdfc
    mov ecx, [edi + 0x200]      ; disp32
    REPORT ecx                  ; 0x83828180
    mov ecx, [edi + 0x84]       ; disp32, just above disp8's range
    REPORT ecx                  ; 0x07060504
    mov esi, 0x10               ; an index
    mov ecx, [ebx + esi * 8 + 0x20] ; SIB: base + index * 8 + disp8
    REPORT ecx                  ; 0xa3a2a1a0
    mov ecx, [ebx + esi]        ; SIB: base + index, no displacement
    REPORT ecx                  ; 0x22112211, written above
    mov ecx, [esi * 2 + MMIO_BASE + 0x300] ; SIB with no base: index * 2 + disp32
    REPORT ecx                  ; 0x23222120
    mov eax, esi                ; ...
    mov ecx, [ebx + eax * 4 - 0x4] ; SIB, negative disp8
    REPORT ecx                  ; 0x3f3e3d3c
    mov ebp, MMIO_BASE + 0x50   ; ebp as a base: ss, which is flat
    mov ecx, [ebp + 0x10]       ; mod 01, rm ebp
    REPORT ecx                  ; 0x80027f01, the bit tests' operand
    mov ecx, [ebp + esi * 1 + 0] ; SIB with ebp base
    REPORT ecx                  ; the same doubleword
    mov edx, esp                ; keep the stack pointer
    mov esp, MMIO_BASE + 0x700  ; esp as a base (nothing is pushed meanwhile)
    mov ecx, [esp + 0x20]       ; SIB, base esp
    mov [esp + 0x28], ecx       ; and a write
    mov esp, edx                ; the stack again
    REPORT ecx                  ; 0x23222120
    lock or dword [ebx + 0x28], 0x00100000 ; a locked read-modify-write
    ds mov ecx, [ebx + 0x28]    ; a redundant segment prefix
    REPORT ecx                  ; ...

    ; a segment whose base is the window, and 16-bit addresses
    lgdt [gdt_descriptor]       ; the runner's GDT and one more descriptor
    mov ax, WIN_SEL             ; the window as a segment
    mov fs, ax                  ; in fs
    mov ecx, [fs:0x100]         ; 64 8B: fs:disp32
    REPORT ecx                  ; 0x03020100
    mov dword [fs:0x800], 0x0f1e2d3c ; a write through fs
    mov ebx, 0x12340800         ; upper halves that 16-bit addresses ignore
    mov esi, 0x56780004         ; ...
    mov ecx, [fs:bx]            ; 67: [bx]
    REPORT ecx                  ; 0x0f1e2d3c
    mov cx, [fs:bx + si]        ; 67: [bx + si]
    REPORT ecx                  ; cx = 0x0504: the rest of ecx kept
    mov ecx, [fs:bx + si - 2]   ; 67: [bx + si + disp8]
    REPORT ecx                  ; 0x05040f1e
    mov edi, 0x9abc0010         ; ...
    mov ecx, [fs:di + 0x100]    ; 67: [di + disp16]
    REPORT ecx                  ; 0x13121110
    mov byte [fs:bx + di], 0x77 ; 67: [bx + di]: 0x810
    mov ecx, [fs:0x80e]         ; what is there
    REPORT ecx                  ; ...
    mov ebp, 0xdef00900         ; ...
    add word [fs:bp + si], 0x101 ; 67: [bp + si], fs instead of ss
    mov ecx, [fs:0x904]         ; ...
    REPORT ecx                  ; 0x07060605 ...
    mov ebx, MMIO_BASE          ; as it was
    hlt                         ; stop

align 8
gdt:
    dq 0                        ; the null descriptor
    dq 0x00CF9A000000FFFF       ; 0x08: flat code, 32-bit
    dq 0x00CF92000000FFFF       ; 0x10: flat data
    dq 0xC04092000000FFFF       ; 0x18: data, base 0xc0000000, limit 0xffff, byte granular
gdt_end:

gdt_descriptor:
    dw gdt_end - gdt - 1        ; limit
    dd gdt                      ; base
