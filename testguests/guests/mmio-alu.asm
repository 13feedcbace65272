; guest: mmio-alu
; stage: 10
; mode: prot32
; demonstrates: every ALU operation, test, inc, dec, neg and not on an MMIO operand of 1, 2 and 4 bytes, with the flags each sets
;
; Each case writes a known value into the echo window, loads RFLAGS with
; popfd (all six status flags set, or all clear: adc and sbb see both
; carries), runs one instruction whose memory operand is in the window,
; and reports RFLAGS masked to the flags the instruction defines: all six
; for the arithmetic, all but AF for the logical operations and test
; (their AF is undefined). A result stored in the window is the data of
; an `mmio-write` line; a result in a register is reported. The forms:
; OP r/m, reg (00, 01 ...), OP reg, r/m (02, 03 ...), OP r/m, imm (80,
; 81), OP r/m, simm8 (83) and once 82, the 32-bit-only alias of 80.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

ARITH   equ 0x8d5               ; OF SF ZF AF PF CF
LOGIC   equ 0x8c5               ; OF SF ZF PF CF: AF is undefined
ALLSET  equ 0x8d7               ; every status flag set (and the fixed bit 1)
NONE    equ 0x002               ; every status flag clear

%assign off 0                   ; the next case's offset in the window

; SETFLAGS value: RFLAGS = value.
%macro SETFLAGS 1
    push dword %1               ; the flags wanted
    popfd                       ; into RFLAGS
%endmacro

; FLAGS mask: report RFLAGS & mask (eax is lost).
%macro FLAGS 1
    pushfd                      ; the flags the instruction left
    pop eax                     ; ...
    and eax, %1                 ; the ones it defines
    out REPORT_PORT, eax        ; reported
%endmacro

; One operation in every form and size: op, flags mask, then for byte,
; word and dword the window's value, a register value and an immediate,
; and for word and dword a sign-extended 8-bit immediate.
%macro ALU 2
    ; OP r/m, reg: the result in the window
    mov byte [ebx + off], 0x9c  ; the operand
    mov edx, 0xe500             ; dh = 0xe5
    SETFLAGS ALLSET             ; flags in
    %1 byte [ebx + off], dh     ; byte, a high-byte register
    FLAGS %2                    ; flags out
%assign off off + 4
    mov word [ebx + off], 0x8f3c ; the operand
    mov ecx, 0x70c4             ; the register
    SETFLAGS NONE               ; flags in
    %1 word [ebx + off], cx     ; word
    FLAGS %2                    ; flags out
%assign off off + 4
    mov dword [ebx + off], 0x7ffffff0 ; the operand
    mov ecx, 0x90000010         ; the register
    SETFLAGS ALLSET             ; flags in
    %1 dword [ebx + off], ecx   ; dword
    FLAGS %2                    ; flags out
%assign off off + 4
    ; OP reg, r/m: the result in a register
    mov byte [ebx + off], 0x80  ; the operand
    mov ecx, 0x11111101         ; cl = 0x01
    SETFLAGS NONE               ; flags in
    %1 cl, byte [ebx + off]     ; byte
    FLAGS %2                    ; flags out
    mov eax, ecx                ; the result
    out REPORT_PORT, eax        ; reported
%assign off off + 4
    mov word [ebx + off], 0x0001 ; the operand
    mov esi, 0x2222ffff         ; si = 0xffff
    SETFLAGS ALLSET             ; flags in
    %1 si, word [ebx + off]     ; word
    FLAGS %2                    ; flags out
    mov eax, esi                ; the result
    out REPORT_PORT, eax        ; reported
%assign off off + 4
    mov dword [ebx + off], 0x0badf00d ; the operand
    mov edi, 0x0badf00d         ; the same value
    SETFLAGS NONE               ; flags in
    %1 edi, dword [ebx + off]   ; dword
    FLAGS %2                    ; flags out
    mov eax, edi                ; the result
    out REPORT_PORT, eax        ; reported
%assign off off + 4
    ; OP r/m, imm: the result in the window
    mov byte [ebx + off], 0x85  ; the operand
    SETFLAGS ALLSET             ; flags in
    %1 byte [ebx + off], 0x7b   ; byte (80)
    FLAGS %2                    ; flags out
%assign off off + 4
    mov word [ebx + off], 0x7fff ; the operand
    SETFLAGS NONE               ; flags in
    %1 word [ebx + off], strict word 0x8001 ; word (81, imm16)
    FLAGS %2                    ; flags out
%assign off off + 4
    mov dword [ebx + off], 0x80000000 ; the operand
    SETFLAGS ALLSET             ; flags in
    %1 dword [ebx + off], strict dword 0x80000001 ; dword (81, imm32)
    FLAGS %2                    ; flags out
%assign off off + 4
    mov word [ebx + off], 0x0002 ; the operand
    SETFLAGS NONE               ; flags in
    %1 word [ebx + off], strict byte -3 ; word (83, imm8 sign-extended)
    FLAGS %2                    ; flags out
%assign off off + 4
    mov dword [ebx + off], 0x0000ff80 ; the operand
    SETFLAGS ALLSET             ; flags in
    %1 dword [ebx + off], strict byte 0x7f ; dword (83)
    FLAGS %2                    ; flags out
%assign off off + 4
%endmacro

; ONE op, size, value, flags in, mask: a one-operand instruction on the
; window.
%macro ONE 5
    mov %2 [ebx + off], %3      ; the operand
    SETFLAGS %4                 ; flags in
    %1 %2 [ebx + off]           ; the operation
    FLAGS %5                    ; flags out
%assign off off + 4
%endmacro

; TEST size, value, reg or imm, flags in: test r/m, reg or r/m, imm.
%macro TESTM 4
    mov %1 [ebx + off], %2      ; the operand
    SETFLAGS %4                 ; flags in
    test %1 [ebx + off], %3     ; nothing is written
    FLAGS LOGIC                 ; flags out
%assign off off + 4
%endmacro

start:
    mov ebx, MMIO_BASE          ; the echo window
    ALU add, ARITH              ; add
    ALU or, LOGIC               ; or
    ALU adc, ARITH              ; adc
    ALU sbb, ARITH              ; sbb
    ALU and, LOGIC              ; and
    ALU sub, ARITH              ; sub
    ALU xor, LOGIC              ; xor
    ALU cmp, ARITH              ; cmp: nothing is written

    mov byte [ebx + off], 0xf0  ; the operand
    SETFLAGS ALLSET             ; flags in
    db 0x82, 0x83               ; add byte [ebx + disp32], imm8 (82 /0 ib)
    dd off                      ; the displacement
    db 0x20                     ; the immediate
    FLAGS ARITH                 ; flags out: 0x10 and a carry
%assign off off + 4

    mov ecx, 0x000f0f80         ; registers for test
    TESTM byte, 0x81, cl, NONE  ; test r/m8, r8 (84): SF
    TESTM word, 0xf000, cx, ALLSET ; test r/m16, r16 (85): ZF
    TESTM dword, 0x00ff00ff, ecx, NONE ; test r/m32, r32 (85)
    TESTM byte, 0x7e, 0x81, ALLSET ; test r/m8, imm8 (F6 /0): ZF
    TESTM word, 0x8001, 0x8000, NONE ; test r/m16, imm16 (F7 /0)
    TESTM dword, 0x12345678, 0xf0000007, ALLSET ; test r/m32, imm32 (F7 /0)

    ONE inc, byte, 0x7f, NONE, ARITH ; inc: overflow, AF; CF stays 0
    ONE inc, word, 0xffff, ALLSET, ARITH ; inc: zero; CF stays 1
    ONE inc, dword, 0x1234567f, NONE, ARITH ; inc: no overflow
    ONE dec, byte, 0x80, ALLSET, ARITH ; dec: overflow, AF
    ONE dec, word, 0x0001, NONE, ARITH ; dec: zero
    ONE dec, dword, 0x00000000, ALLSET, ARITH ; dec: 0xffffffff
    ONE neg, byte, 0x00, ALLSET, ARITH ; neg 0: CF clear
    ONE neg, word, 0x8000, NONE, ARITH ; neg of the smallest: overflow
    ONE neg, dword, 0x00000001, NONE, ARITH ; neg 1: CF, SF
    ONE not, byte, 0x5a, ALLSET, ARITH ; not: no flag changes
    ONE not, word, 0x1234, NONE, ARITH ; not
    ONE not, dword, 0xffff0000, ALLSET, ARITH ; not

    mov eax, off                ; bytes of the window used
    out REPORT_PORT, eax        ; reported
    SETFLAGS NONE               ; a quiet RFLAGS for the final registers
    hlt                         ; stop
