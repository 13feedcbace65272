; guest: cpuid
; stage: 6
; mode: prot32
; demonstrates: cpuid, answered by the runner's fixed table on every backend
;
; In 2006 every cpuid left the guest as KVM_EXIT_CPUID and userspace filled
; in eax, ebx, ecx and edx; today's KVM answers in the kernel from the table
; userspace gave it with KVM_SET_CPUID2. Either way the runner's values come
; back; the guest reports them, so the trace shows them on both backends.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

start:
    mov eax, CPUID_BASE_LEAF    ; leaf 0x40000000: the hypervisor's signature
    xor ecx, ecx                ; subleaf 0
    cpuid                       ; eax = highest leaf, ebx:ecx:edx = signature
    mov [signature], ebx        ; the signature's first four characters
    mov [signature + 4], ecx    ; the next four
    mov [signature + 8], edx    ; the last four
    out REPORT_PORT, eax        ; report the highest leaf: 0x40000001

    mov esi, signature          ; print the signature
    mov ecx, signature_len      ; with its newline
    mov dx, CONSOLE_PORT        ; on the console
    cld                         ; upwards
    rep outsb                   ; "rkvm-run CPU"

    mov eax, CPUID_INFO_LEAF    ; leaf 0x40000001
    xor ecx, ecx                ; subleaf 0
    cpuid                       ; the runner's version and date
    out REPORT_PORT, eax        ; 0x00020614
    mov eax, ebx                ; ebx
    out REPORT_PORT, eax        ; 0x20061210
    mov eax, ecx                ; ecx
    out REPORT_PORT, eax        ; 0
    mov eax, edx                ; edx
    out REPORT_PORT, eax        ; 0
    hlt                         ; stop

signature:
    times 12 db 0               ; filled in by the first cpuid
    db 10                       ; a newline to end the console line
signature_len equ $ - signature
