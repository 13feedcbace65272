//@ stage 7
//! SVM exit codes, decoded once into the arch-neutral [`VmExit`].
//!
//! The exit code is in the VMCB's `exit_code`, with details in
//! `exit_info_1` and `exit_info_2` (APM Vol. 2, Appendix C "SVM Intercept
//! Exit Codes", and 15.7-15.14 for each intercept's details). Where the
//! hardware gives less than the handlers need and a decode assist would
//! give more (QEMU's SVM has none: no nrip_save, no decode assists), the
//! instruction's bytes are read from guest memory and decoded here.

use super::vmcb::Vmcb;
use crate::mmu::GuestFetch;
use crate::exit::{CrAccess, IoExit, StringIo, VmExit};
//@ begin 12
use crate::exit::DrAccess;
//@ end
use crate::regs::{Efer, NR_REGS, Reg};

// ANCHOR: exit_codes
/// `SVM_EXIT_*` codes (APM Vol. 2, Appendix C).
pub mod code {
    /// Reads of CR0-CR15 are 0x00-0x0F, writes 0x10-0x1F.
    pub const CR0_READ: u64 = 0x00;
    pub const CR0_WRITE: u64 = 0x10;
    //@ begin 12
    /// Reads of DR0-DR15 are 0x20-0x2F, writes 0x30-0x3F.
    pub const DR0_READ: u64 = 0x20;
    pub const DR0_WRITE: u64 = 0x30;
    //@ end
    /// Exception vector n is 0x40 + n.
    pub const EXCP_BASE: u64 = 0x40;
    pub const PF: u64 = EXCP_BASE + 14;
    //@ begin 12
    pub const DB: u64 = EXCP_BASE + 1;
    //@ end
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    //@ begin 12
    pub const VINTR: u64 = 0x64;
    //@ end
    //@ begin 8
    pub const RDPMC: u64 = 0x6F;
    //@ end
    pub const CPUID: u64 = 0x72;
    pub const HLT: u64 = 0x78;
    //@ begin 8
    pub const INVLPG: u64 = 0x79;
    //@ end
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const SHUTDOWN: u64 = 0x7F;
    /// `vmrun` refused the VMCB: an illegal guest state (VMEXIT_INVALID).
    pub const INVALID: u64 = u64::MAX;
}
// ANCHOR_END: exit_codes

// ANCHOR: ioio
/// What `exit_info_1` says about an intercepted `in`, `out`, `ins` or
/// `outs` (APM Vol. 2, 15.10.2 "IN and OUT Behavior", Figure 15-2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ioio {
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub size: u8,
    pub is_in: bool,
    pub string: bool,
    pub rep: bool,
    /// The bits of RSI, RDI and RCX the instruction uses: 0xFFFF,
    /// 0xFFFF_FFFF or all, from its address size. `None` when the
    /// processor left the address-size bits clear, as QEMU's SVM does.
    pub address_mask: Option<u64>,
}

/// Decodes `exit_info_1` of an IOIO exit (APM Vol. 2, 15.10.2, Figure
/// 15-2); `None` for a value that describes no access.
pub fn decode_ioio(info1: u64) -> Option<Ioio> {
    //@ exercise E7.2
    //@ instruction: Decode `info1`, laid out in AMD APM Vol. 2, 15.10.2
    //@+ "IN and OUT Behavior", Figure 15-2, into an `Ioio`. The size and
    //@+ the address size are each given as a set of bits of which a
    //@+ processor sets one: return `None` for a value that names no size
    //@+ or two sizes, or two address sizes. Naming no address size is
    //@+ allowed (QEMU does so): `address_mask` is then `None`. Bits the
    //@+ figure gives to nothing here change nothing. The `e7_2` tests
    //@+ decode random values against a reference.
    //@ hint: Find each field of `Ioio` in Figure 15-2. For the two
    //@+ one-of-three fields, ask what each of the 8 values of the three
    //@+ bits means.
    //@ hint: TYPE (bit 0, 1 = in), STR (2), REP (3), SZ8, SZ16, SZ32
    //@+ (4 to 6), A16, A32, A64 (7 to 9), PORT (31:16). Of the 8 values
    //@+ of bits 6:4, only 1, 2 and 4 are sizes; of bits 9:7, 0 is "not
    //@+ said", 1, 2 and 4 are address sizes.
    //@ hint: `let size = match (info1 >> 4) & 7 { 1 => 1, 2 => 2, 4 => 4,
    //@+ _ => return None };` and the address mask alike, with an arm `0
    //@+ => None`; the rest are single bits and the port a cast.
    let size = match (info1 >> 4) & 7 {
        1 => 1,
        2 => 2,
        4 => 4,
        _ => return None,
    };
    let address_mask = match (info1 >> 7) & 7 {
        0 => None,
        1 => Some(0xFFFF),
        2 => Some(0xFFFF_FFFF),
        4 => Some(u64::MAX),
        _ => return None,
    };
    Some(Ioio {
        port: (info1 >> 16) as u16,
        size,
        is_in: info1 & 1 != 0,
        string: info1 & 1 << 2 != 0,
        rep: info1 & 1 << 3 != 0,
        address_mask,
    })
    //@ end
}
// ANCHOR_END: ioio

/// The guest's state an exit is decoded against: the VMCB (segments,
/// RIP, RFLAGS, RAX) and the general registers.
pub struct Guest<'a> {
    pub vmcb: &'a Vmcb,
    pub regs: &'a [u64; NR_REGS],
    pub fetch: &'a dyn GuestFetch,
}

impl Guest<'_> {
    fn reg(&self, reg: Reg) -> u64 {
        self.regs.get(reg as usize).copied().unwrap_or(0)
    }

    /// Whether the guest runs 64-bit code (EFER.LMA and CS.L).
    fn long_mode(&self) -> bool {
        Efer::from_bits_retain(self.vmcb.save.efer).contains(Efer::LMA) && self.vmcb.save.cs.attrib & 1 << 9 != 0
    }

    /// Up to 15 bytes of the instruction at CS:RIP; fewer only where
    /// memory ends. Empty if the first byte cannot be read.
    fn instruction(&self) -> ([u8; 15], usize) {
        let linear = self.vmcb.save.cs.base.wrapping_add(self.vmcb.save.rip);
        let linear = if self.long_mode() { linear } else { linear & 0xFFFF_FFFF };
        let mut bytes = [0; 15];
        for n in (1..=15).rev() {
            if let Some(buf) = bytes.get_mut(..n)
                && self.fetch.read_linear(linear, buf)
            {
                return (bytes, n);
            }
        }
        (bytes, 0)
    }
}

// ANCHOR: decode
/// Decodes the exit the VMCB reports.
pub fn decode(guest: &Guest<'_>) -> VmExit {
    let c = &guest.vmcb.control;
    match c.exit_code {
        code::IOIO => decode_io(guest, c.exit_info_1, c.exit_info_2),
        code::CPUID => VmExit::Cpuid { insn_len: 2 },
        code::HLT => VmExit::Hlt { insn_len: 1 },
        //@ begin 8
        code::MSR => VmExit::Msr { write: c.exit_info_1 & 1 != 0, insn_len: 2, hardware_reason: code::MSR as u32 },
        code::INVLPG => decode_invlpg(guest),
        //@ end
        code::PF => VmExit::PageFault { address: c.exit_info_2, error_code: c.exit_info_1 as u32 },
        code::INTR | code::NMI | code::SMI => VmExit::ExternalInterrupt,
        //@ begin 12
        code::VINTR => VmExit::InterruptWindow,
        //@ end
        //@ begin 8
        code::RDPMC => VmExit::Rdpmc { insn_len: 2 },
        //@ end
        code::SHUTDOWN => VmExit::Shutdown,
        code::INVALID => VmExit::FailEntry { hardware_reason: u32::MAX },
        n @ code::CR0_READ..=0x1F => decode_cr(guest, n),
        //@ begin 12
        n @ code::DR0_READ..=0x3F => decode_dr(guest, n),
        // A #DB, with the causes the processor wrote into the VMCB's DR6.
        code::DB => VmExit::Debug { causes: guest.vmcb.save.dr6 & crate::debug::DR6_CAUSES },
        //@ end
        n @ code::EXCP_BASE..=0x5F => {
            VmExit::Exception { vector: (n - code::EXCP_BASE) as u8, error_code: c.exit_info_1 as u32 }
        }
        n => VmExit::Unknown { hardware_reason: n as u32 },
    }
}

/// An IOIO exit. `exit_info_2` holds the RIP of the next instruction,
/// even without nrip_save (APM Vol. 2, 15.10.2): its difference from RIP
/// is the length to skip.
fn decode_io(guest: &Guest<'_>, info1: u64, next_rip: u64) -> VmExit {
    let unknown = VmExit::Unknown { hardware_reason: code::IOIO as u32 };
    let Some(io) = decode_ioio(info1) else { return unknown };
    let insn_len = next_rip.wrapping_sub(guest.vmcb.save.rip);
    let Ok(insn_len @ 1..=15) = u8::try_from(insn_len) else { return unknown };
    let value = (guest.vmcb.save.rax & (u64::MAX >> (64 - 8 * u32::from(io.size)))) as u32;
    let string = io.string.then(|| string_io(guest, &io));
    VmExit::Io(IoExit { port: io.port, size: io.size, is_in: io.is_in, string, value, insn_len })
}
// ANCHOR_END: decode

// ANCHOR: string_io
/// Where `ins` or `outs` finds its data: ES:RDI for `ins`; DS:RSI for
/// `outs`, unless a prefix names another segment. Processors report that
/// segment in bits 12:10 of `exit_info_1` (APM Vol. 2, 15.10.3); QEMU's
/// SVM leaves them zero, which would read as ES, so the backend reads the
/// instruction's prefixes instead, which gives the right answer on both.
fn string_io(guest: &Guest<'_>, io: &Ioio) -> StringIo {
    let save = &guest.vmcb.save;
    let (bytes, n) = guest.instruction();
    let prefixes = prefixes(bytes.get(..n).unwrap_or(&[]));
    let address_mask = io.address_mask.unwrap_or_else(|| guest.address_mask(prefixes.address_size));
    let (index, segment) = if io.is_in {
        (guest.reg(Reg::Rdi), &save.es)
    } else {
        let override_ = prefixes.segment;
        let segment = match override_ {
            Some(0x26) => &save.es,
            Some(0x2E) => &save.cs,
            Some(0x36) => &save.ss,
            Some(0x64) => &save.fs,
            Some(0x65) => &save.gs,
            _ => &save.ds,
        };
        (guest.reg(Reg::Rsi), segment)
    };
    // In 64-bit mode only FS and GS have a base.
    let fs_or_gs = core::ptr::eq(segment, &save.fs) || core::ptr::eq(segment, &save.gs);
    let base = if guest.long_mode() && !fs_or_gs { 0 } else { segment.base };
    let mut address = base.wrapping_add(index & address_mask);
    if !guest.long_mode() {
        address &= 0xFFFF_FFFF;
    }
    const RFLAGS_DF: u64 = 1 << 10;
    StringIo {
        address,
        rep: io.rep,
        down: save.rflags & RFLAGS_DF != 0,
        count: if io.rep { guest.reg(Reg::Rcx) & address_mask } else { 1 },
    }
}

/// What an instruction's prefixes change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Prefixes {
    /// The last segment-override prefix (0x26, 0x2E, ...), if any.
    segment: Option<u8>,
    /// An address-size prefix (0x67).
    address_size: bool,
}

/// Reads the legacy prefixes (and REX) at the start of `bytes`.
fn prefixes(bytes: &[u8]) -> Prefixes {
    let mut found = Prefixes::default();
    for &b in bytes {
        match b {
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 => found.segment = Some(b),
            0x67 => found.address_size = true,
            0x66 | 0xF0 | 0xF2 | 0xF3 | 0x40..=0x4F => {}
            _ => break,
        }
    }
    found
}

impl Guest<'_> {
    /// The address size of an instruction, as a mask, when the processor
    /// did not report it: the code segment's default (16 or 32 bits, 64 in
    /// 64-bit mode), switched by an address-size prefix.
    fn address_mask(&self, prefix: bool) -> u64 {
        let db = self.vmcb.save.cs.attrib & 1 << 10 != 0;
        match (self.long_mode(), db != prefix) {
            (true, _) if prefix => 0xFFFF_FFFF,
            (true, _) => u64::MAX,
            (false, true) => 0xFFFF_FFFF,
            (false, false) => 0xFFFF,
        }
    }
}
// ANCHOR_END: string_io

// ANCHOR: decode_cr
/// A CR read or write intercept. Without decode assists the hardware says
/// only which register, so the instruction is decoded: `mov reg, crN`
/// (0F 20 /r) or `mov crN, reg` (0F 22 /r), after optional prefixes. Any
/// other form (`clts`, `lmsw`, `smsw`) is left to userspace for now.
fn decode_cr(guest: &Guest<'_>, exit_code: u64) -> VmExit {
    let unknown = VmExit::Unknown { hardware_reason: exit_code as u32 };
    let (bytes, n) = guest.instruction();
    let Some(bytes) = bytes.get(..n) else { return unknown };
    //@ begin 8
    if exit_code == code::CR0_WRITE
        && let Some(exit) = decode_clts_lmsw(bytes, guest)
    {
        return exit;
    }
    //@ end
    let Some(access) = decode_mov_cr(bytes, guest.long_mode()) else { return unknown };
    let write = exit_code >= code::CR0_WRITE;
    if access.write != write || u64::from(access.cr) != exit_code & 0xF {
        return unknown;
    }
    VmExit::Cr(access)
}

/// Decodes `mov` to or from a control register at the start of `bytes`.
pub fn decode_mov_cr(bytes: &[u8], long_mode: bool) -> Option<CrAccess> {
    let (write, cr, gpr, insn_len) = decode_mov_special(bytes, long_mode, 0x20)?;
    Some(CrAccess { cr, write, gpr, insn_len })
}

/// `mov` between a general register and a special one, after optional
/// prefixes: `read_opcode` is the second opcode byte of the read (0F 20
/// for control registers, 0F 21 for debug registers), and the write's
/// is two more. Gives whether it writes the special register, the
/// special register's number (REX.R extends it), the general register's
/// (REX.B extends it: the ModRM `mod` bits are ignored, as the processor
/// ignores them) and the length.
fn decode_mov_special(bytes: &[u8], long_mode: bool, read_opcode: u8) -> Option<(bool, u8, u8, u8)> {
    let mut i = 0;
    let mut rex = 0u8;
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 | 0x67 | 0xF2 | 0xF3 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 => rex = 0,
            0x40..=0x4F if long_mode => rex = b,
            _ => break,
        }
        i += 1;
    }
    let write = match (bytes.get(i), bytes.get(i + 1)) {
        (Some(0x0F), Some(&op)) if op == read_opcode => false,
        (Some(0x0F), Some(&op)) if op == read_opcode + 2 => true,
        _ => return None,
    };
    let modrm = *bytes.get(i + 2)?;
    let special = (modrm >> 3) & 7 | (rex & 4) << 1;
    let gpr = modrm & 7 | (rex & 1) << 3;
    Some((write, special, gpr, u8::try_from(i + 3).ok()?))
}
// ANCHOR_END: decode_cr

//@ begin 12
// ANCHOR: decode_dr
/// A debug-register read (0x20 + n) or write (0x30 + n) intercept:
/// `mov reg, drN` (0F 21 /r) or `mov drN, reg` (0F 23 /r), decoded from
/// the instruction as for the control registers. DR8-DR15 do not exist:
/// a REX.R that names one is left to userspace.
fn decode_dr(guest: &Guest<'_>, exit_code: u64) -> VmExit {
    let unknown = VmExit::Unknown { hardware_reason: exit_code as u32 };
    let (bytes, n) = guest.instruction();
    let Some(bytes) = bytes.get(..n) else { return unknown };
    match decode_mov_special(bytes, guest.long_mode(), 0x21) {
        Some((write, dr, gpr, insn_len)) if dr < 8 && write == (exit_code >= code::DR0_WRITE) && u64::from(dr) == exit_code & 0xF => {
            VmExit::DebugRegister(DrAccess { dr, write, gpr, insn_len })
        }
        _ => unknown,
    }
}
// ANCHOR_END: decode_dr
//@ end

//@ begin 8
// ANCHOR: decode_invlpg
/// `invlpg m` (0F 01 /7). Without decode assists the hardware gives no
/// address (APM Vol. 2, 15.13: EXITINFO1 holds it only with them), and
/// finding it means computing the operand's effective address, the
/// emulator's work (stage 10). Only the length is decoded here, and the
/// whole shadow is dropped: more than the guest asked, never less.
fn decode_invlpg(guest: &Guest<'_>) -> VmExit {
    let unknown = VmExit::Unknown { hardware_reason: code::INVLPG as u32 };
    let (bytes, n) = guest.instruction();
    let Some(bytes) = bytes.get(..n) else { return unknown };
    let (start, prefixes) = skip_prefixes(bytes, guest.long_mode());
    let sixteen = guest.address_mask(prefixes.address_size) == 0xFFFF;
    match (bytes.get(start), bytes.get(start + 1), bytes.get(start + 2)) {
        (Some(0x0F), Some(0x01), Some(&modrm)) if modrm >> 6 != 3 && (modrm >> 3) & 7 == 7 => {
            let Some(len) = memory_operand_len(bytes.get(start + 2..).unwrap_or(&[]), sixteen) else { return unknown };
            match u8::try_from(start + 2 + len) {
                Ok(insn_len) => VmExit::Invlpg { address: None, insn_len },
                Err(_) => unknown,
            }
        }
        _ => unknown,
    }
}

/// `clts` (0F 06) or `lmsw` from a register (0F 01 /6, mod 3): the CR0
/// writes that are not `mov`.
fn decode_clts_lmsw(bytes: &[u8], guest: &Guest<'_>) -> Option<VmExit> {
    let (start, _) = skip_prefixes(bytes, guest.long_mode());
    let len = |n: usize| u8::try_from(start + n).ok();
    match (bytes.get(start)?, bytes.get(start + 1)?) {
        (0x0F, 0x06) => Some(VmExit::Clts { insn_len: len(2)? }),
        (0x0F, 0x01) => {
            let modrm = *bytes.get(start + 2)?;
            if modrm >> 6 != 3 || (modrm >> 3) & 7 != 6 {
                return None;
            }
            let rex_b = bytes.get(start.checked_sub(1)?).filter(|&&b| guest.long_mode() && b & 0xF0 == 0x40).map_or(0, |b| (b & 1) << 3);
            let value = guest.regs.get(usize::from(modrm & 7 | rex_b)).copied().unwrap_or(0) as u16;
            Some(VmExit::Lmsw { value, insn_len: len(3)? })
        }
        _ => None,
    }
}

/// The legacy prefixes (and, in 64-bit mode, REX) at the start of
/// `bytes`: where the opcode starts, and what they change.
fn skip_prefixes(bytes: &[u8], long_mode: bool) -> (usize, Prefixes) {
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF0 | 0xF2 | 0xF3 => {}
            0x40..=0x4F if long_mode => {}
            _ => break,
        }
        i += 1;
    }
    (i, prefixes(bytes.get(..i).unwrap_or(&[])))
}

/// The length of a ModRM byte and what follows it for a memory operand
/// (SDM Vol. 2A, 2.1.5, Tables 2-1 and 2-2; 2-3 for SIB): with 16-bit
/// addressing, a displacement of 0, 1 or 2 bytes; with 32- or 64-bit
/// addressing, an optional SIB byte and a displacement of 0, 1 or 4.
pub fn memory_operand_len(bytes: &[u8], sixteen: bool) -> Option<usize> {
    let modrm = *bytes.first()?;
    let (md, rm) = (modrm >> 6, modrm & 7);
    if sixteen {
        return Some(1 + match (md, rm) {
            (0, 6) | (2, _) => 2,
            (1, _) => 1,
            _ => 0,
        });
    }
    let sib = rm == 4 && md != 3;
    let base_is_disp32 = sib && md == 0 && bytes.get(1)? & 7 == 5;
    let disp = match (md, rm) {
        (0, 5) => 4,
        (0, _) if base_is_disp32 => 4,
        (1, _) => 1,
        (2, _) => 4,
        _ => 0,
    };
    Some(1 + usize::from(sib) + disp)
}
// ANCHOR_END: decode_invlpg
//@ end

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::try_box;

    //@ begin 8
    #[test]
    fn memory_operands_are_measured_in_both_address_sizes() {
        // invlpg [eax]; [ebp+8]; [esp]; [0x1234]; [eax*4+0x10] (SIB, disp32 base)
        assert_eq!(memory_operand_len(&[0x38], false), Some(1));
        assert_eq!(memory_operand_len(&[0x7D, 0x08], false), Some(2));
        assert_eq!(memory_operand_len(&[0x3C, 0x24], false), Some(2));
        assert_eq!(memory_operand_len(&[0x3D, 0, 0, 0, 0], false), Some(5));
        assert_eq!(memory_operand_len(&[0x3C, 0x85], false), Some(6));
        // 16-bit: [bx+si]; [0x1234]; [bp+0x10]; [bx+0x1234]
        assert_eq!(memory_operand_len(&[0x38], true), Some(1));
        assert_eq!(memory_operand_len(&[0x3E], true), Some(3));
        assert_eq!(memory_operand_len(&[0x7E], true), Some(2));
        assert_eq!(memory_operand_len(&[0xBF], true), Some(3));
        assert_eq!(memory_operand_len(&[], false), None);
    }
    //@ end
    use alloc::boxed::Box;

    /// Guest memory for the decoder: `bytes` at linear address `at`.
    struct Memory {
        at: u64,
        bytes: &'static [u8],
    }

    impl GuestFetch for Memory {
        fn read_linear(&self, linear: u64, buf: &mut [u8]) -> bool {
            let Some(start) = linear.checked_sub(self.at) else { return false };
            match self.bytes.get(start as usize..start as usize + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        }
    }

    fn vmcb() -> Box<Vmcb> {
        // SAFETY: a VMCB is plain data; all zeros is a valid value.
        try_box(unsafe { core::mem::zeroed::<Vmcb>() }).expect("a VMCB")
    }

    fn exit(vmcb: &mut Vmcb, code: u64, info1: u64, info2: u64) {
        (vmcb.control.exit_code, vmcb.control.exit_info_1, vmcb.control.exit_info_2) = (code, info1, info2);
    }

    const NOTHING: Memory = Memory { at: 0, bytes: &[] };

    #[test]
    fn simple_exits_decode_to_their_kind() {
        let mut v = vmcb();
        let regs = [0; NR_REGS];
        let cases = [
            (code::HLT, VmExit::Hlt { insn_len: 1 }),
            (code::CPUID, VmExit::Cpuid { insn_len: 2 }),
            (code::INTR, VmExit::ExternalInterrupt),
            (code::NMI, VmExit::ExternalInterrupt),
            (code::SHUTDOWN, VmExit::Shutdown),
            (code::INVALID, VmExit::FailEntry { hardware_reason: u32::MAX }),
            //@ begin 8
            (code::MSR, VmExit::Msr { write: false, insn_len: 2, hardware_reason: 0x7C }),
            //@ end
            (0x400, VmExit::Unknown { hardware_reason: 0x400 }),
            (code::EXCP_BASE + 6, VmExit::Exception { vector: 6, error_code: 0 }),
        ];
        for (c, expected) in cases {
            exit(&mut v, c, 0, 0);
            assert_eq!(decode(&Guest { vmcb: &v, regs: &regs, fetch: &NOTHING }), expected, "{c:#x}");
        }
        exit(&mut v, code::PF, 0x6, 0xC000_0000);
        let fault = decode(&Guest { vmcb: &v, regs: &regs, fetch: &NOTHING });
        assert_eq!(fault, VmExit::PageFault { address: 0xC000_0000, error_code: 6 });
    }

    #[test]
    fn mov_cr_decodes_register_numbers_and_length() {
        assert_eq!(decode_mov_cr(&[0x0F, 0x22, 0xC0], false), Some(CrAccess { cr: 0, write: true, gpr: 0, insn_len: 3 }));
        //@ begin 12
        // `mov dr7, eax` is 0F 23 /r, `mov rbx, dr6` 0F 21 /r; they are not CR moves.
        assert_eq!(decode_mov_special(&[0x0F, 0x23, 0xF8], false, 0x21), Some((true, 7, 0, 3)));
        assert_eq!(decode_mov_special(&[0x0F, 0x21, 0xF3], false, 0x21), Some((false, 6, 3, 3)));
        assert_eq!(decode_mov_cr(&[0x0F, 0x23, 0xF8], false), None);
        //@ end
        assert_eq!(decode_mov_cr(&[0x0F, 0x20, 0xE3], false), Some(CrAccess { cr: 4, write: false, gpr: 3, insn_len: 3 }));
        let rex = decode_mov_cr(&[0x41, 0x0F, 0x22, 0xD9], true);
        assert_eq!(rex, Some(CrAccess { cr: 3, write: true, gpr: 9, insn_len: 4 }));
        assert_eq!(decode_mov_cr(&[0x41, 0x0F, 0x22, 0xD9], false), None, "0x41 is `inc ecx` outside 64-bit mode");
        assert_eq!(decode_mov_cr(&[0x0F, 0x06], false), None, "clts");
        assert_eq!(decode_mov_cr(&[0x0F, 0x22], false), None, "cut short");
    }

    #[test]
    fn a_cr_exit_checks_the_instruction_against_the_exit_code() {
        let mut v = vmcb();
        v.save.rip = 0x8000;
        let regs = [0; NR_REGS];
        let mem = Memory { at: 0x8000, bytes: &[0x0F, 0x22, 0xD8, 0x90] };
        exit(&mut v, code::CR0_WRITE + 3, 0, 0);
        let access = CrAccess { cr: 3, write: true, gpr: 0, insn_len: 3 };
        assert_eq!(decode(&Guest { vmcb: &v, regs: &regs, fetch: &mem }), VmExit::Cr(access));
        exit(&mut v, code::CR0_READ + 3, 0, 0);
        assert_eq!(decode(&Guest { vmcb: &v, regs: &regs, fetch: &mem }), VmExit::Unknown { hardware_reason: 3 });
        exit(&mut v, code::CR0_WRITE, 0, 0);
        assert_eq!(decode(&Guest { vmcb: &v, regs: &regs, fetch: &NOTHING }), VmExit::Unknown { hardware_reason: 0x10 });
    }

    #[test]
    fn segment_overrides_are_found_among_the_prefixes() {
        let segment = |bytes: &[u8]| prefixes(bytes).segment;
        assert_eq!(segment(&[0xF3, 0x6E]), None);
        assert_eq!(segment(&[0xF3, 0x26, 0x6E]), Some(0x26));
        assert_eq!(segment(&[0x64, 0x66, 0xF3, 0x6F]), Some(0x64));
        assert_eq!(segment(&[0x6E, 0x26]), None, "after the opcode it is not a prefix");
        assert!(prefixes(&[0x67, 0xF3, 0x6E]).address_size);
    }

    mod e7_2 {
        use super::super::*;
        use super::{Memory, NOTHING, exit, vmcb};

        /// `exit_info_1` for a port access.
        fn info1(port: u16, size_bit: u64, addr_bit: u64, flags: u64) -> u64 {
            u64::from(port) << 16 | 1 << (6 + addr_bit) | 1 << (3 + size_bit) | flags
        }

        #[test]
        fn every_field_of_exit_info_1_is_decoded() {
            let out_byte = decode_ioio(info1(0xE9, 1, 2, 0)).expect("valid");
            let expected = Ioio { port: 0xE9, size: 1, is_in: false, string: false, rep: false, address_mask: Some(0xFFFF_FFFF) };
            assert_eq!(out_byte, expected);
            let rep_insw = decode_ioio(info1(0x1F0, 2, 1, 0b1101)).expect("valid");
            let expected = Ioio { port: 0x1F0, size: 2, is_in: true, string: true, rep: true, address_mask: Some(0xFFFF) };
            assert_eq!(rep_insw, expected);
            let in_dword = decode_ioio(info1(0xFFFF, 3, 3, 1)).expect("valid");
            assert_eq!((in_dword.port, in_dword.size, in_dword.address_mask), (0xFFFF, 4, Some(u64::MAX)));
            let unsaid = decode_ioio(info1(0xE0, 1, 2, 0) & !(7 << 7)).expect("valid");
            assert_eq!(unsaid.address_mask, None, "QEMU leaves the address size out");
        }

        /// Random fields laid out as Figure 15-2, with random bits where
        /// it holds nothing decoded here (bit 1, the segment in 12:10, bits
        /// 15:13 and 63:32); the size and address size from any of their
        /// eight values, valid when one bit (or, for the address size, no
        /// bit) is set.
        #[test]
        fn random_values_decode_against_a_reference() {
            let mut rng = crate::test_rng::Rng::new(0xE72);
            for _ in 0..10_000 {
                let (port, sizes, addrs) = (rng.next() as u16, rng.below(8), rng.below(8));
                let (is_in, string, rep) = (rng.one_in(2), rng.one_in(2), rng.one_in(2));
                let noise = rng.next() & !0xFFFF_03FD;
                let info1 = u64::from(port) << 16 | addrs << 7 | sizes << 4 | u64::from(rep) << 3
                    | u64::from(string) << 2 | u64::from(is_in) | noise;
                let size = [1u8, 2, 4].into_iter().find(|&s| sizes == u64::from(s));
                let masks = [(1, Some(0xFFFF)), (2, Some(0xFFFF_FFFF)), (4, Some(u64::MAX)), (0, None)];
                let address_mask = masks.into_iter().find(|&(bits, _)| bits == addrs).map(|(_, mask)| mask);
                let expected = match (size, address_mask) {
                    (Some(size), Some(address_mask)) => Some(Ioio { port, size, is_in, string, rep, address_mask }),
                    _ => None,
                };
                assert_eq!(decode_ioio(info1), expected, "{info1:#x}");
            }
        }

        #[test]
        fn impossible_sizes_are_refused() {
            assert_eq!(decode_ioio(0), None);
            assert_eq!(decode_ioio(info1(0xE0, 1, 2, 0) | 1 << 5), None, "two sizes");
            assert_eq!(decode_ioio(info1(0xE0, 1, 2, 0) | 1 << 9), None, "two address sizes");
        }

        #[test]
        fn an_out_carries_al_and_its_length_from_the_next_rip() {
            let mut v = vmcb();
            v.save.rip = 0x8010;
            v.save.rax = 0x1234_5678;
            exit(&mut v, code::IOIO, info1(0xE0, 2, 2, 0), 0x8012);
            let regs = [0; NR_REGS];
            let expected = IoExit { port: 0xE0, size: 2, is_in: false, string: None, value: 0x5678, insn_len: 2 };
            assert_eq!(decode(&Guest { vmcb: &v, regs: &regs, fetch: &NOTHING }), VmExit::Io(expected));
            exit(&mut v, code::IOIO, info1(0xE0, 2, 2, 0), 0x8010);
            let none = decode(&Guest { vmcb: &v, regs: &regs, fetch: &NOTHING });
            assert_eq!(none, VmExit::Unknown { hardware_reason: 0x7B }, "a zero length is impossible");
        }

        #[test]
        fn rep_outsb_takes_ds_rsi_rcx_and_df() {
            let mut v = vmcb();
            v.save.rip = 0x8000;
            v.save.ds.base = 0x1_0000;
            v.save.es.base = 0x2_0000;
            v.save.rflags = 1 << 10;
            let mut regs = [0; NR_REGS];
            regs[Reg::Rsi as usize] = 0xFFFF_0010;
            regs[Reg::Rcx as usize] = 0x1_0003;
            let mem = Memory { at: 0x8000, bytes: &[0xF3, 0x6E] };
            exit(&mut v, code::IOIO, info1(0xE9, 1, 1, 0b1100), 0x8002);
            let VmExit::Io(io) = decode(&Guest { vmcb: &v, regs: &regs, fetch: &mem }) else { panic!("an I/O exit") };
            let string = StringIo { address: 0x1_0010, rep: true, down: true, count: 3 };
            assert_eq!(io.string, Some(string), "16-bit addressing keeps the low 16 bits");
        }

        #[test]
        fn without_an_address_size_the_code_segment_and_prefix_decide() {
            let mut v = vmcb();
            v.save.rip = 0x8000;
            v.save.cs.attrib = 1 << 10;
            let mut regs = [0; NR_REGS];
            regs[Reg::Rsi as usize] = 0x1_2345;
            regs[Reg::Rcx as usize] = 0x1_0002;
            let plain = Memory { at: 0x8000, bytes: &[0xF3, 0x6E] };
            let info = info1(0xE9, 1, 2, 0b1100) & !(7 << 7);
            exit(&mut v, code::IOIO, info, 0x8002);
            let VmExit::Io(io) = decode(&Guest { vmcb: &v, regs: &regs, fetch: &plain }) else { panic!("I/O") };
            assert_eq!(io.string.map(|s| (s.address, s.count)), Some((0x1_2345, 0x1_0002)), "32-bit code");
            let prefixed = Memory { at: 0x8000, bytes: &[0x67, 0xF3, 0x6E] };
            exit(&mut v, code::IOIO, info, 0x8003);
            let VmExit::Io(io) = decode(&Guest { vmcb: &v, regs: &regs, fetch: &prefixed }) else { panic!("I/O") };
            assert_eq!(io.string.map(|s| (s.address, s.count)), Some((0x2345, 2)), "0x67: 16-bit addresses");
        }

        #[test]
        fn an_override_prefix_moves_outs_to_another_segment_but_not_ins() {
            let mut v = vmcb();
            v.save.rip = 0x8000;
            v.save.es.base = 0x2_0000;
            v.save.fs.base = 0x3_0000;
            let mut regs = [0; NR_REGS];
            regs[Reg::Rsi as usize] = 0x10;
            regs[Reg::Rdi as usize] = 0x20;
            let mem = Memory { at: 0x8000, bytes: &[0x64, 0x6E] };
            exit(&mut v, code::IOIO, info1(0xE9, 1, 2, 0b100), 0x8002);
            let VmExit::Io(io) = decode(&Guest { vmcb: &v, regs: &regs, fetch: &mem }) else { panic!("an I/O exit") };
            assert_eq!(io.string.map(|s| (s.address, s.count)), Some((0x3_0010, 1)));
            exit(&mut v, code::IOIO, info1(0xE9, 1, 2, 0b101), 0x8002);
            let VmExit::Io(io) = decode(&Guest { vmcb: &v, regs: &regs, fetch: &mem }) else { panic!("an I/O exit") };
            assert_eq!(io.string.map(|s| s.address), Some(0x2_0020), "ins always uses ES");
        }
    }
}
