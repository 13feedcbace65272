//@ stage 6
//! Moves to and from CR0, CR3 and CR4.
//!
//! The hardware runs the guest with control registers of the module's
//! choosing (paging on, for the module's page table), so the backend
//! intercepts the guest's moves and the handler keeps the guest's view in
//! the vCPU's special registers, as 2006's `set_cr0` and friends did.
//@ begin 8
//!
//! From stage 08 on, a write is checked as the processor checks it: a
//! value the processor refuses gives the guest #GP(0) and changes nothing
//! (SDM Vol. 3A, 2.5 "Control Registers", and the `MOV—Move to/from
//! Control Registers` page of Vol. 2B; APM Vol. 2, 3.1). Setting CR0.PG
//! with EFER.LME activates long mode (EFER.LMA), and a load of CR3 throws
//! away every translation the guest had: the MMU hears of both.
//@ end

use super::{Action, CrAccess, ExitContext, to_user_unknown};
use crate::abi::{KvmRun, KvmSregs};
use crate::regs::Efer;
//@ begin 8
use crate::regs::{Cr0, Cr4};
//@ end

// ANCHOR: handle_cr
/// Emulates `mov crN, reg` or `mov reg, crN`, then skips it.
pub fn handle_cr(access: &CrAccess, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    let sregs = ctx.sregs();
    let width = operand_mask(&sregs);
    if access.write {
        let value = ctx.gpr(access.gpr) & width;
        let Some(new) = with_cr(&sregs, access.cr, value) else { return to_user_unknown(0, run) };
        //@ begin 8
        let Ok(new) = checked(&sregs, new, access.cr, ctx) else { return give_gp(ctx) };
        //@ end
        ctx.set_sregs(&new);
        //@ begin 8
        // Every load of CR3 flushes the guest's TLB, its own value or not
        // (global pages aside, which rkvm never makes); so does a change of
        // CR4.PGE, which flushes global pages too (SDM Vol. 3A, 4.10.4.1).
        const CR4_PGE: u64 = 1 << 7;
        if access.cr == 3 || access.cr == 4 && (sregs.cr4 ^ new.cr4) & CR4_PGE != 0 {
            ctx.flush_guest_tlb();
        }
        //@ end
    } else {
        let Some(value) = read_cr(&sregs, access.cr) else { return to_user_unknown(0, run) };
        ctx.set_gpr(access.gpr, value & width);
    }
    ctx.skip_instruction(access.insn_len);
    Action::Resume
}
// ANCHOR_END: handle_cr

/// The guest's copy of control register `cr`, if it is one the backend
/// intercepts.
fn read_cr(sregs: &KvmSregs, cr: u8) -> Option<u64> {
    match cr {
        0 => Some(sregs.cr0),
        3 => Some(sregs.cr3),
        4 => Some(sregs.cr4),
        _ => None,
    }
}

/// `sregs` with control register `cr` set to `value`, if it is one the
/// backend intercepts.
fn with_cr(sregs: &KvmSregs, cr: u8, value: u64) -> Option<KvmSregs> {
    let mut new = *sregs;
    match cr {
        0 => new.cr0 = value,
        3 => new.cr3 = value,
        4 => new.cr4 = value,
        _ => return None,
    }
    Some(new)
}

/// Outside 64-bit mode, `mov` to and from control registers moves 32 bits.
fn operand_mask(sregs: &KvmSregs) -> u64 {
    if Efer::from_bits_retain(sregs.efer).contains(Efer::LMA) && sregs.cs.l != 0 { u64::MAX } else { 0xFFFF_FFFF }
}

//@ begin 8
// ANCHOR: write_cr
/// The processor refuses the value: the guest gets #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneralProtection;

/// #GP(0), and the instruction that raised it is not skipped: a fault
/// leaves RIP at the faulting instruction.
fn give_gp(ctx: &mut dyn ExitContext) -> Action {
    const GP_VECTOR: u8 = 13;
    ctx.queue_exception(GP_VECTOR, Some(0));
    Action::Resume
}

/// The write of `new`'s control register `cr` over `old`, as the
/// processor checks it: the registers it leaves, or #GP.
pub fn checked(old: &KvmSregs, new: KvmSregs, cr: u8, ctx: &dyn ExitContext) -> Result<KvmSregs, GeneralProtection> {
    let new = match cr {
        0 => set_cr0(old, new.cr0)?,
        3 => set_cr3(old, new.cr3)?,
        4 => set_cr4(old, new.cr4)?,
        _ => return Err(GeneralProtection),
    };
    if loads_pdptes(old, &new, cr) && !ctx.pdptes_valid(new.cr3) {
        return Err(GeneralProtection);
    }
    Ok(new)
}

/// Writes `value` into CR0 (for `clts` and `lmsw`), checked.
fn write_cr0(value: u64, ctx: &mut dyn ExitContext) -> Result<(), GeneralProtection> {
    let old = ctx.sregs();
    let new = checked(&old, KvmSregs { cr0: value, ..old }, 0, ctx)?;
    ctx.set_sregs(&new);
    Ok(())
}

/// `mov cr0`: 2006's `set_cr0`. Bits 63:32 must be clear; the reserved
/// bits of the low half are ignored, and ET reads as 1 (SDM Vol. 3A,
/// 2.5). PG needs PE, NW needs CD. Turning paging on with EFER.LME set
/// activates long mode, which needs CR4.PAE; turning it off deactivates
/// it, which 64-bit code cannot do (SDM Vol. 3A, 9.8.5 "Initializing
/// IA-32e Mode", 9.8.5.4 "Switching Out of IA-32e Mode Operation").
pub fn set_cr0(sregs: &KvmSregs, value: u64) -> Result<KvmSregs, GeneralProtection> {
    if value >> 32 != 0 {
        return Err(GeneralProtection);
    }
    let cr0 = Cr0::from_bits_truncate(value) | Cr0::ET;
    if cr0.contains(Cr0::PG) && !cr0.contains(Cr0::PE) || cr0.contains(Cr0::NW) && !cr0.contains(Cr0::CD) {
        return Err(GeneralProtection);
    }
    let was_paging = Cr0::from_bits_retain(sregs.cr0).contains(Cr0::PG);
    let mut efer = Efer::from_bits_retain(sregs.efer);
    let pae = Cr4::from_bits_retain(sregs.cr4).contains(Cr4::PAE);
    if cr0.contains(Cr0::PG) && !was_paging && efer.contains(Efer::LME) {
        if !pae || sregs.cs.l != 0 {
            return Err(GeneralProtection);
        }
        efer |= Efer::LMA;
    }
    if !cr0.contains(Cr0::PG) && was_paging && efer.contains(Efer::LMA) {
        if sregs.cs.l != 0 {
            return Err(GeneralProtection);
        }
        efer.remove(Efer::LMA);
    }
    Ok(KvmSregs { cr0: cr0.bits(), efer: efer.bits(), ..*sregs })
}

/// `mov cr3`. In long mode the bits above the physical-address width are
/// reserved (SDM Vol. 3A, 4.5); elsewhere the register is 32 bits wide.
pub fn set_cr3(sregs: &KvmSregs, value: u64) -> Result<KvmSregs, GeneralProtection> {
    let long = Efer::from_bits_retain(sregs.efer).contains(Efer::LMA);
    if long && value >> crate::mmu::maxphyaddr() != 0 {
        return Err(GeneralProtection);
    }
    Ok(KvmSregs { cr3: value, ..*sregs })
}

/// `mov cr4`. Only the bits rkvm offers may be set ([`Cr4::OFFERED`]:
/// the others are reserved or name features the vCPU does not have), and
/// long mode cannot leave PAE paging (SDM Vol. 3A, 2.5; 4.1.1).
pub fn set_cr4(sregs: &KvmSregs, value: u64) -> Result<KvmSregs, GeneralProtection> {
    let cr4 = Cr4::from_bits_retain(value);
    if !Cr4::OFFERED.contains(cr4) {
        return Err(GeneralProtection);
    }
    if Efer::from_bits_retain(sregs.efer).contains(Efer::LMA) && !cr4.contains(Cr4::PAE) {
        return Err(GeneralProtection);
    }
    Ok(KvmSregs { cr4: cr4.bits(), ..*sregs })
}

/// Whether the write from `old` to `new` loads the PDPTEs from CR3: PAE
/// paging is in use afterwards, and the write was to CR3, or changed
/// CR0.PG, CD or NW, or CR4.PAE, PGE or PSE (SDM Vol. 3A, 4.4.1).
fn loads_pdptes(old: &KvmSregs, new: &KvmSregs, cr: u8) -> bool {
    let pae_paging = Cr0::from_bits_retain(new.cr0).contains(Cr0::PG)
        && Cr4::from_bits_retain(new.cr4).contains(Cr4::PAE)
        && !Efer::from_bits_retain(new.efer).contains(Efer::LMA);
    let cr0_bits = (Cr0::PG | Cr0::CD | Cr0::NW).bits();
    let cr4_bits = (Cr4::PAE | Cr4::PGE | Cr4::PSE).bits();
    let changed = match cr {
        0 => (old.cr0 ^ new.cr0) & cr0_bits != 0,
        3 => true,
        4 => (old.cr4 ^ new.cr4) & cr4_bits != 0,
        _ => false,
    };
    pae_paging && changed
}
// ANCHOR_END: write_cr

// ANCHOR: clts_lmsw
/// `clts`: clears CR0.TS, which the guest's FPU code uses to know whether
/// it owns the FPU.
pub fn handle_clts(insn_len: u8, ctx: &mut dyn ExitContext) -> Action {
    let cr0 = Cr0::from_bits_retain(ctx.sregs().cr0) - Cr0::TS;
    if write_cr0(cr0.bits(), ctx).is_err() {
        return give_gp(ctx);
    }
    ctx.skip_instruction(insn_len);
    Action::Resume
}

/// `lmsw`: loads CR0's bits 3:0 (PE, MP, EM, TS) from `value`, except
/// that it can set PE but not clear it (SDM Vol. 2A, "LMSW").
pub fn handle_lmsw(value: u16, insn_len: u8, ctx: &mut dyn ExitContext) -> Action {
    let cr0 = ctx.sregs().cr0 & !0xE | u64::from(value) & 0xF;
    if write_cr0(cr0, ctx).is_err() {
        return give_gp(ctx);
    }
    ctx.skip_instruction(insn_len);
    Action::Resume
}
// ANCHOR_END: clts_lmsw
//@ end

#[cfg(test)]
mod tests {
    use super::super::fake::FakeContext;
    use super::*;

    #[test]
    fn a_write_changes_the_guests_view_and_is_skipped() {
        let mut ctx = FakeContext::default();
        ctx.regs[0] = 0xFFFF_FFFF_0000_0011;
        let access = CrAccess { cr: 0, write: true, gpr: 0, insn_len: 3 };
        assert_eq!(handle_cr(&access, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!(ctx.sregs.cr0, 0x11, "32 bits outside long mode");
        assert_eq!(ctx.skipped, 3);
    }

    #[test]
    fn a_read_gives_the_guests_view() {
        let mut ctx = FakeContext::default();
        ctx.sregs.cr4 = 0x20;
        ctx.regs[3] = u64::MAX;
        let access = CrAccess { cr: 4, write: false, gpr: 3, insn_len: 3 };
        assert_eq!(handle_cr(&access, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!(ctx.regs[3], 0x20);
    }

    #[test]
    fn another_register_goes_to_userspace() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        let access = CrAccess { cr: 8, write: true, gpr: 0, insn_len: 4 };
        assert_eq!(handle_cr(&access, &mut ctx, &mut run), Action::ToUser);
        assert_eq!(ctx.skipped, 0);
    }

    //@ begin 8
    fn prot32() -> KvmSregs {
        KvmSregs { cr0: 0x11, ..KvmSregs::default() }
    }

    #[test]
    fn cr0_refuses_what_the_processor_refuses() {
        let s = prot32();
        assert_eq!(set_cr0(&s, 0x8000_0010), Err(GeneralProtection), "PG without PE");
        assert_eq!(set_cr0(&s, 0x2000_0011), Err(GeneralProtection), "NW without CD");
        assert_eq!(set_cr0(&s, 1 << 32 | 0x11), Err(GeneralProtection), "bit 32");
        let ok = set_cr0(&s, 0x8001_0001 | 0xFF00).expect("paging on");
        assert_eq!(ok.cr0, 0x8001_0011, "reserved bits dropped, ET set");
    }

    #[test]
    fn paging_with_lme_activates_long_mode_only_with_pae() {
        let s = KvmSregs { efer: 0x100, ..prot32() };
        assert_eq!(set_cr0(&s, 0x8000_0011), Err(GeneralProtection), "no PAE");
        let s = KvmSregs { cr4: 0x20, ..s };
        let long = set_cr0(&s, 0x8000_0011).expect("long mode");
        assert_eq!(long.efer, 0x500, "LMA");
        let off = set_cr0(&long, 0x11).expect("back to protected mode");
        assert_eq!(off.efer, 0x100);
        let in_64_bit_code = KvmSregs { cs: crate::abi::KvmSegment { l: 1, ..long.cs }, ..long };
        assert_eq!(set_cr0(&in_64_bit_code, 0x11), Err(GeneralProtection), "64-bit code cannot turn paging off");
    }

    #[test]
    fn cr4_refuses_unoffered_bits_and_long_mode_without_pae() {
        let s = prot32();
        assert_eq!(set_cr4(&s, 1 << 13), Err(GeneralProtection), "VMXE");
        assert_eq!(set_cr4(&s, 1 << 18), Err(GeneralProtection), "OSXSAVE");
        assert_eq!(set_cr4(&s, 1 << 11), Err(GeneralProtection), "a bit the module does not name");
        assert_eq!(set_cr4(&s, 0x7FF).map(|s| s.cr4), Ok(0x7FF), "every offered bit");
        assert_eq!(set_cr4(&s, 0x6B0).map(|s| s.cr4), Ok(0x6B0));
        let long = KvmSregs { efer: 0x500, cr4: 0x20, ..s };
        assert_eq!(set_cr4(&long, 0), Err(GeneralProtection));
    }

    #[test]
    fn cr3_in_long_mode_has_reserved_high_bits() {
        let long = KvmSregs { efer: 0x500, ..prot32() };
        assert_eq!(set_cr3(&long, 1 << 62), Err(GeneralProtection));
        assert_eq!(set_cr3(&long, 0x1000).map(|s| s.cr3), Ok(0x1000));
    }

    #[test]
    fn a_refused_write_is_a_fault_and_changes_nothing() {
        let mut ctx = FakeContext { sregs: prot32(), ..FakeContext::default() };
        ctx.regs[0] = 0x8000_0010;
        let access = CrAccess { cr: 0, write: true, gpr: 0, insn_len: 3 };
        assert_eq!(handle_cr(&access, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!((ctx.sregs.cr0, ctx.skipped), (0x11, 0), "RIP stays at the faulting mov");
        assert_eq!(ctx.queued, Some((13, Some(0))));
    }

    #[test]
    fn pae_paging_checks_the_pdptes_and_every_cr3_load_flushes() {
        let mut ctx = FakeContext { sregs: KvmSregs { cr4: 0x20, ..prot32() }, ..FakeContext::default() };
        ctx.bad_pdptes = true;
        assert_eq!(write_cr0(0x8000_0011, &mut ctx), Err(GeneralProtection));
        ctx.bad_pdptes = false;
        assert_eq!(write_cr0(0x8000_0011, &mut ctx), Ok(()));
        assert_eq!(ctx.flushes, 0);
        ctx.regs[1] = 0x1000;
        let mov_cr3 = CrAccess { cr: 3, write: true, gpr: 1, insn_len: 3 };
        assert_eq!(handle_cr(&mov_cr3, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!(handle_cr(&mov_cr3, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!((ctx.sregs.cr3, ctx.flushes), (0x1000, 2), "the same value flushes too");
    }

    #[test]
    fn a_change_of_cr4_pge_flushes_the_guests_tlb() {
        let mut ctx = FakeContext { sregs: prot32(), ..FakeContext::default() };
        ctx.regs[0] = 0x80;
        let mov_cr4 = CrAccess { cr: 4, write: true, gpr: 0, insn_len: 3 };
        assert_eq!(handle_cr(&mov_cr4, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!(handle_cr(&mov_cr4, &mut ctx, &mut KvmRun::default()), Action::Resume);
        assert_eq!(ctx.flushes, 1, "only the write that changed PGE");
    }

    #[test]
    fn clts_and_lmsw() {
        let mut ctx = FakeContext { sregs: KvmSregs { cr0: 0x19, ..KvmSregs::default() }, ..FakeContext::default() };
        assert_eq!(handle_clts(2, &mut ctx), Action::Resume);
        assert_eq!((ctx.sregs.cr0, ctx.skipped), (0x11, 2));
        assert_eq!(handle_lmsw(0xE, 3, &mut ctx), Action::Resume);
        assert_eq!(ctx.sregs.cr0, 0x1F, "lmsw cannot clear PE");
    }
    //@ end
}
