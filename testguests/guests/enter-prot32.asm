; guest: enter-prot32
; stage: 8
; mode: real
; demonstrates: a real-mode guest enters 32-bit protected mode itself (lgdt, CR0.PE, far jump)
;
; The GDT holds the flat descriptors of stage 01: code 0x00CF9A000000FFFF
; and data 0x00CF92000000FFFF. Setting CR0.PE alone changes nothing visible;
; the far jump loads cs from the GDT and starts 32-bit code.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    cli                         ; no interrupts while the modes change
    lgdt [gdt_descriptor]       ; the new GDT
    mov eax, cr0                ; the control register
    or eax, 1                   ; CR0.PE: protected mode
    mov cr0, eax                ; on: still 16-bit code until cs reloads
    jmp CODE32_SEL:protected    ; far jump: cs = flat 32-bit code

bits 32
protected:
    mov ax, DATA32_SEL          ; flat 32-bit data
    mov ds, ax                  ; for ds
    mov es, ax                  ; es
    mov ss, ax                  ; and ss
    mov esp, STACK_TOP          ; a 32-bit stack pointer
    mov eax, cr0                ; what CR0 is now
    out REPORT_PORT, eax        ; 0x00000011: ET and PE
    mov esi, arrived            ; say so
    mov ecx, arrived_len        ; the length
    mov dx, CONSOLE_PORT        ; on the console
    cld                         ; upwards
    rep outsb                   ; the message
    hlt                         ; stop

arrived:
    db "now in 32-bit protected mode", 10
arrived_len equ $ - arrived

align 8
gdt:
    dq 0                        ; the null descriptor
    dq 0x00CF9A000000FFFF       ; 0x08: flat code, 32-bit, 4 GiB
    dq 0x00CF92000000FFFF       ; 0x10: flat data, 32-bit, 4 GiB
gdt_end:

gdt_descriptor:
    dw gdt_end - gdt - 1        ; limit
    dd gdt                      ; base
