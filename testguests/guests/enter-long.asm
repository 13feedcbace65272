; guest: enter-long
; stage: 8
; mode: prot32
; demonstrates: the guest enters 64-bit long mode itself (PAE, EFER.LME, CR0.PG, far jump)
;
; The steps of the manuals: four-level page tables, CR4.PAE, CR3, EFER.LME
; through wrmsr, then CR0.PG, which activates long mode (EFER.LMA) in
; 32-bit compatibility mode; a far jump to a code segment with L=1 starts
; 64-bit code. A Linux KVM client must give the vCPU a CPUID table that
; says "long mode" (KVM_SET_CPUID2), or EFER.LME is a reserved bit.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

PML4_G    equ SCRATCH_ADDR          ; the guest's own PML4
PDPT_G    equ SCRATCH_ADDR + 0x1000 ; its PDPT
PD_G      equ SCRATCH_ADDR + 0x2000 ; its page directory
PTE_PW    equ 0x003                 ; present, writable
PDE_2M    equ 0x083                 ; present, writable, 2 MiB page
MSR_EFER  equ 0xc0000080            ; the extended feature enable register
EFER_LME  equ 0x100                 ; long mode enable

start:
    mov edi, PML4_G             ; clear the three table pages
    xor eax, eax                ; with zeros
    mov ecx, 3 * 1024           ; 3 pages of 1024 doublewords
    cld                         ; upwards
    rep stosd                   ; no entry is present now
    mov dword [PML4_G], PDPT_G | PTE_PW ; 0-512 GiB: the PDPT
    mov dword [PDPT_G], PD_G | PTE_PW   ; 0-1 GiB: the directory
    mov dword [PD_G], 0 | PDE_2M        ; 0-2 MiB: identity, one large page

    lgdt [gdt_descriptor]       ; a GDT with a 64-bit code segment
    mov eax, cr4                ; CR4
    or eax, 0x20                ; CR4.PAE
    mov cr4, eax                ; on
    mov eax, PML4_G             ; the PML4
    mov cr3, eax                ; into CR3
    mov ecx, MSR_EFER           ; EFER
    rdmsr                       ; edx:eax = EFER
    or eax, EFER_LME            ; long mode enable
    wrmsr                       ; EFER.LME = 1
    mov eax, cr0                ; CR0
    or eax, 0x80000000          ; CR0.PG
    mov cr0, eax                ; paging on: long mode is active (compatibility mode)
    jmp CODE64_SEL:long_mode    ; far jump to 64-bit code

bits 64
long_mode:
    mov ecx, MSR_EFER           ; EFER again
    rdmsr                       ; eax = EFER
    out REPORT_PORT, eax        ; 0x500: LME and LMA
    mov rax, 0x0123456789abcdef ; a 64-bit value
    mov r15, rax                ; kept in r15 for the final registers
    out REPORT_PORT, eax        ; its low half, 0x89abcdef
    push rax                    ; a 64-bit push: 8 bytes
    mov eax, [rsp + 4]          ; the high half, from memory
    out REPORT_PORT, eax        ; 0x01234567
    add rsp, 8                  ; drop it (and leave every flag defined)
    mov esi, done_text          ; say so
    mov ecx, done_len           ; the length
    mov dx, CONSOLE_PORT        ; on the console
    rep outsb                   ; the message
    hlt                         ; stop

done_text:
    db "now in 64-bit long mode", 10
done_len equ $ - done_text

align 8
gdt:
    dq 0                        ; the null descriptor
    dq 0x00CF9A000000FFFF       ; 0x08: flat code, 32-bit
    dq 0x00CF92000000FFFF       ; 0x10: flat data
    dq 0x00AF9A000000FFFF       ; 0x18: code, 64-bit (L=1, D=0)
gdt_end:

gdt_descriptor:
    dw gdt_end - gdt - 1        ; limit
    dd gdt                      ; base
