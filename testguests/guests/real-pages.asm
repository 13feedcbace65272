; guest: real-pages
; stage: 12
; mode: real
; demonstrates: real-mode code touching many 4 KiB pages besides its own: segment loads, a stack on another page, string moves across page boundaries, a far call
;
; The hypervisor backs guest memory page by page, and in real mode it has
; to map each page the guest touches as the guest touches it (under VMX
; without unrestricted guest, real mode even runs in vm86 mode on tables the
; hypervisor builds). The guest loads ds, es, ss, fs and gs with paragraphs
; in other pages, stores and loads words there, straddles page boundaries
; with a word, with pushes and with `rep movsw` and `rep stosb`, calls code
; it copied to another page, and reports what it finds with `out`. Every
; address is in the guest's free memory from 0x10000 on (SCRATCH_ADDR),
; below the reserved top of memory.
;
; Its first stage is 12 because of Intel VMX: until stage 12 brings vm86
; mode, rkvm's VMX backend runs real mode as 16-bit protected mode, where a
; segment load means a descriptor, so `mov ds, ax` is refused with an
; exception exit to userspace (vector 13). AMD SVM runs real mode as it is,
; and this guest passes there from stage 06 on; `real-store` is the part of
; it (plain stores to other pages) that both backends run from stage 06.

%include "rkvm.inc"

bits 16
org LOAD_ADDR

start:
    mov ax, SCRATCH_ADDR >> 4   ; paragraph 0x1000: physical 0x10000
    mov ds, ax                  ; ds there
    mov word [0x0000], 0x1111   ; a store to physical 0x10000
    mov word [0x1000], 0x2222   ; and one to the next page, 0x11000
    mov ax, [0x0000]            ; load them back
    add ax, [0x1000]            ; and add
    out REPORT_PORT, ax         ; 0x3333

    mov ax, 0x1200              ; paragraph 0x1200: physical 0x12000
    mov es, ax                  ; es there
    mov word [es:0x0fff], 0x4455 ; a word across a page boundary: 0x12fff and 0x13000
    mov al, [es:0x0fff]         ; its low byte, from the first page
    mov ah, [es:0x1000]         ; its high byte, from the second
    out REPORT_PORT, ax         ; 0x4455

    mov ax, 0x1400              ; paragraph 0x1400: physical 0x14000
    mov ss, ax                  ; the stack there (no interrupt before the next instruction)
    mov sp, 0x1004              ; top: physical 0x15004
    push word 0x0102            ; at 0x15002
    push word 0x0304            ; at 0x15000
    push word 0x0506            ; at 0x14ffe: the page below
    pop ax                      ; 0x0506
    pop bx                      ; 0x0304
    add ax, bx                  ; 0x080a
    pop bx                      ; 0x0102
    add ax, bx                  ; 0x090c
    out REPORT_PORT, ax         ; 0x090c
    mov ax, sp                  ; the stack is empty again
    out REPORT_PORT, ax         ; 0x1004

    mov di, 0x0f00              ; a source of 256 words at ds:0x0f00 (0x10f00-0x110ff)
    mov ax, es                  ; keep es
    mov bx, ds                  ; stosw writes es:di: make es = ds
    mov es, bx                  ; for the fill
    mov bx, ax                  ; (es was 0x1200)
    mov ax, 0x0100              ; the first word
    mov cx, 256                 ; 256 words
    cld                         ; upwards
fill:
    stosw                       ; one word
    add ax, 0x0203              ; the next value
    loop fill                   ; all of them
    mov ax, 0x1600              ; paragraph 0x1600
    mov es, ax                  ; the destination: es:0x0f80, 0x16f80-0x1717f
    mov si, 0x0f00              ; from ds:0x0f00
    mov di, 0x0f80              ; to es:0x0f80
    mov cx, 256                 ; 256 words
    rep movsw                   ; across a page boundary at both ends
    mov si, 0x0f80              ; now sum the destination
    mov cx, 256                 ; 256 words
    xor dx, dx                  ; the sum
    push ds                     ; keep ds
    mov ax, es                  ; lodsw reads ds:si
    mov ds, ax                  ; so ds = es for the sum
sum_words:
    lodsw                       ; one word
    add dx, ax                  ; added
    loop sum_words              ; all of them
    pop ds                      ; ds back
    mov ax, dx                  ; the sum
    out REPORT_PORT, ax         ; 0x7e80: 256 * 0x0100 + 0x0203 * (0 + 1 + ... + 255), 16 bits
    mov ax, [es:0x117e]         ; the last word moved, at 0x1717e
    out REPORT_PORT, ax         ; 0x01fd: 0x0100 + 255 * 0x0203, 16 bits

    mov ax, 0x1800              ; paragraph 0x1800
    mov es, ax                  ; es:0x0ff0: 0x18ff0-0x1902f
    mov di, 0x0ff0              ; the first byte
    mov al, 0x5a                ; the value
    mov cx, 0x40                ; 64 bytes
    rep stosb                   ; across the page boundary at 0x19000
    mov si, 0x0fef              ; from one byte before, 66 bytes
    mov cx, 66                  ; one byte after too
    xor dx, dx                  ; the sum
    mov bx, es                  ; es:si
    mov fs, bx                  ; as fs:si
sum_bytes:
    movzx ax, byte [fs:si]      ; one byte
    add dx, ax                  ; added
    inc si                      ; the next
    loop sum_bytes              ; all of them
    mov ax, dx                  ; the sum
    out REPORT_PORT, ax         ; 0x1680 = 64 * 0x5a: nothing before or after

    mov ax, 0xf000              ; paragraph 0xf000: physical 0xf0000, far up
    mov gs, ax                  ; gs there
    mov word [gs:0x0ffe], 0xf0f0 ; a store there
    mov ax, 0x8000              ; paragraph 0x8000: physical 0x80000
    mov fs, ax                  ; fs there
    mov word [fs:0x0002], 0x0808 ; a store there
    mov ax, [gs:0x0ffe]         ; load both back
    add ax, [fs:0x0002]         ; and add
    out REPORT_PORT, ax         ; 0xf8f8

    mov ax, 0x2000              ; paragraph 0x2000: physical 0x20000
    mov es, ax                  ; the copy's destination
    xor di, di                  ; at es:0
    xor ax, ax                  ; and the source,
    mov ds, ax                  ; ds = 0, where the image is
    mov si, far_code            ; the code to copy
    mov cx, far_code_len        ; its length
    rep movsb                   ; copied
    call 0x2000:0x0000          ; a far call to it: code from another page
    out REPORT_PORT, ax         ; 0x7777, which it returned
    mov ax, cs                  ; back in our own segment
    out REPORT_PORT, ax         ; 0
    hlt                         ; stop

; Code that runs wherever it is copied: returns 0x7777 in ax.
far_code:
    mov ax, 0x7777              ; the answer
    retf                        ; a far return
far_code_len equ $ - far_code
