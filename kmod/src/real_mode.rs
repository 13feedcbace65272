//@ stage 12
//! Real mode where the processor will not run it: what the module does
//! itself for a real-mode guest that VMX runs in virtual-8086 mode.
//!
//! Without unrestricted guest, VMX cannot run a guest with CR0.PE clear.
//! 2006's `vmx.c` ran such a guest in virtual-8086 mode (vm86), which runs
//! 16-bit code with real-mode addressing at privilege level 3, inside a
//! protected-mode task. Three things the guest relies on are then not the
//! processor's to give, and generic code gives them, because they need
//! guest memory, which no backend can reach:
//!
//! - **A task-state segment.** vm86 runs inside a task: TR must hold a
//!   TSS, and the processor reads two bitmaps there (below). Like 2006,
//!   the module writes one into the last three pages of memory slot 0
//!   ([`tss_base`], [`tss_bytes`]); the test guests leave that memory
//!   alone (`RESERVED_TOP` in `rkvm.inc`).
//! - **Events.** Interrupts and exceptions in vm86 go through the
//!   protected-mode IDT, never through the guest's interrupt vector
//!   table. So the backend intercepts every exception, and the module
//!   delivers what the guest must see the way the processor does in real
//!   mode ([`frame`]): it pushes FLAGS, CS and IP on the stack, clears
//!   IF, TF and AC, and takes the handler's CS:IP from the interrupt
//!   vector table at IDTR.base (SDM Vol. 3A, 20.1.4 "Interrupt and
//!   Exception Handling"). 2006 did this for external interrupts in
//!   `inject_rmode_irq`.
//! - **Privileged instructions.** vm86 runs at CPL 3, where `hlt`, `mov`
//!   to and from control registers, `lgdt`, `lidt`, `lmsw` and `clts`
//!   raise #GP; the exit handlers emulate them (`exit/real_mode.rs`).

use crate::abi::{KvmDtable, KvmSegment, KvmSregs};
use crate::regs::Cr0;

/// Whether `sregs` is real mode: CR0.PE clear.
pub fn is_real_mode(sregs: &KvmSregs) -> bool {
    !Cr0::from_bits_retain(sregs.cr0).contains(Cr0::PE)
}

/// `seg` after a real-mode load of `selector` (`mov ds, ax`, a far jump,
/// the CS of an interrupt): the selector, and a base of selector × 16
/// (SDM Vol. 3A, 20.1.1 "Address Translation in Real-Address Mode"). The
/// limit and the attributes stay what they were, which is how "unreal"
/// mode keeps a limit set in protected mode.
pub fn load_segment(seg: &KvmSegment, selector: u16) -> KvmSegment {
    KvmSegment { selector, base: u64::from(selector) << 4, ..*seg }
}

// ANCHOR: tss
/// The size of a 32-bit TSS without the bitmaps (SDM Vol. 3A,
/// "Task-State Segment (TSS)", in the chapter "Task Management").
const TSS_BASE_SIZE: usize = 0x68;
/// The offset of the TSS's "I/O map base address" field.
const TSS_IO_MAP_BASE_FIELD: usize = 0x66;
/// The software-interrupt redirection bitmap, one bit per vector, lies
/// just below the I/O permission bitmap (SDM Vol. 3A, 20.3.3, "Class
/// 3—Software Interrupt Handling in Virtual-8086 Mode").
const REDIRECTION_BITMAP_SIZE: usize = 256 / 8;
/// The I/O permission bitmap, one bit per port (SDM Vol. 1, "I/O
/// Permission Bit Map", in the chapter "Input/Output").
const IO_BITMAP_SIZE: usize = 65536 / 8;
/// Where the I/O bitmap starts: after the TSS and the redirection map.
pub const IO_MAP_BASE: usize = TSS_BASE_SIZE + REDIRECTION_BITMAP_SIZE;
/// The whole TSS: the I/O bitmap is followed by one byte of all ones,
/// since the processor reads two bytes of the bitmap for every access
/// and may read past its last byte (SDM Vol. 1, "I/O Permission Bit
/// Map").
pub const TSS_SIZE: usize = IO_MAP_BASE + IO_BITMAP_SIZE + 1;
/// The pages the TSS takes, at the top of slot 0.
pub const TSS_PAGES: u64 = 3;
const _: () = assert!(TSS_SIZE as u64 <= TSS_PAGES * 4096);

/// The guest-physical address of the TSS for a slot 0 of `npages` pages
/// from `base_gfn`: its last three pages, as 2006's `rmode_tss_base`
/// chose. `None` if the slot is smaller.
pub fn tss_base(base_gfn: u64, npages: u64) -> Option<u64> {
    let gfn = base_gfn.checked_add(npages)?.checked_sub(TSS_PAGES).filter(|_| npages >= TSS_PAGES)?;
    Some(gfn << 12)
}

/// Fills `buf` with the TSS's bytes from `offset` on. Everything is zero
/// but two fields: the I/O map base, and the byte of ones after the I/O
/// bitmap. Zero means "allowed" in both bitmaps: every `in` and `out`
/// passes the bitmap (which vm86 checks before the VM exit that
/// unconditional I/O exiting makes of it), and every `int n` is
/// redirected to the guest's own interrupt vector table.
pub fn tss_bytes(offset: usize, buf: &mut [u8]) {
    let [base_lo, base_hi] = (IO_MAP_BASE as u16).to_le_bytes();
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte = match offset + i {
            TSS_IO_MAP_BASE_FIELD => base_lo,
            o if o == TSS_IO_MAP_BASE_FIELD + 1 => base_hi,
            o if o == TSS_SIZE - 1 => 0xFF,
            _ => 0,
        };
    }
}
// ANCHOR_END: tss

// ANCHOR: frame
/// RFLAGS.TF, IF and AC, which a real-mode event delivery clears.
const RFLAGS_TF: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_AC: u64 = 1 << 18;

/// What an event delivery in real mode starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupted {
    /// The CS selector and the IP to return to: the faulting instruction
    /// for a fault, the next one for a trap or an interrupt.
    pub cs: u16,
    pub ip: u64,
    pub rflags: u64,
    /// SS's base, RSP, and whether SS is a 32-bit stack (SS.B): a
    /// real-mode stack is 16 bits wide and wraps at 64 KiB.
    pub ss_base: u64,
    pub rsp: u64,
    pub stack_32: bool,
}

/// What the delivery writes and leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// FLAGS, CS and IP, each byte at its guest-physical address (a
    /// 16-bit stack wraps within its segment, byte by byte).
    pub bytes: [(u64, u8); 6],
    /// RSP and RFLAGS after the delivery.
    pub rsp: u64,
    pub rflags: u64,
}

/// The frame of an event delivered in real mode: FLAGS, then CS, then IP,
/// pushed as words (SDM Vol. 3A, 20.1.4, and the real-address-mode
/// operation of `INT n` in Vol. 2A); IF, TF and AC cleared. No error
/// code is pushed in real mode.
pub fn frame(from: &Interrupted) -> Frame {
    let mask: u64 = if from.stack_32 { 0xFFFF_FFFF } else { 0xFFFF };
    let words = [from.rflags as u16, from.cs, from.ip as u16];
    let mut bytes = [(0, 0); 6];
    for (i, word) in words.iter().enumerate() {
        let offset = from.rsp.wrapping_sub(2 * (i as u64 + 1));
        for (j, byte) in word.to_le_bytes().iter().enumerate() {
            let address = from.ss_base.wrapping_add(offset.wrapping_add(j as u64) & mask) & 0xFFFF_FFFF;
            if let Some(slot) = bytes.get_mut(2 * i + j) {
                *slot = (address, *byte);
            }
        }
    }
    let rsp = (from.rsp & !mask) | (from.rsp.wrapping_sub(6) & mask);
    Frame { bytes, rsp, rflags: from.rflags & !(RFLAGS_IF | RFLAGS_TF | RFLAGS_AC) }
}

/// The linear (and, paging being off, physical) address of `vector`'s
/// entry in the interrupt vector table: four bytes at IDTR.base + 4 ×
/// vector, the offset then the segment. `None` if the entry lies beyond
/// IDTR's limit, where the processor would raise #GP, and then a double
/// fault or a shutdown.
pub fn ivt_entry(idt: &KvmDtable, vector: u8) -> Option<u64> {
    let offset = 4 * u64::from(vector);
    (offset + 3 <= u64::from(idt.limit)).then(|| idt.base.wrapping_add(offset) & 0xFFFF_FFFF)
}

/// An IVT entry's four bytes as the new CS selector and IP.
pub fn handler(entry: [u8; 4]) -> (u16, u64) {
    let [ip_lo, ip_hi, cs_lo, cs_hi] = entry;
    (u16::from_le_bytes([cs_lo, cs_hi]), u64::from(u16::from_le_bytes([ip_lo, ip_hi])))
}
// ANCHOR_END: frame

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tss_allows_every_port_and_redirects_every_int() {
        let mut tss = [0xAAu8; TSS_SIZE + 8];
        tss_bytes(0, &mut tss);
        assert_eq!(TSS_SIZE, 0x2089, "2006's RMODE_TSS_SIZE");
        assert_eq!(IO_MAP_BASE, 0x88);
        assert_eq!(&tss[0x66..0x68], &[0x88, 0x00], "the I/O map base field");
        assert!(tss[0x68..0x88].iter().all(|&b| b == 0), "no vector taken by the protected-mode IDT");
        assert!(tss[0x88..0x2088].iter().all(|&b| b == 0), "every port allowed");
        assert_eq!(tss[0x2088], 0xFF, "the byte after the bitmap");
        assert!(tss[..0x66].iter().chain(&tss[0x2089..]).all(|&b| b == 0));
        // Any chunking gives the same bytes.
        let mut piece = [0u8; 5];
        tss_bytes(0x2085, &mut piece);
        assert_eq!(piece, [0, 0, 0, 0xFF, 0]);
    }

    #[test]
    fn the_tss_takes_the_last_three_pages_of_slot_0() {
        assert_eq!(tss_base(0, 256), Some(0xFD000), "1 MiB of memory");
        assert_eq!(tss_base(0x10, 3), Some(0x10000));
        assert_eq!(tss_base(0, 2), None, "too small");
        assert_eq!(tss_base(u64::MAX, 4), None);
    }

    #[test]
    fn an_event_pushes_flags_cs_ip_and_clears_if_tf_ac() {
        let from = Interrupted { cs: 0x1234, ip: 0x800C, rflags: 0x4_0302, ss_base: 0x10000, rsp: 0x7000, stack_32: false };
        let f = frame(&from);
        let at = |a: u64| f.bytes.iter().find(|(address, _)| *address == a).map(|(_, b)| *b);
        // FLAGS at SP-2, CS at SP-4, IP at SP-6.
        assert_eq!((at(0x16FFE), at(0x16FFF)), (Some(0x02), Some(0x03)));
        assert_eq!((at(0x16FFC), at(0x16FFD)), (Some(0x34), Some(0x12)));
        assert_eq!((at(0x16FFA), at(0x16FFB)), (Some(0x0C), Some(0x80)));
        assert_eq!((f.rsp, f.rflags), (0x6FFA, 0x2));
    }

    #[test]
    fn a_16_bit_stack_wraps_within_its_segment() {
        let from = Interrupted { cs: 0, ip: 0x100, rflags: 0x202, ss_base: 0x20000, rsp: 0xABCD_0002, stack_32: false };
        let f = frame(&from);
        assert_eq!(f.bytes[0], (0x20000, 0x02), "FLAGS at SP-2 = 0");
        assert_eq!(f.bytes[2], (0x2FFFE, 0x00), "CS wraps to 0xFFFE");
        assert_eq!(f.rsp, 0xABCD_FFFC, "only SP moves");
        let big = frame(&Interrupted { stack_32: true, rsp: 0x1_0004, ..from });
        assert_eq!((big.bytes[2].0, big.rsp), (0x30000, 0xFFFE), "SS.B: ESP");
    }

    #[test]
    fn the_ivt_entry_is_offset_then_segment_within_the_idt_limit() {
        let idt = KvmDtable { base: 0, limit: 0x3FF, padding: [0; 3] };
        assert_eq!(ivt_entry(&idt, 6), Some(24));
        assert_eq!(ivt_entry(&idt, 255), Some(0x3FC));
        let moved = KvmDtable { base: 0x5000, limit: 0x1B, ..idt };
        assert_eq!(ivt_entry(&moved, 6), Some(0x5018));
        assert_eq!(ivt_entry(&moved, 7), None, "beyond the limit");
        assert_eq!(handler([0x0C, 0x80, 0x00, 0xF0]), (0xF000, 0x800C));
    }

    #[test]
    fn a_real_mode_load_changes_selector_and_base_only() {
        let unreal = KvmSegment { limit: 0xFFFF_FFFF, g: 1, ..KvmSegment::real_mode(0) };
        let loaded = load_segment(&unreal, 0x1234);
        assert_eq!((loaded.selector, loaded.base, loaded.limit, loaded.g), (0x1234, 0x12340, 0xFFFF_FFFF, 1));
    }
}
