//@ stage 10
//! MMIO: a guest access to a guest-physical address that no memory slot
//! backs. The fault says only where; the instruction says what, so the
//! module fetches it through the guest's own tables, runs it in the
//! emulator ([`crate::emulate`]) on the guest's registers and memory, and
//! hands the one access it cannot do to userspace as `KVM_EXIT_MMIO`
//! (2006's `emulate_instruction` and its `mmio_*` fields).
//!
//! A write completes the instruction at once: userspace performs it, and
//! the guest runs on. A read cannot complete without its data: the exit
//! asks userspace for it, userspace puts it in `kvm_run.mmio.data` and sets
//! `mmio_completed`, and the next `KVM_RUN` runs the same instruction
//! again, answering the same read with that data ([`resume`]).
//!
//! Everything here goes through [`ExitContext`], so the host tests run it
//! on a fake vCPU with fake memory.

use super::{Action, ExitContext, reflect_page_fault, to_user, to_user_unknown};
use crate::abi::{self, KvmRun, KvmRunExit, KvmRunMmio, KvmSegment, KvmSregs};
use crate::emulate::{self, Access, Exception, Guest, Mode, Outcome, Segment, Size};
//@ begin 13
use crate::emulate::{Op, Operand};
//@ end
use crate::regs::{Cr0, Efer, Reg};
use crate::stats::Counter;

/// What `KVM_EXIT_UNKNOWN` reports when the emulator does not know the
/// instruction at RIP: no hardware exit reason has this value.
pub const EMULATION_FAILED: u32 = 0xEEEE_0001;

/// How a guest access is translated: the rights it needs (the walk's).
pub use crate::mmu::walk::Access as LinearAccess;

// ANCHOR: handle_mmio
/// A page fault the MMU found outside guest memory: emulate the
/// instruction at RIP. `None` if its bytes cannot even be fetched from
/// guest memory (code in MMIO is not run).
pub fn emulate_fault(ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Option<Action> {
    let sregs = ctx.sregs();
    let (bytes, n) = match fetch(ctx, &sregs) {
        Ok(fetched) => fetched,
        Err(Fetch::Fault { address, error_code }) => {
            reflect_page_fault(address, error_code, ctx);
            return Some(Action::Resume);
        }
        Err(Fetch::NotMemory) => return None,
    };
    let mut guest = EmulatedGuest { ctx: &mut *ctx, sregs, mmio: None, fault_address: 0 };
    let outcome = emulate::emulate(&mut guest, bytes.get(..n).unwrap_or(&[]), mode(&sregs), stack_size(&sregs));
    let (mmio, fault_address) = (guest.mmio, guest.fault_address);
    Some(finish(outcome, mmio, fault_address, ctx, run))
}

/// The next `KVM_RUN` after an MMIO read: userspace's data answers it,
/// and the same instruction runs again from the start.
pub fn resume(ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    //@ begin 12
    // From stage 12 the read may be a real-mode guest's system
    // instruction's (`exit/real_mode.rs`), which runs again there. None of
    // those instructions is one the emulator knows.
    if let Some(action) = super::real_mode::resume(ctx, run) {
        return action;
    }
    //@ end
    match emulate_fault(ctx, run) {
        Some(action) => action,
        None => to_user_unknown(EMULATION_FAILED, run),
    }
}

//@ begin 12
// ANCHOR: emulate_other
/// Emulates the instruction at RIP for an exit other than a page fault: a
/// #GP of a real-mode guest that VMX runs in virtual-8086 mode or 16-bit
/// protected mode, where an instruction real mode allows can fault
/// (`exit/real_mode.rs`), as 2006's `handle_rmode_exception` ran
/// `emulate_instruction`. `None` if the emulator does not know the
/// instruction or cannot fetch it: then the exit goes to userspace.
//@ begin 13
///
/// From stage 13 also a guest write to a guest page table the shadow
/// cache keeps protected (`PageFault::TableWrite`), as 2006's
/// `fix_write_pf`; `None` then lets the write through unemulated.
//@ end
pub(super) fn emulate_other(ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Option<Action> {
    let sregs = ctx.sregs();
    let (bytes, n) = fetch(ctx, &sregs).ok()?;
    let mut guest = EmulatedGuest { ctx: &mut *ctx, sregs, mmio: None, fault_address: 0 };
    let outcome = emulate::emulate(&mut guest, bytes.get(..n).unwrap_or(&[]), mode(&sregs), stack_size(&sregs));
    if let Outcome::Unhandled(_) = outcome {
        return None;
    }
    let (mmio, fault_address) = (guest.mmio, guest.fault_address);
    Some(finish(outcome, mmio, fault_address, ctx, run))
}

/// The bytes at CS:RIP, for the system-instruction decoder; `None` if
/// they are not in guest memory.
pub(super) fn fetch_code(ctx: &mut dyn ExitContext) -> Option<([u8; 15], usize)> {
    let sregs = ctx.sregs();
    fetch(ctx, &sregs).ok()
}

/// Reads the memory operand `mem` of the instruction at RIP, `len` bytes
/// long, into `data`, as the emulator reads: through the segment, its
/// limit and the guest's tables. An operand in MMIO is [`Access::Mmio`],
/// and `run` then asks userspace for it (`KVM_EXIT_MMIO`): the caller
/// returns [`Action::ToUser`], and [`resume`] runs the instruction again
/// once userspace has answered, when the same read takes the data.
pub(super) fn read_operand(ctx: &mut dyn ExitContext, run: &mut KvmRun, mem: &emulate::MemOperand, len: usize, data: &mut [u8]) -> Access {
    let sregs = ctx.sregs();
    let next_rip = wrap(&sregs, ctx.rip().wrapping_add(len as u64));
    let mut guest = EmulatedGuest { ctx: &mut *ctx, sregs, mmio: None, fault_address: 0 };
    let offset = emulate::effective_address(&guest, mem, next_rip);
    let access = guest.read(mem.segment, offset, data);
    let mmio = guest.mmio;
    if access == Access::Mmio {
        finish(Outcome::MmioRead, mmio, 0, ctx, run);
    }
    access
}

/// Reads `data.len()` bytes at `segment:offset` (the stack of an
/// instruction the module carries out) as the emulator reads them: the
/// segment's checks (#SS(0) through SS), its base, the guest's tables.
/// Guest RAM only: MMIO is [`Access::Mmio`], and nothing goes to
/// userspace.
pub(super) fn read_at(ctx: &mut dyn ExitContext, segment: Segment, offset: u64, data: &mut [u8]) -> Access {
    let sregs = ctx.sregs();
    EmulatedGuest { ctx, sregs, mmio: None, fault_address: 0 }.read(segment, offset, data)
}

/// Writes `data` (at most 8 bytes) at `segment:offset` as the emulator
/// writes it, all of it or, on a fault, nothing. Guest RAM only: MMIO is
/// [`Access::Mmio`], nothing is written, and nothing goes to userspace.
pub(super) fn write_at(ctx: &mut dyn ExitContext, segment: Segment, offset: u64, data: &[u8]) -> Access {
    let sregs = ctx.sregs();
    EmulatedGuest { ctx, sregs, mmio: None, fault_address: 0 }.write(segment, offset, data)
}
// ANCHOR_END: emulate_other
//@ end

//@ begin 13
// ANCHOR: invlpg_address
/// The linear address that the operand of the `invlpg` at RIP names, for
/// a backend whose hardware does not give it (SVM without decode assists,
/// APM Vol. 2, 15.13): the emulator's decoder reads the operand, and the
/// segment's base is added as for any access (in 64-bit mode only FS's
/// and GS's). `None` if the instruction cannot be fetched or is not an
/// `invlpg` the decoder knows.
pub(super) fn invlpg_address(ctx: &mut dyn ExitContext) -> Option<u64> {
    let sregs = ctx.sregs();
    let (bytes, n) = fetch(ctx, &sregs).ok()?;
    let insn = emulate::decode(bytes.get(..n)?, mode(&sregs)).ok()?;
    let (Op::Invlpg, Operand::Mem(mem)) = (insn.op, insn.dst) else { return None };
    let next_rip = wrap(&sregs, ctx.rip().wrapping_add(insn.len as u64));
    let long = mode(&sregs) == Mode::Bits64;
    let base = if long && !matches!(mem.segment, Segment::Fs | Segment::Gs) { 0 } else { segment_of(&sregs, mem.segment).base };
    let guest = EmulatedGuest { ctx, sregs, mmio: None, fault_address: 0 };
    let offset = emulate::effective_address(&guest, &mem, next_rip);
    Some(wrap(&guest.sregs, base.wrapping_add(offset)))
}
// ANCHOR_END: invlpg_address
//@ end

/// What the emulator's outcome means for the vCPU and for userspace.
fn finish(outcome: Outcome, mmio: Option<Mmio>, fault_address: u64, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    //@ begin 12
    if matches!(outcome, Outcome::Done | Outcome::MmioWrite) {
        ctx.instruction_done();
    }
    //@ end
    match (outcome, mmio) {
        (Outcome::Done | Outcome::Again, _) => Action::Resume,
        (Outcome::MmioRead | Outcome::MmioWrite, Some(m)) => {
            ctx.count(Counter::MmioExits);
            if !m.is_write {
                ctx.expect_mmio_read(m.gpa, m.len);
            }
            run.exit = KvmRunExit::from_mmio(KvmRunMmio {
                phys_addr: m.gpa,
                data: m.data,
                len: m.len as u32,
                is_write: u8::from(m.is_write),
                ..KvmRunMmio::default()
            });
            to_user(run, abi::KVM_EXIT_MMIO)
        }
        (Outcome::Exception(Exception { vector: 14, error_code }), _) => {
            reflect_page_fault(fault_address, error_code.unwrap_or(0), ctx);
            Action::Resume
        }
        (Outcome::Exception(e), _) => {
            ctx.queue_exception(e.vector, e.error_code);
            Action::Resume
        }
        (Outcome::MmioRead | Outcome::MmioWrite | Outcome::Unhandled(_), _) => to_user_unknown(EMULATION_FAILED, run),
    }
}
// ANCHOR_END: handle_mmio

/// The one access of an instruction that goes to userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mmio {
    gpa: u64,
    len: usize,
    is_write: bool,
    data: [u8; 8],
}

// ANCHOR: fetch
/// Why the instruction's bytes cannot be fetched.
enum Fetch {
    /// The guest's tables refuse: the guest's #PF handler must run.
    Fault { address: u64, error_code: u32 },
    /// The code is not in guest memory.
    NotMemory,
}

/// Up to 15 bytes at CS:RIP, fewer only where the code ends at a page the
/// guest cannot fetch (then the emulator says whether it needs more).
fn fetch(ctx: &mut dyn ExitContext, sregs: &KvmSregs) -> Result<([u8; 15], usize), Fetch> {
    let start = linear(sregs, &sregs.cs, ctx.rip());
    let access = LinearAccess { write: false, user: cpl(sregs) == 3, fetch: true };
    let mut bytes = [0; 15];
    let mut n = 0;
    while n < bytes.len() {
        let address = wrap(sregs, start.wrapping_add(n as u64));
        let chunk = (0x1000 - (address & 0xFFF) as usize).min(bytes.len() - n);
        let gpa = match ctx.translate(address, access) {
            Ok(gpa) => gpa,
            Err(error_code) if n == 0 => return Err(Fetch::Fault { address, error_code }),
            Err(_) => break,
        };
        let Some(dst) = bytes.get_mut(n..n + chunk) else { break };
        if !ctx.read_phys(gpa, dst) {
            if n == 0 {
                return Err(Fetch::NotMemory);
            }
            break;
        }
        n += chunk;
    }
    Ok((bytes, n))
}
// ANCHOR_END: fetch

// ANCHOR: emulated_guest
/// The vCPU as the emulator sees it.
struct EmulatedGuest<'a> {
    ctx: &'a mut dyn ExitContext,
    sregs: KvmSregs,
    /// The access that went to userspace, if one did.
    mmio: Option<Mmio>,
    /// The linear address of a page fault the walk found, for CR2.
    fault_address: u64,
}

impl Guest for EmulatedGuest<'_> {
    fn reg(&self, reg: Reg) -> u64 {
        self.ctx.gpr(reg as u8)
    }
    fn set_reg(&mut self, reg: Reg, value: u64) {
        self.ctx.set_gpr(reg as u8, value);
    }
    fn rip(&self) -> u64 {
        self.ctx.rip()
    }
    fn set_rip(&mut self, rip: u64) {
        self.ctx.set_rip(rip);
    }
    fn rflags(&self) -> u64 {
        self.ctx.rflags()
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.ctx.set_rflags(rflags);
    }

    fn read(&mut self, segment: Segment, offset: u64, data: &mut [u8]) -> Access {
        let (gpa, second) = match self.translate(segment, offset, data.len(), false) {
            Ok(gpas) => gpas,
            Err(access) => return access,
        };
        let split = second.map_or(data.len(), |(at, _)| at);
        let (head, tail) = data.split_at_mut(split.min(data.len()));
        if self.ctx.read_phys(gpa, head) && second.is_none_or(|(_, g)| self.ctx.read_phys(g, tail)) {
            return Access::Done;
        }
        if let Some(answer) = self.ctx.completed_mmio_read(gpa, data.len()) {
            let n = data.len().min(answer.len());
            if let (Some(dst), Some(src)) = (data.get_mut(..n), answer.get(..n)) {
                dst.copy_from_slice(src);
            }
            return Access::Done;
        }
        self.mmio = Some(Mmio { gpa, len: data.len(), is_write: false, data: [0; 8] });
        Access::Mmio
    }

    fn write(&mut self, segment: Segment, offset: u64, data: &[u8]) -> Access {
        let (gpa, second) = match self.translate(segment, offset, data.len(), true) {
            Ok(gpas) => gpas,
            Err(access) => return access,
        };
        let split = second.map_or(data.len(), |(at, _)| at);
        let (head, tail) = data.split_at(split.min(data.len()));
        let ram = |ctx: &mut dyn ExitContext| {
            let mut probe = [0u8; 8];
            let tail_ram = second.is_none_or(|(_, g)| probe.get_mut(..tail.len()).is_some_and(|p| ctx.read_phys(g, p)));
            tail_ram && probe.get_mut(..head.len()).is_some_and(|p| ctx.read_phys(gpa, p))
        };
        // Both pages must be RAM before either is written: all or nothing.
        if ram(&mut *self.ctx) {
            let done = self.ctx.write_phys(gpa, head) && second.is_none_or(|(_, g)| self.ctx.write_phys(g, tail));
            if done {
                return Access::Done;
            }
        }
        let mut bytes = [0; 8];
        let n = data.len().min(8);
        if let (Some(dst), Some(src)) = (bytes.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.mmio = Some(Mmio { gpa, len: n, is_write: true, data: bytes });
        Access::Mmio
    }
}

impl EmulatedGuest<'_> {
    /// `segment:offset` for `len` bytes, to guest-physical addresses: the
    /// segment's checks ([`segment_allows`]) and base (in 64-bit mode only
    /// FS and GS have a base, nothing of the segment is checked, and the
    /// address must be canonical, SDM Vol. 3A, 3.3.7.1), then the guest's
    /// tables with the rights of the access. The first byte's guest-physical address,
    /// and, for an access that crosses into a second page, where in it the
    /// second page starts and that page's address: the two pages are
    /// translated apart, as the processor does. An MMIO access that
    /// crosses a page goes to userspace whole, at its first address.
    fn translate(&mut self, segment: Segment, offset: u64, len: usize, write: bool) -> Result<(u64, Option<(usize, u64)>), Access> {
        let seg = segment_of(&self.sregs, segment);
        let long = mode(&self.sregs) == Mode::Bits64;
        let segment_fault = Access::Fault(Exception { vector: if segment == Segment::Ss { 12 } else { 13 }, error_code: Some(0) });
        let len = len.max(1);
        let protected = Cr0::from_bits_retain(self.sregs.cr0).contains(Cr0::PE);
        if !long && !segment_allows(seg, protected, offset, len as u64, write) {
            return Err(segment_fault);
        }
        let base = if long && !matches!(segment, Segment::Fs | Segment::Gs) { 0 } else { seg.base };
        let address = wrap(&self.sregs, base.wrapping_add(offset));
        let last = wrap(&self.sregs, address.wrapping_add(len as u64 - 1));
        if long && !(canonical(address) && canonical(last)) {
            return Err(segment_fault);
        }
        let gpa = self.page(address, write)?;
        if address >> 12 == last >> 12 {
            return Ok((gpa, None));
        }
        let split = (0x1000 - (address & 0xFFF)) as usize;
        let second = self.page(last & !0xFFF, write)?;
        Ok((gpa, Some((split, second))))
    }

    /// One page's translation, with the rights of the access.
    fn page(&mut self, address: u64, write: bool) -> Result<u64, Access> {
        let access = LinearAccess { write, user: cpl(&self.sregs) == 3, fetch: false };
        self.ctx.translate(address, access).map_err(|error_code| {
            self.fault_address = address;
            Access::Fault(Exception { vector: 14, error_code: Some(error_code) })
        })
    }
}

/// Whether `len` bytes at `offset` may be read or written through `seg`
/// outside 64-bit mode; if not, the access is `#GP(0)`, or `#SS(0)`
/// through SS. The checks of SDM Vol. 3A, 5.3 "Limit Checking" and 5.4
/// "Type Checking", in `protected` mode (CR0.PE) and in real mode, where
/// a segment keeps the attributes it was given in protected mode (9.9.2):
///
/// - in protected mode, the segment is usable: not loaded with the null
///   selector (5.4.1);
/// - a write needs a writable data segment (type bit 1, W, with bit 3
///   clear); a code segment is never writable in protected mode, and in
///   real mode is written when it is readable, as Linux's emulator allows;
/// - a read of a code segment needs it readable (bit 1, R);
/// - every byte lies within the segment: offsets 0 to the limit, or for
///   an expand-down data segment (bit 2, E) the limit plus 1 up to
///   0xFFFF, or 0xFFFF_FFFF when its B flag (`db`) is set.
fn segment_allows(seg: &KvmSegment, protected: bool, offset: u64, len: u64, write: bool) -> bool {
    let code = seg.type_ & 8 != 0;
    // Bit 1: W of a data segment, R of a code segment.
    let rw = seg.type_ & 2 != 0;
    if protected && seg.unusable != 0 {
        return false;
    }
    let rights = match (write, code) {
        (true, true) => rw && !protected,
        (true, false) | (false, true) => rw,
        (false, false) => true,
    };
    let last = offset.saturating_add(len.max(1) - 1);
    let limit = u64::from(seg.limit);
    let within = if !code && seg.type_ & 4 != 0 {
        let top = if seg.db != 0 { 0xFFFF_FFFF } else { 0xFFFF };
        offset > limit && last <= top
    } else {
        last <= limit
    };
    rights && within
}

/// Bits 63:47 of a 64-bit linear address all equal bit 47.
fn canonical(address: u64) -> bool {
    let top = address >> 47;
    top == 0 || top == 0x1_FFFF
}
// ANCHOR_END: emulated_guest

/// The emulator's mode for the code segment: 64-bit with EFER.LMA and
/// CS.L, else 32-bit with CS.D, else 16-bit (real mode included).
fn mode(sregs: &KvmSregs) -> Mode {
    if Efer::from_bits_retain(sregs.efer).contains(Efer::LMA) && sregs.cs.l != 0 {
        Mode::Bits64
    } else if Cr0::from_bits_retain(sregs.cr0).contains(Cr0::PE) && sregs.cs.db != 0 {
        Mode::Bits32
    } else {
        Mode::Bits16
    }
}

/// The stack's address size: SS.B.
fn stack_size(sregs: &KvmSregs) -> Size {
    if sregs.ss.db != 0 { Size::Dword } else { Size::Word }
}

/// The current privilege level: CS's DPL in protected mode, 0 in real mode.
fn cpl(sregs: &KvmSregs) -> u8 {
    if Cr0::from_bits_retain(sregs.cr0).contains(Cr0::PE) { sregs.cs.dpl & 3 } else { 0 }
}

fn segment_of(sregs: &KvmSregs, segment: Segment) -> &KvmSegment {
    match segment {
        Segment::Es => &sregs.es,
        Segment::Cs => &sregs.cs,
        Segment::Ss => &sregs.ss,
        Segment::Ds => &sregs.ds,
        Segment::Fs => &sregs.fs,
        Segment::Gs => &sregs.gs,
    }
}

/// A segment's base plus `offset`.
fn linear(sregs: &KvmSregs, seg: &KvmSegment, offset: u64) -> u64 {
    let long = mode(sregs) == Mode::Bits64;
    wrap(sregs, if long { offset } else { seg.base.wrapping_add(offset) })
}

/// Linear addresses are 32 bits wide outside long mode.
fn wrap(sregs: &KvmSregs, address: u64) -> u64 {
    if mode(sregs) == Mode::Bits64 { address } else { address & 0xFFFF_FFFF }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
