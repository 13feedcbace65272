; guest: mmio-real
; stage: 12
; mode: real
; demonstrates: MMIO from real mode: 16-bit addressing forms, 66 and 67 prefixes, string instructions counting with cx, push and pop of MMIO on a 16-bit stack
;
; Real mode cannot name 0xc0000000 with a selector, but a segment keeps
; the base it was last loaded with: the guest switches CR0.PE on, loads
; fs and es from its own GDT with a 16-bit data segment whose base is
; MMIO_BASE (limit 0xffff), and switches CR0.PE off again, without a far
; jump (cs never changes). Back in real mode, fs: and es: reach the echo
; window with every form of 16-bit address (bx, bp, si, di, their sums,
; disp8 and disp16), with a 66 prefix for doubleword operands and a 67
; prefix for 32-bit addresses. The string instructions use si, di and cx
; only: the upper halves of esi, edi and ecx stay as they were.
;
; Its first stage is 12 because of Intel VMX: until stage 12 brings vm86
; mode, rkvm's VMX backend runs real mode as 16-bit protected mode, where
; the guest's segment loads are refused with an exception exit (vector
; 13). AMD SVM runs it from stage 10 on.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

WIN_SEL equ 0x08                ; the guest's GDT: the window as a 16-bit data segment

; REPORT reg: report a 32-bit register (eax is lost).
%macro REPORT 1
    mov eax, %1                 ; the value
    out REPORT_PORT, eax        ; reported
%endmacro

start:
    cli                         ; no interrupts while the modes change
    lgdt [gdt_descriptor]       ; the guest's GDT
    mov eax, cr0                ; CR0
    or al, 1                    ; PE
    mov cr0, eax                ; protected mode, still 16-bit code
    mov ax, WIN_SEL             ; the window's descriptor
    mov fs, ax                  ; fs: base MMIO_BASE
    mov es, ax                  ; es: the same
    mov eax, cr0                ; CR0
    and al, 0xfe                ; PE off
    mov cr0, eax                ; real mode again; fs and es keep their base
    mov eax, cr0                ; show it
    out REPORT_PORT, eax        ; 0x10: ET

    mov byte [fs:0x10], 0x5a    ; C6 with [disp16]
    mov word [fs:0x12], 0xa55a  ; C7, a word
    mov dword [fs:0x14], 0x12345678 ; 66 C7: a doubleword in 16-bit code
    mov bx, 0x10                ; base registers
    mov si, 0x4                 ; ...
    mov di, 0x2                 ; ...
    mov bp, 0x20                ; ...
    mov ax, [fs:bx]             ; [bx]
    REPORT eax                  ; ax = 0x115a: byte 0x11 never written
    mov eax, [fs:bx + si]       ; 66 8B, [bx + si]
    REPORT eax                  ; 0x12345678
    mov ax, [fs:bx + di]        ; [bx + di]
    REPORT eax                  ; ...0xa55a
    mov al, [fs:bp + si]        ; [bp + si], fs instead of ss
    REPORT eax                  ; al = 0x24
    mov ax, [fs:bp + di + 0x7f] ; [bp + di + disp8]
    REPORT eax                  ; 0xa2a1
    mov ax, [fs:si + 0x1000]    ; [si + disp16]: past the window's 4 KiB
    REPORT eax                  ; 0xffff: reads outside the window are all ones
    mov ax, [fs:di - 0x1]       ; [di + disp8], negative
    REPORT eax                  ; 0x0201
    mov ax, [fs:bp]             ; [bp + 0]: mod 01, the disp8 0
    REPORT eax                  ; 0x2120
    mov ax, [fs:bx + 0x300]     ; [bx + disp16]
    REPORT eax                  ; 0x1110
    mov ebx, 0x00010008         ; bx = 8, and bits above 16
    mov ax, [fs:bx]             ; 16-bit address: 8
    REPORT eax                  ; 0x0908
    mov ecx, 3                  ; an index
    mov eax, [fs:ebx + ecx * 4 - 0x10000] ; 67: a 32-bit address, SIB: 0x14
    REPORT eax                  ; 0x12345678
    mov bx, 0x10                ; as before

    ; arithmetic, exchange, bit test, movzx and movsx with 16-bit addresses
    add word [fs:bx + si], 0x8889 ; 0x5678 + 0x8889 = 0xdf01
    pushf                       ; the flags
    pop ax                      ; ...
    and ax, 0x8d5               ; the six status flags
    REPORT eax                  ; SF, AF
    sub dword [fs:bx + si], 0x1 ; 66 83 /5: a doubleword
    mov ecx, 0x1111aaaa         ; ...
    xchg cx, [fs:bx + si + 2]   ; 87: a word
    REPORT ecx                  ; 0x11111234
    mov eax, 0xc7               ; ...
    neg byte [fs:di]            ; 0x02 -> 0xfe
    inc dword [fs:0x40]         ; 66 FF /0
    bts word [fs:0x50], 4       ; 0F BA /5
    setc al                     ; CF (not emulated: a register)
    REPORT eax                  ; al = 1: bit 4 of 0x5150 was set
    movzx eax, byte [fs:di]     ; 66 0F B6: 0xfe
    REPORT eax                  ; ...
    movsx eax, word [fs:bx + si] ; 66 0F BF
    REPORT eax                  ; ...

    ; push and pop of the window: ss:sp is a 16-bit stack
    mov eax, esp                ; the stack pointer
    REPORT eax                  ; 0x7000
    push word [fs:0x60]         ; FF /6
    push dword [fs:0x64]        ; 66 FF /6
    pop word [fs:0x70]          ; 8F /0: the low word of 0x67666564
    pop dword [fs:0x74]         ; 66 8F /0: 0x6765 then 0x6160
    mov eax, esp                ; balanced again
    REPORT eax                  ; 0x7000

    ; strings: si, di and cx alone count
    mov ax, 0                   ; ds = 0: RAM
    mov ds, ax                  ; ...
    cld                         ; upwards
    mov esi, 0xabcd0000 + text  ; si = the text; the upper half is ignored
    mov edi, 0x55550100         ; es:di = window + 0x100
    mov ecx, 0x00070004         ; cx = 4
    rep movsb                   ; RAM -> MMIO, four bytes
    REPORT esi                  ; 0xabcd0000 + text + 4: only si moved
    REPORT edi                  ; 0x55550104
    REPORT ecx                  ; 0x00070000
    std                         ; downwards
    mov di, 0x20e               ; the window
    mov cx, 3                   ; three words
    mov ax, 0xbeef              ; the value
    rep stosw                   ; fill down
    REPORT edi                  ; 0x55550208
    cld                         ; upwards
    mov si, 0x200               ; the window again, read through fs
    mov cx, 2                   ; two words
    mov di, buffer              ; RAM... but es is the window
    mov ax, 0                   ; es = 0 for RAM
    mov es, ax                  ; (es loses the window's base)
    rep fs movsw                ; MMIO (fs:si) -> RAM (es:di)
    REPORT esi                  ; 0xabcd0204
    mov eax, [buffer]           ; what arrived
    REPORT eax                  ; 0x03020100: bytes the window never had written
    fs lodsd                    ; 66 fs AD: a doubleword
    REPORT eax                  ; 0x07060504
    cmp eax, eax                ; flags all defined for the final registers (bts left some undefined)
    hlt                         ; stop

text:
    db "mmio"                   ; four bytes to copy
buffer:
    dd 0                        ; the window copied back

align 8
gdt:
    dq 0                        ; the null descriptor
    dq 0xC00092000000FFFF       ; 0x08: 16-bit data, base 0xc0000000, limit 0xffff
gdt_end:

gdt_descriptor:
    dw gdt_end - gdt - 1        ; limit
    dd gdt                      ; base
