//@ stage 12
//! The real-mode exception handler on a fake vCPU: instruction bytes in
//! its RAM at CS:IP, the exceptions it queues recorded.

use super::super::fake::FakeContext;
use super::super::{VmExit, handle_exit};
use super::*;
use crate::abi::{self, KvmSegment};
use crate::stats::Counter;

/// A real-mode vCPU at 0x1000:0x0100 (code at physical 0x10100) with
/// `code` there, 1 MiB of RAM, DS at 0x2000.
fn at(code: &[u8]) -> FakeContext {
    let mut ctx = FakeContext { ram: vec![0; 0x10_0000], rip: 0x100, ..FakeContext::default() };
    ctx.sregs.cr0 = 0x10;
    ctx.sregs.cs = KvmSegment { type_: 0xB, ..KvmSegment::real_mode(0x1000) };
    for seg in [&mut ctx.sregs.ds, &mut ctx.sregs.es, &mut ctx.sregs.ss, &mut ctx.sregs.fs, &mut ctx.sregs.gs] {
        *seg = KvmSegment::real_mode(0x2000);
    }
    ctx.ram[0x10100..0x10100 + code.len()].copy_from_slice(code);
    ctx
}

fn gp(ctx: &mut FakeContext, run: &mut KvmRun) -> Action {
    handle_exit(&VmExit::Exception { vector: 13, error_code: 0 }, ctx, run)
}

#[test]
fn hlt_takes_the_hlt_exit_path() {
    let mut ctx = at(&[0xF4]);
    let mut run = KvmRun::default();
    assert_eq!(gp(&mut ctx, &mut run), Action::ToUser);
    assert_eq!((run.exit_reason, ctx.skipped), (abi::KVM_EXIT_HLT, 1));
    assert_eq!(ctx.counted(Counter::HaltExits), 1);
}

#[test]
fn control_registers_move_through_the_cr_handler() {
    // mov eax, cr0; then mov cr0, ebx with PE set: protected mode.
    let mut ctx = at(&[0x0F, 0x20, 0xC0]);
    ctx.regs[0] = 0xFFFF_FFFF;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.regs[0], ctx.skipped), (0x10, 3));
    let mut ctx = at(&[0x0F, 0x22, 0xC3]);
    ctx.regs[3] = 0x11;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cr0, ctx.skipped), (0x11, 3));
    // clts and lmsw [0x10] (which cannot clear PE, and here sets it).
    let mut ctx = at(&[0x0F, 0x06]);
    ctx.sregs.cr0 = 0x18;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!(ctx.sregs.cr0, 0x10);
    let mut ctx = at(&[0x0F, 0x01, 0x36, 0x10, 0x00]);
    ctx.ram[0x20010..0x20012].copy_from_slice(&[0x03, 0x00]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cr0, ctx.skipped), (0x13, 5));
}

#[test]
fn lgdt_and_lidt_read_their_operand_through_ds() {
    // lgdt [0x40]: limit 0x17, base 0x12345678, of which 24 bits count.
    let mut ctx = at(&[0x0F, 0x01, 0x16, 0x40, 0x00]);
    ctx.ram[0x20040..0x20046].copy_from_slice(&[0x17, 0x00, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.gdt.base, ctx.sregs.gdt.limit, ctx.skipped), (0x34_5678, 0x17, 5));
    // o32 lidt [0x40]: all 32 bits.
    let mut ctx = at(&[0x66, 0x0F, 0x01, 0x1E, 0x40, 0x00]);
    ctx.ram[0x20040..0x20046].copy_from_slice(&[0xFF, 0x03, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.idt.base, ctx.sregs.idt.limit), (0x1234_5678, 0x3FF));
    // An operand past the segment's limit: the guest's #GP.
    let mut ctx = at(&[0x0F, 0x01, 0x16, 0xFE, 0xFF]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped), (Some((13, None)), 0));
}

#[test]
fn segment_loads_far_jumps_and_int_have_real_mode_meaning() {
    // mov es, ax
    let mut ctx = at(&[0x8E, 0xC0]);
    ctx.regs[0] = 0x1234;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.es.selector, ctx.sregs.es.base, ctx.skipped), (0x1234, 0x12340, 2));
    // jmp 0xF000:0x1234
    let mut ctx = at(&[0xEA, 0x34, 0x12, 0x00, 0xF0]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cs.selector, ctx.sregs.cs.base, ctx.rip), (0xF000, 0xF_0000, 0x1234));
    assert_eq!(ctx.sregs.cs.type_, 0xB, "the attributes stay");
    // int 0x10: returns after it.
    let mut ctx = at(&[0xCD, 0x10]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped), (Some((0x10, None)), 2));
}

#[test]
fn other_instructions_go_to_the_emulator_or_to_userspace() {
    // mov ax, [0x10]: the emulator runs it (an unusable DS in 16-bit
    // protected mode faulted it).
    let mut ctx = at(&[0xA1, 0x10, 0x00]);
    ctx.ram[0x20010..0x20012].copy_from_slice(&[0x34, 0x12]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.regs[0] & 0xFFFF, ctx.rip), (0x1234, 0x103));
    // cpuid is neither's: userspace hears of the #GP.
    let mut ctx = at(&[0x0F, 0xA2]);
    let mut run = KvmRun::default();
    assert_eq!(handle_exit(&VmExit::Exception { vector: 13, error_code: 0x18 }, &mut ctx, &mut run), Action::ToUser);
    assert_eq!((run.exit_reason, run.exit.ex().exception, run.exit.ex().error_code), (abi::KVM_EXIT_EXCEPTION, 13, 0x18));
    // mov cs, ax: #UD for the guest.
    let mut ctx = at(&[0x8E, 0xC8]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!(ctx.queued, Some((6, None)));
}

#[test]
fn the_guests_own_exceptions_go_to_its_ivt_traps_after_the_instruction() {
    let mut ctx = at(&[0x0F, 0x0B]);
    assert_eq!(handle_exit(&VmExit::Exception { vector: 6, error_code: 0 }, &mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped), (Some((6, None)), 0), "#UD: a fault, at the ud2");
    let mut ctx = at(&[0xCC]);
    assert_eq!(handle_exit(&VmExit::Exception { vector: 3, error_code: 0 }, &mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped), (Some((3, None)), 1), "#BP: after the int3");
    // In protected mode an exception exit still goes to userspace.
    let mut ctx = at(&[0x0F, 0x0B]);
    ctx.sregs.cr0 = 0x11;
    let mut run = KvmRun::default();
    assert_eq!(handle_exit(&VmExit::Exception { vector: 6, error_code: 0 }, &mut ctx, &mut run), Action::ToUser);
    assert_eq!(run.exit_reason, abi::KVM_EXIT_EXCEPTION);
}
