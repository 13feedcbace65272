; guest: chaos-paging
; stage: 8
; mode: prot32
; memory: 0x803000
; seed: ebx
; demonstrates: random page-table entries, CR0, CR3, CR4 and EFER from a seed, then memory touched: every run must end in a way a guest may end
;
; Run by `rkvm-run chaos`, never compared with a golden trace: the runner
; puts the seed in ebx, and the guest draws everything from it with a
; xorshift generator. It builds a 32-bit and a PAE set of page tables, then
; for ROUNDS rounds does one to four random operations (an entry of a page
; table or directory overwritten with random bits, reserved ones included,
; or one bit of it flipped; CR0, CR4 or EFER changed by random bits; CR3
; loaded; paging turned off and on again in 32-bit or PAE mode; INVLPG)
; and four random touches of memory (reads, writes, locked writes, string
; writes, a call). Every exception comes to a handler that reports the
; vector, the error code, CR2 and eip, and goes on with the next round;
; after MAX_FAULTS faults, or after the last round, the guest writes the
; number of faults it caught to the exit port. A fault the handler cannot
; be reached for ends in a triple fault.
;
; The guest must never run away (a run that does not stop is a failure of
; the hypervisor), so the chaos has limits that keep its own code intact:
; - The first 256 KiB (CRITICAL: the GDT, the stack, this code, the tables)
;   are mapped to themselves by entries the chaos never writes, under
;   directory entries it never writes, and nothing else ever maps them.
; - Physical 4-8 MiB (C3_AREA) holds only the bytes 0xc3 (`ret`) and 0xe3:
;   a call into it returns (ecx is 1, so an 0xe3, `jecxz`, never jumps).
;   The processor can only turn a 0xc3 there into 0xe3 (the accessed bit).
; - A random entry of a page table whose frame lies below 16 MiB is moved
;   into C3_AREA (bits 21:0 kept), so that it maps a page of C3_AREA or
;   one above memory, as a 4 KiB, 2 MiB or 4 MiB page; the entries of the
;   directories (and PDPT) always name a frame in C3_AREA. Only the entries
;   the guest built itself point to its tables, and only at the level where
;   they are tables: a table is never a page of data or code.
; - No table is ever looked for above memory: with CR3 (or, it seems, a
;   directory entry) pointing to a guest-physical address without memory,
;   Linux's KVM with nested paging (kvm_amd npt=1, Linux 6.1, under QEMU
;   7.2) was seen to stay at one instruction for ever, while the same runs
;   with shadow paging (npt=0) ended. A page above memory is reached only
;   as a page of data (an MMIO exit) or code (KVM cannot fetch there: an
;   internal-error exit, which ends the run).
; - The guest writes only 0xc3 bytes; it never copies memory.
; - CR0.PE stays 1; CR4.PAE changes only while paging is off; CR3 is
;   loaded with the root of the current paging mode, or, rarely, with an
;   empty page, after which nothing is mapped: the next fetch is a triple
;   fault.
; - Setting EFER.LME and then paging enters long mode, where the tables
;   of PAE paging and this 32-bit IDT make the next fetch a triple fault.

%include "rkvm.inc"

bits 32
org LOAD_ADDR

CRITICAL   equ 0x40000              ; linear and physical 0 up to here: mapped to itself
C3_AREA    equ 0x400000             ; physical: 4 MiB of 0xc3
C3_SIZE    equ 0x400000             ; ...
LOW_FRAMES equ 0x1000000            ; a random entry's frame below this moves into C3_AREA
PD_A       equ 0x10000              ; 32-bit paging: the page directory (root A)
PT_A0      equ 0x11000              ; its page table of 0-4 MiB: entries 0-0x3f are CRITICAL
PT_A1      equ 0x12000              ; its page table of 4-8 MiB
PT_A2      equ 0x13000              ; its page table of 1 GiB
PDPT_B     equ 0x14000              ; PAE paging: the PDPT (root B)
PD_B0      equ 0x15000              ; its directory of 0-1 GiB
PT_B0      equ 0x16000              ; its page table of 0-2 MiB: entries 0-0x3f are CRITICAL
PT_B1      equ 0x17000              ; its page table of 2-4 MiB
PD_B1      equ 0x18000              ; its directory of 1-2 GiB
PT_B2      equ 0x19000              ; its page table of 1 GiB
ZERO_ROOT  equ 0x1f000              ; a page that stays zero: nothing is present
ROUNDS     equ 24                   ; rounds of operations and touches
MAX_FAULTS equ 12                   ; the guest stops after this many faults
TOUCHES    equ 4                    ; touches per round
PTE_PW     equ 0x003                ; present, writable
PDE_BIG    equ 0x083                ; present, writable, large page (PS)
CR0_PG     equ 0x80000000           ; paging
CR0_CHAOS  equ 0x6005002e           ; CD, NW, AM, WP, NE, TS, EM, MP: the bits the chaos flips
CR4_PAE    equ 0x20                 ; PAE paging
CR4_CHAOS  equ 0x00300fdc           ; SMAP, SMEP, UMIP, OSXMMEXCPT, OSFXSR, PCE, PGE, MCE, PSE, DE, TSD
MSR_EFER   equ 0xc0000080           ; the extended feature enable register
EFER_SAFE  equ 0x801                ; NXE and SCE: flipped freely
EFER_LME   equ 0x100                ; long mode enable: set only now and then

start:
    mov eax, ebx                ; the seed the runner gave
    out REPORT_PORT, eax        ; shows in the trace
    lea eax, [ebx + 1]          ; seed + 1
    imul eax, eax, 0x9e3779b1   ; spread over all bits
    or eax, 1                   ; never 0, where xorshift would stay
    mov [rng], eax              ; the generator's state
    lidt [idt_descriptor]       ; every exception to our handler
    cld                         ; strings upwards

    mov edi, C3_AREA            ; fill C3_AREA
    mov eax, 0xc3c3c3c3         ; with `ret`
    mov ecx, C3_SIZE / 4        ; all of it
    rep stosd                   ; (the tables below are zero, as all memory is at first)

    mov edi, PT_A0              ; root A's first table: entries 0-0x3f
    mov ecx, CRITICAL >> 12     ; map CRITICAL to itself
    mov edx, 4                  ; 4-byte entries
    call identity               ; ...
    mov ecx, 1024 - (CRITICAL >> 12) ; the rest of it
    call to_c3                  ; into C3_AREA
    mov edi, PT_A1              ; root A's second table
    mov ecx, 1024               ; whole
    call to_c3                  ; into C3_AREA
    mov edi, PT_A2              ; root A's table at 1 GiB
    mov ecx, 1024               ; whole
    call to_c3                  ; into C3_AREA
    mov dword [PD_A], PT_A0 | PTE_PW ; 0-4 MiB: never written again
    mov dword [PD_A + 1 * 4], PT_A1 | PTE_PW ; 4-8 MiB
    mov dword [PD_A + 2 * 4], C3_AREA | PDE_BIG ; 8-12 MiB: C3_AREA, a 4 MiB page when PSE is on
    mov dword [PD_A + 256 * 4], PT_A2 | PTE_PW ; 1 GiB
    mov dword [PD_A + 257 * 4], C3_AREA | PDE_BIG ; 1 GiB + 4 MiB

    mov edi, PT_B0              ; root B's first table: entries 0-0x3f
    mov ecx, CRITICAL >> 12     ; map CRITICAL to itself
    mov edx, 8                  ; 8-byte entries
    call identity               ; ...
    mov ecx, 512 - (CRITICAL >> 12) ; the rest of it
    call to_c3                  ; into C3_AREA
    mov edi, PT_B1              ; root B's second table
    mov ecx, 512                ; whole
    call to_c3                  ; into C3_AREA
    mov edi, PT_B2              ; root B's table at 1 GiB
    mov ecx, 512                ; whole
    call to_c3                  ; into C3_AREA
    mov dword [PDPT_B], PD_B0 | 1 ; 0-1 GiB: never written again
    mov dword [PDPT_B + 1 * 8], PD_B1 | 1 ; 1-2 GiB
    mov dword [PD_B0], PT_B0 | PTE_PW ; 0-2 MiB: never written again
    mov dword [PD_B0 + 1 * 8], PT_B1 | PTE_PW ; 2-4 MiB
    mov dword [PD_B0 + 2 * 8], C3_AREA | PDE_BIG ; 4-6 MiB: a 2 MiB page
    mov dword [PD_B0 + 3 * 8], C3_AREA + 0x200000 | PDE_BIG ; 6-8 MiB
    mov dword [PD_B1], PT_B2 | PTE_PW ; 1 GiB
    mov dword [PD_B1 + 1 * 8], C3_AREA | PDE_BIG ; 1 GiB + 2 MiB

    call op_mode                ; paging on, 32-bit or PAE, by chance

next_round:
    mov esp, STACK_TOP          ; the handler comes here too, from anywhere
    inc dword [round]           ; one more round
    cmp dword [round], ROUNDS   ; all done?
    ja finish                   ; yes
    call rand                   ; how many operations
    and eax, 3                  ; 0-3
    inc eax                     ; 1-4
    mov [count], eax            ; counted down
.operation:
    call rand                   ; which operation
    and eax, 15                 ; one of 16
    call [operations + eax * 4] ; done
    dec dword [count]           ; the next
    jnz .operation              ; all of them
    mov dword [count], TOUCHES  ; then the touches
.touch:
    call touch                  ; one
    dec dword [count]           ; the next
    jnz .touch                  ; all of them
    jmp next_round              ; and again

finish:
    mov eax, [faults]           ; the faults the handler caught
    out EXIT_PORT, al           ; stop: the runner's chaos counts them
    hlt                         ; (not reached: the exit port stops the guest)

; Entries that map pages to themselves: edi the first entry, ecx how many,
; edx the entry size. From frame 0, present, writable, supervisor.
identity:
    mov eax, PTE_PW             ; frame 0
.next:
    mov [edi], eax              ; one entry (a high half stays 0)
    add eax, 0x1000             ; the next frame
    add edi, edx                ; the next entry
    loop .next                  ; all of them
    ret                         ; edi is past the last

; Entries that map pages of C3_AREA: edi the first, ecx how many, edx the
; entry size. Frame i of C3_AREA for entry i, wrapping around.
to_c3:
    mov eax, C3_AREA | PTE_PW   ; the first frame
.next:
    mov [edi], eax              ; one entry
    add eax, 0x1000             ; the next frame
    and eax, C3_SIZE - 1        ; within C3_AREA:
    or eax, C3_AREA             ; wrap around
    add edi, edx                ; the next entry
    loop .next                  ; all of them
    ret                         ; edi is past the last

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

; A random low half of a page-table entry that keeps the limits above: eax.
chaos_value:
    call rand                   ; which kind
    test al, 3                  ; three times in four:
    jnz .c3                     ; a frame in C3_AREA
    call rand                   ; else any bits
    jmp safe_frame              ; with the frame moved if it is low
.c3:
    call rand                   ; random flags and frame bits 21:12
    jmp c3_frame                ; the frame in C3_AREA

; A random high half of a PAE page-table entry: mostly 0 or the XD bit.
chaos_high:
    call rand                   ; which kind
    test al, 0x30               ; three out of four:
    jz .any                     ; (the rest: any bits)
    and eax, 0x80000000         ; XD or not
    ret                         ; done
.any:
    call rand                   ; any bits
    jmp safe_frame              ; seen as a 32-bit entry, its frame must be safe too

; A random low half of a directory or PDPT entry: random flags and frame
; bits 21:12, the frame in C3_AREA.
dir_value:
    call rand                   ; random bits
    jmp c3_frame                ; the frame in C3_AREA

; A random high half of a PAE directory or PDPT entry: mostly 0 or the XD
; bit, else random bits 63:52 (XD and reserved bits), never a frame bit.
dir_high:
    call rand                   ; which kind
    mov edx, eax                ; keep it
    call rand                   ; the bits
    test dl, 3                  ; three out of four:
    jz .any                     ; (the rest: bits 63:52)
    and eax, 0x80000000         ; XD or not
    ret                         ; done
.any:
    and eax, 0xfff00000         ; bits 63:52
    ret                         ; done

; eax with its frame in C3_AREA: bits 21:0 kept.
c3_frame:
    and eax, C3_SIZE - 1        ; bits 21:0
    or eax, C3_AREA             ; in C3_AREA
    ret                         ; done

; eax with its frame moved into C3_AREA if it is below LOW_FRAMES, so that
; the value is safe as an entry of any kind.
safe_frame:
    cmp eax, LOW_FRAMES         ; a low frame?
    jae .done                   ; no: above memory
    and eax, C3_SIZE - 1        ; bits 21:0 kept
    or eax, C3_AREA             ; in C3_AREA
.done:
    ret                         ; done

; A random entry the chaos may write: its address in edi, its size (4 or
; 8) in ecx, and in ebx 1 for a directory or PDPT entry, 0 for a
; page-table entry. Half the time one of the entries the touches go through.
chaos_slot:
    call rand                   ; which table
    xor edx, edx                ; (the dividend's high half)
    mov ecx, slots_count        ; of the slot tables
    div ecx                     ; edx = table number
    imul esi, edx, 24           ; 24 bytes per slot table
    add esi, slots              ; its description
    call rand                   ; which entry
    test al, 1                  ; half the time
    jz .any                     ; any entry of the table
    shr eax, 1                  ; the other half
    xor edx, edx                ; (the dividend's high half)
    div dword [esi + 16]        ; one of the hot entries
    add edx, [esi + 12]         ; from the first hot one
    jmp .address                ; ...
.any:
    shr eax, 1                  ; any
    xor edx, edx                ; (the dividend's high half)
    div dword [esi + 4]         ; of the table's entries
.address:
    mov ecx, [esi + 8]          ; the entry size
    imul edx, ecx               ; the entry's offset
    mov edi, [esi]              ; the table's first chaos entry
    add edi, edx                ; the entry
    mov ebx, [esi + 20]         ; directory or page table
    ret                         ; done

; The operations, one of 16 at random.
op_entry:
    call chaos_slot             ; which entry
    test ebx, ebx               ; a directory entry?
    jnz .directory              ; ...
    call chaos_value            ; a page-table entry: a new low half
    mov [edi], eax              ; written
    cmp ecx, 8                  ; a PAE entry?
    jne .done                   ; no
    call chaos_high             ; a new high half
    mov [edi + 4], eax          ; written
.done:
    ret                         ; done
.directory:
    call dir_value              ; a directory entry: a new low half
    mov [edi], eax              ; written
    cmp ecx, 8                  ; a PAE entry?
    jne .done                   ; no
    call dir_high               ; a new high half
    mov [edi + 4], eax          ; written
    ret                         ; done

op_flip:
    call chaos_slot             ; which entry
    call rand                   ; which half and which bit
    mov edx, eax                ; keep it
    shr ecx, 1                  ; 4 for a PAE entry, 2 for a 32-bit one
    and ecx, 4                  ; 4 or 0
    and ecx, edx                ; a PAE entry's high half half the time
    mov eax, [edi + ecx]        ; the half
    btc eax, edx                ; bit edx mod 32 flipped
    test ebx, ebx               ; a directory entry?
    jnz .directory              ; ...
    call safe_frame             ; a page-table entry's frame kept safe
    mov [edi + ecx], eax        ; written
    ret                         ; done
.directory:
    test ecx, ecx               ; the high half?
    jnz .high                   ; ...
    call c3_frame               ; the low half: the frame stays in C3_AREA
    mov [edi], eax              ; written
    ret                         ; done
.high:
    and eax, 0xfff00000         ; the high half: no frame bit
    mov [edi + 4], eax          ; written
    ret                         ; done

op_cr0:
    call rand                   ; which bits
    and eax, CR0_CHAOS          ; of those that leave PE and PG alone
    mov edx, cr0                ; CR0
    xor edx, eax                ; flipped
    mov cr0, edx                ; may be #GP (NW without CD)
    ret                         ; done

op_cr4:
    call rand                   ; which bits
    mov edx, eax                ; keep them
    call rand                   ; one time in eight
    test al, 7                  ; any bit of CR4
    jz .any                     ; ...
    and edx, CR4_CHAOS          ; else only the harmless ones
.any:
    mov eax, cr0                ; while paging is on
    test eax, CR0_PG            ; ...
    jz .flip                    ; ...
    and edx, ~CR4_PAE           ; PAE must stay as it is
.flip:
    mov eax, cr4                ; CR4
    xor eax, edx                ; flipped
    mov cr4, eax                ; may be #GP (reserved bits, VMXE, PCIDE, ...)
    ret                         ; done

op_efer:
    call rand                   ; which bits
    mov esi, eax                ; keep them
    call rand                   ; one time in eight
    mov edi, eax                ; keep the choice
    mov ecx, MSR_EFER           ; EFER
    rdmsr                       ; edx:eax
    test edi, 7                 ; any low bit?
    jz .any                     ; ...
    and esi, EFER_SAFE          ; else NXE and SCE only
    jmp .flip                   ; ...
.any:
    test edi, 0x18              ; LME one time in four of these
    jz .lme                     ; ...
    and esi, 0xffff & ~EFER_LME ; the other low bits
    jmp .flip                   ; ...
.lme:
    and esi, 0xffff             ; with LME
    test edi, 0x60              ; and one time in four of these
    jnz .flip                   ; ...
    xor edx, esi                ; the high half too
.flip:
    xor eax, esi                ; flipped
    wrmsr                       ; may be #GP (reserved bits, LME while paging)
    ret                         ; done

op_cr3:
    call rand                   ; which root
    mov edx, eax                ; keep the choice
    and eax, 31                 ; 0-31
    jz .zero                    ; 1 in 32: the empty page
    cmp eax, 16                 ; about half:
    jb .reload                  ; the same root again
    call root                   ; else the root of the mode
    shr edx, 5                  ; with random bits
    and edx, 0x18               ; PWT and PCD
    or eax, edx                 ; ...
    jmp .load                   ; ...
.zero:
    mov eax, ZERO_ROOT          ; nothing is present there
    jmp .load                   ; ...
.reload:
    mov eax, cr3                ; the same
.load:
    mov cr3, eax                ; may be #GP (a bad PDPT entry)
    ret                         ; done

op_mode:
    mov eax, cr0                ; CR0
    and eax, ~CR0_PG            ; paging off
    mov cr0, eax                ; (this code is mapped to itself)
    call rand                   ; which mode
    mov edx, cr4                ; CR4
    and edx, ~CR4_PAE           ; 32-bit paging
    test al, 1                  ; or, half the time,
    jz .set                     ; ...
    or edx, CR4_PAE             ; PAE paging
.set:
    mov cr4, edx                ; the mode
    test al, 0xe                ; one time in eight
    jz .done                    ; paging stays off
    call root                   ; the mode's root
    mov cr3, eax                ; into CR3
    mov eax, cr0                ; CR0
    or eax, CR0_PG              ; paging on
    mov cr0, eax                ; may be #GP (a bad PDPT entry, LME without PAE)
.done:
    ret                         ; done

op_invlpg:
    call touch_address          ; an address
    invlpg [eax]                ; its translation forgotten
    ret                         ; done

; The root of the current paging mode, in eax.
root:
    mov eax, cr4                ; CR4
    test eax, CR4_PAE           ; PAE?
    mov eax, PD_A               ; no: root A
    jz .done                    ; ...
    mov eax, PDPT_B             ; yes: root B
.done:
    ret                         ; done

; A random linear address to touch, outside CRITICAL: mostly where the
; tables the chaos writes map, sometimes anywhere. With paging off, in
; C3_AREA.
touch_address:
    call rand                   ; where
    mov edx, eax                ; keep the choice
    call rand                   ; the offset
    and edx, 3                  ; one of four regions
    jz .low                     ; ...
    cmp edx, 1                  ; ...
    je .middle                  ; ...
    cmp edx, 2                  ; ...
    je .high                    ; ...
    or eax, CRITICAL            ; anywhere but CRITICAL
    jmp .paging                 ; ...
.low:
    and eax, 0x3bffff           ; 256 KiB to 4 MiB
    add eax, CRITICAL           ; ...
    jmp .paging                 ; ...
.middle:
    and eax, 0x7fffff           ; 4 to 12 MiB
    add eax, 0x400000           ; ...
    jmp .paging                 ; ...
.high:
    and eax, 0x7fffff           ; 1 GiB to 1 GiB + 8 MiB
    add eax, 0x40000000         ; ...
.paging:
    mov edx, cr0                ; paging on?
    test edx, CR0_PG            ; ...
    jnz .done                   ; yes: any such address
    and eax, C3_SIZE - 1        ; no: the address is physical,
    or eax, C3_AREA             ; and must be in C3_AREA
.done:
    ret                         ; done

; One touch of a random address: one of sixteen kinds. Only one calls: a
; fetch from an address above memory ends the run (KVM cannot emulate it).
touch:
    call touch_address          ; where
    mov esi, eax                ; keep it
    call rand                   ; how
    and eax, 15                 ; one of sixteen
    jmp [touches + eax * 4]     ; ...
t_read:
    mov eax, [esi]              ; read a doubleword
    ret                         ; done
t_read_byte:
    mov al, [esi]               ; read a byte
    ret                         ; done
t_write:
    mov dword [esi], 0xc3c3c3c3 ; write a doubleword
    ret                         ; done
t_write_word:
    mov word [esi], 0xc3c3      ; write a word
    ret                         ; done
t_locked:
    lock or dword [esi], 0xc3c3c3c3 ; a locked read-modify-write: 0xc3 or 0xe3 stay so
    ret                         ; done
t_xchg:
    mov eax, 0xc3c3c3c3         ; an exchange, locked by itself
    xchg [esi], eax             ; ...
    ret                         ; done
t_string:
    mov edi, esi                ; three doublewords
    mov eax, 0xc3c3c3c3         ; of 0xc3
    mov ecx, 3                  ; ...
    rep stosd                   ; maybe across a page boundary
    ret                         ; done
t_call:
    mov ecx, 1                  ; so that 0xe3 (jecxz) falls through
    call esi                    ; fetch there: 0xc3 returns
    ret                         ; done

; Every exception comes here, from its stub, with the vector on top of the
; error code (0 for the vectors without one).
fault:
    pop eax                     ; the vector
    out REPORT_PORT, eax        ; reported
    pop eax                     ; the error code
    out REPORT_PORT, eax        ; reported
    mov eax, cr2                ; CR2
    out REPORT_PORT, eax        ; reported
    mov eax, [esp]              ; the saved eip
    out REPORT_PORT, eax        ; reported
    inc dword [faults]          ; one more caught
    cmp dword [faults], MAX_FAULTS ; enough?
    jae finish                  ; then stop
    jmp next_round              ; else on with the next round

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

align 4
operations:                     ; the 16 operations, by number
    dd op_entry, op_entry, op_entry, op_entry, op_entry, op_entry ; 6 in 16: an entry
    dd op_flip, op_flip         ; 2 in 16: a bit of an entry
    dd op_cr0, op_cr4, op_cr4   ; control registers
    dd op_efer, op_efer         ; EFER
    dd op_cr3, op_mode          ; CR3, the paging mode
    dd op_invlpg                ; INVLPG
touches:                        ; the 16 touches
    dd t_read, t_read, t_read, t_read_byte, t_read_byte ; 5 in 16: reads
    dd t_write, t_write, t_write, t_write_word, t_write_word ; 5 in 16: writes
    dd t_locked, t_locked, t_xchg, t_string, t_string ; 5 in 16: locked and string writes
    dd t_call                   ; 1 in 16: a call

; The tables the chaos writes: the first entry it may write, how many
; entries from there, the entry size, the first hot entry (one the touches
; go through), how many hot ones, and 1 for a directory or PDPT, 0 for a
; page table. 24 bytes each.
slots:
    dd PD_A + 4, 1023, 4, 0, 2, 1           ; root A's directory but entry 0 (hot: 4-12 MiB)
    dd PT_A0 + 0x100, 0x3c0, 4, 0, 0x3c0, 0 ; PT_A0 but CRITICAL
    dd PT_A1, 1024, 4, 0, 1024, 0           ; PT_A1
    dd PT_A2, 1024, 4, 0, 1024, 0           ; PT_A2
    dd PDPT_B + 8, 3, 8, 0, 1, 1            ; the PDPT but entry 0 (hot: 1 GiB)
    dd PD_B0 + 8, 511, 8, 0, 5, 1           ; PD_B0 but entry 0 (hot: 2-12 MiB)
    dd PT_B0 + 0x200, 0x1c0, 8, 0, 0x1c0, 0 ; PT_B0 but CRITICAL
    dd PT_B1, 512, 8, 0, 512, 0             ; PT_B1
    dd PD_B1, 512, 8, 0, 4, 1               ; PD_B1 (hot: 1 GiB to 1 GiB + 8 MiB)
    dd PT_B2, 512, 8, 0, 512, 0             ; PT_B2
slots_count equ ($ - slots) / 24

rng:    dd 0                    ; the generator's state
round:  dd 0                    ; rounds begun
count:  dd 0                    ; operations or touches left in this round
faults: dd 0                    ; faults caught

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
