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
    // cpuid is neither's: userspace hears of an instruction the emulator
    // does not know, as from an MMIO access, not of the #GP.
    let mut ctx = at(&[0x0F, 0xA2]);
    let mut run = KvmRun::default();
    assert_eq!(handle_exit(&VmExit::Exception { vector: 13, error_code: 0x18 }, &mut ctx, &mut run), Action::ToUser);
    let unknown = (abi::KVM_EXIT_UNKNOWN, crate::exit::mmio::EMULATION_FAILED);
    assert_eq!((run.exit_reason, run.exit.hw().hardware_exit_reason), unknown);
    assert_eq!(ctx.rip, 0x100, "nothing of it done");
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

/// RSP's index in `regs`.
const SP: usize = 4;

/// Puts `bytes` on the stack (SS base 0x20000) at offset `sp`.
fn on_stack(ctx: &mut FakeContext, sp: usize, bytes: &[u8]) {
    ctx.ram[0x20000 + sp..0x20000 + sp + bytes.len()].copy_from_slice(bytes);
}

#[test]
fn pop_sreg_loads_the_selector_with_a_real_mode_base_and_moves_sp() {
    // pop es: a word at SS:SP.
    let mut ctx = at(&[0x07]);
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x34, 0x12]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.es.selector, ctx.sregs.es.base, ctx.regs[SP], ctx.skipped), (0x1234, 0x12340, 0x8002, 1));
    // o32 pop fs: four bytes popped, the low two loaded.
    let mut ctx = at(&[0x66, 0x0F, 0xA1]);
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x78, 0x56, 0xCD, 0xAB]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.fs.selector, ctx.sregs.fs.base, ctx.regs[SP], ctx.skipped), (0x5678, 0x56780, 0x8004, 3));
    // pop gs at SP 0xFFFE: SP wraps to 0, and bits 31:16 of ESP stay.
    let mut ctx = at(&[0x0F, 0xA9]);
    ctx.regs[SP] = 0xABCD_FFFE;
    on_stack(&mut ctx, 0xFFFE, &[0x00, 0x90]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.gs.selector, ctx.regs[SP]), (0x9000, 0xABCD_0000));
    // pop ds with SS.B set: ESP addresses the stack; DS keeps its limit.
    let mut ctx = at(&[0x1F]);
    ctx.sregs.ss = KvmSegment { db: 1, limit: 0xFFFF_FFFF, ..ctx.sregs.ss };
    ctx.sregs.ds.limit = 0xFFFF_FFFF;
    ctx.regs[SP] = 0x1_0000;
    on_stack(&mut ctx, 0x1_0000, &[0x00, 0x30]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.ds.selector, ctx.sregs.ds.base, ctx.sregs.ds.limit, ctx.regs[SP]), (0x3000, 0x30000, 0xFFFF_FFFF, 0x1_0002));
    // pop ss: the new SS, SP past the word read through the old one.
    let mut ctx = at(&[0x17]);
    ctx.regs[SP] = 0x100;
    on_stack(&mut ctx, 0x100, &[0x00, 0x40]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.ss.selector, ctx.sregs.ss.base, ctx.regs[SP], ctx.skipped), (0x4000, 0x40000, 0x102, 1));
}

#[test]
fn a_pop_past_the_stack_segments_limit_is_the_guests_ss_fault() {
    // SS with a limit of 0x7FFF kept from protected mode: the word at
    // 0x7FFF crosses it.
    let mut ctx = at(&[0x1F]);
    ctx.sregs.ss.limit = 0x7FFF;
    ctx.regs[SP] = 0x7FFF;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped, ctx.regs[SP], ctx.sregs.ds.selector), (Some((12, None)), 0, 0x7FFF, 0x2000));
}

#[test]
fn lds_les_lss_lfs_lgs_load_a_far_pointer_from_memory() {
    // les bx, [0x40]: BX's upper bits stay.
    let mut ctx = at(&[0xC4, 0x1E, 0x40, 0x00]);
    ctx.regs[3] = 0xFFFF_FFFF_0000_0000;
    ctx.ram[0x20040..0x20044].copy_from_slice(&[0x78, 0x56, 0x34, 0x12]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.regs[3], ctx.sregs.es.selector, ctx.sregs.es.base, ctx.skipped), (0xFFFF_FFFF_0000_5678, 0x1234, 0x12340, 4));
    // o32 lss esp, [0x40]: a 32-bit offset, then the selector.
    let mut ctx = at(&[0x66, 0x0F, 0xB2, 0x26, 0x40, 0x00]);
    ctx.regs[SP] = 0xFFFF_FFFF_FFFF_FFFF;
    ctx.ram[0x20040..0x20046].copy_from_slice(&[0x78, 0x56, 0x34, 0x12, 0xBC, 0x9A]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.regs[SP], ctx.sregs.ss.selector, ctx.sregs.ss.base, ctx.skipped), (0x1234_5678, 0x9ABC, 0x9_ABC0, 6));
    // lds si, es:[bx+2], with ES elsewhere; lfs di, [bp] (SS); lgs ax, [0x40].
    let mut ctx = at(&[0x26, 0xC5, 0x77, 0x02]);
    ctx.sregs.es = KvmSegment::real_mode(0x3000);
    ctx.regs[3] = 0x10;
    ctx.ram[0x30012..0x30016].copy_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.regs[6], ctx.sregs.ds.selector, ctx.skipped), (0x2211, 0x4433, 4));
    let mut ctx = at(&[0x0F, 0xB4, 0x7E, 0x00]);
    ctx.sregs.ss = KvmSegment::real_mode(0x5000);
    ctx.regs[5] = 0x20;
    ctx.ram[0x50020..0x50024].copy_from_slice(&[0x01, 0x00, 0x02, 0x00]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.regs[7], ctx.sregs.fs.selector, ctx.sregs.fs.base), (1, 2, 0x20));
    let mut ctx = at(&[0x0F, 0xB5, 0x06, 0x40, 0x00]);
    ctx.ram[0x20040..0x20044].copy_from_slice(&[0xEF, 0xBE, 0xAD, 0xDE]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.regs[0], ctx.sregs.gs.selector, ctx.skipped), (0xBEEF, 0xDEAD, 5));
    // A pointer that crosses DS's limit: the guest's #GP, nothing loaded.
    let mut ctx = at(&[0xC5, 0x06, 0xFE, 0xFF]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped, ctx.sregs.ds.selector, ctx.regs[0]), (Some((13, None)), 0, 0x2000, 0));
    // les ax, ax: #UD.
    let mut ctx = at(&[0xC4, 0xC0]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped), (Some((6, None)), 0));
}

#[test]
fn a_far_call_pushes_cs_then_ip_and_jumps() {
    // call 0x3000:0x0010 at 0x1000:0x0100: CS at SP-2, the next IP at SP-4.
    let mut ctx = at(&[0x9A, 0x10, 0x00, 0x00, 0x30]);
    ctx.regs[SP] = 0x8000;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!(&ctx.ram[0x27FFC..0x28000], &[0x05, 0x01, 0x00, 0x10]);
    assert_eq!((ctx.regs[SP], ctx.sregs.cs.selector, ctx.sregs.cs.base, ctx.rip), (0x7FFC, 0x3000, 0x30000, 0x10));
    assert_eq!(ctx.sregs.cs.type_, 0xB, "the attributes stay");
    // o32 call 0x3000:0x00005678: CS zero-extended, then EIP.
    let mut ctx = at(&[0x66, 0x9A, 0x78, 0x56, 0x00, 0x00, 0x00, 0x30]);
    ctx.regs[SP] = 0x8000;
    ctx.ram[0x27FF8..0x28000].fill(0xAA);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!(&ctx.ram[0x27FF8..0x28000], &[0x08, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00]);
    assert_eq!((ctx.regs[SP], ctx.sregs.cs.selector, ctx.rip), (0x7FF8, 0x3000, 0x5678));
    // call far [0x40], at SP 0: the frame goes at 0xFFFC.
    let mut ctx = at(&[0xFF, 0x1E, 0x40, 0x00]);
    ctx.ram[0x20040..0x20044].copy_from_slice(&[0x34, 0x12, 0x00, 0xF0]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!(&ctx.ram[0x2FFFC..0x30000], &[0x04, 0x01, 0x00, 0x10]);
    assert_eq!((ctx.regs[SP], ctx.sregs.cs.selector, ctx.rip), (0xFFFC, 0xF000, 0x1234));
    // At SP 2 the two words lie on both sides of the wrap.
    let mut ctx = at(&[0x9A, 0x10, 0x00, 0x00, 0x30]);
    ctx.regs[SP] = 2;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((&ctx.ram[0x20000..0x20002], &ctx.ram[0x2FFFE..0x30000]), (&[0x00, 0x10][..], &[0x05, 0x01][..]));
    assert_eq!(ctx.regs[SP], 0xFFFE);
}

#[test]
fn a_far_jump_through_memory_loads_cs_and_ip_and_pushes_nothing() {
    // jmp far [bx]; then o32 jmp far [bx].
    let mut ctx = at(&[0xFF, 0x2F]);
    ctx.regs[3] = 0x40;
    ctx.regs[SP] = 0x8000;
    ctx.ram[0x20040..0x20046].copy_from_slice(&[0x34, 0x12, 0x00, 0xF0, 0x00, 0x00]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cs.selector, ctx.sregs.cs.base, ctx.rip, ctx.regs[SP], ctx.skipped), (0xF000, 0xF_0000, 0x1234, 0x8000, 2));
    let mut ctx = at(&[0x66, 0xFF, 0x2F]);
    ctx.regs[3] = 0x40;
    ctx.ram[0x20040..0x20046].copy_from_slice(&[0x34, 0x12, 0x00, 0x00, 0x00, 0xF0]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cs.selector, ctx.rip), (0xF000, 0x1234));
    // jmp far ax: #UD.
    let mut ctx = at(&[0xFF, 0xE8]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!(ctx.queued, Some((6, None)));
}

#[test]
fn a_far_call_that_cannot_push_or_land_faults_for_the_guest() {
    // SS with a limit of 0x7FFF: at SP 0 the frame would be at 0xFFFC.
    let mut ctx = at(&[0x9A, 0x10, 0x00, 0x00, 0x30]);
    ctx.sregs.ss.limit = 0x7FFF;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped, ctx.regs[SP], ctx.sregs.cs.selector, ctx.rip), (Some((12, None)), 0, 0, 0x1000, 0x100));
    assert!(ctx.ram[0x20000..0x30000].iter().all(|&b| b == 0), "nothing pushed");
    // o32 call to an offset past CS's limit: #GP, nothing pushed.
    let mut ctx = at(&[0x66, 0x9A, 0x00, 0x00, 0x01, 0x00, 0x00, 0x30]);
    ctx.regs[SP] = 0x8000;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.regs[SP], ctx.sregs.cs.selector), (Some((13, None)), 0x8000, 0x1000));
    assert!(ctx.ram[0x27FF8..0x28000].iter().all(|&b| b == 0));
}

#[test]
fn a_far_return_pops_ip_then_cs_then_releases_its_bytes() {
    // retf
    let mut ctx = at(&[0xCB]);
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x34, 0x12, 0x00, 0xF0]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cs.selector, ctx.sregs.cs.base, ctx.rip, ctx.regs[SP]), (0xF000, 0xF_0000, 0x1234, 0x8004));
    // retf 6
    let mut ctx = at(&[0xCA, 0x06, 0x00]);
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x34, 0x12, 0x00, 0xF0]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.rip, ctx.regs[SP]), (0x1234, 0x800A));
    // o32 retf 0x10 at SP 0xFFF8: EIP, then CS in four bytes (the high
    // two dropped); SP wraps.
    let mut ctx = at(&[0x66, 0xCA, 0x10, 0x00]);
    ctx.regs[SP] = 0xFFF8;
    on_stack(&mut ctx, 0xFFF8, &[0x78, 0x56, 0x00, 0x00, 0x23, 0x01, 0xAD, 0xDE]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cs.selector, ctx.rip, ctx.regs[SP]), (0x0123, 0x5678, 0x10));
    // An EIP past CS's limit: #GP, nothing changed.
    let mut ctx = at(&[0x66, 0xCB]);
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x00, 0x00, 0x01, 0x00, 0x00, 0xF0, 0x00, 0x00]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.sregs.cs.selector, ctx.rip, ctx.regs[SP]), (Some((13, None)), 0x1000, 0x100, 0x8000));
    // CS past SS's limit: #SS, nothing changed.
    let mut ctx = at(&[0xCB]);
    ctx.sregs.ss.limit = 0x7FFF;
    ctx.regs[SP] = 0x7FFE;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.sregs.cs.selector, ctx.rip, ctx.regs[SP]), (Some((12, None)), 0x1000, 0x100, 0x7FFE));
}

#[test]
fn iret_pops_ip_cs_and_flags_as_real_mode_writes_them() {
    // iret: FLAGS 0xFFFF leaves bits 3, 5 and 15 clear and bit 1 set, and
    // AC (bit 18) as it was.
    let mut ctx = at(&[0xCF]);
    ctx.rflags = 0x4_0002;
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x34, 0x12, 0x00, 0xF0, 0xFF, 0xFF]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cs.selector, ctx.sregs.cs.base, ctx.rip, ctx.regs[SP]), (0xF000, 0xF_0000, 0x1234, 0x8006));
    assert_eq!((ctx.rflags, ctx.skipped), (0x4_7FD7, 1));
    // iret to FLAGS 0: IF, TF, IOPL cleared.
    let mut ctx = at(&[0xCF]);
    ctx.rflags = 0x3302;
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x34, 0x12, 0x00, 0xF0, 0x00, 0x00]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!(ctx.rflags, 0x2);
    // iretd: EFLAGS all ones writes 257FD5H; VM, VIF and VIP stay.
    let mut ctx = at(&[0x66, 0xCF]);
    ctx.rflags = 0x1A_0002;
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x78, 0x56, 0x00, 0x00, 0x00, 0xF0, 0xAD, 0xDE, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.cs.selector, ctx.rip, ctx.regs[SP], ctx.rflags), (0xF000, 0x5678, 0x800C, 0x3F_7FD7));
    let mut ctx = at(&[0x66, 0xCF]);
    ctx.rflags = 0x0004_0202;
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x78, 0x56, 0x00, 0x00, 0x00, 0xF0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!(ctx.rflags, 0x2, "IF and AC cleared");
    // FLAGS past SS's limit: #SS, nothing changed.
    let mut ctx = at(&[0xCF]);
    ctx.rflags = 0x202;
    ctx.sregs.ss.limit = 0x7FFF;
    ctx.regs[SP] = 0x7FFC;
    assert_eq!(gp(&mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.rflags, ctx.sregs.cs.selector, ctx.rip, ctx.regs[SP]), (Some((12, None)), 0x202, 0x1000, 0x100, 0x7FFC));
}

#[test]
fn a_not_present_descriptor_of_16_bit_protected_mode_is_a_real_mode_load() {
    // pop ds faulted with #NP(selector 0x1238): real mode loads it.
    let mut ctx = at(&[0x1F]);
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x38, 0x12]);
    let np = VmExit::Exception { vector: 11, error_code: 0x1238 };
    assert_eq!(handle_exit(&np, &mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.ds.selector, ctx.sregs.ds.base, ctx.regs[SP], ctx.queued), (0x1238, 0x12380, 0x8002, None));
    // pop ss faulted with #SS(selector): the same.
    let mut ctx = at(&[0x17]);
    ctx.regs[SP] = 0x8000;
    on_stack(&mut ctx, 0x8000, &[0x38, 0x12]);
    let ss = VmExit::Exception { vector: 12, error_code: 0x1238 };
    assert_eq!(handle_exit(&ss, &mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.sregs.ss.selector, ctx.regs[SP], ctx.queued), (0x1238, 0x8002, None));
    // #SS(0) is the stack's limit: the guest's, at the instruction.
    let mut ctx = at(&[0x17]);
    let ss0 = VmExit::Exception { vector: 12, error_code: 0 };
    assert_eq!(handle_exit(&ss0, &mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped, ctx.sregs.ss.selector), (Some((12, None)), 0, 0x2000));
    // An #NP at an instruction that is not a system one still goes to
    // the guest.
    let mut ctx = at(&[0x90]);
    assert_eq!(handle_exit(&np, &mut ctx, &mut KvmRun::default()), Action::Resume);
    assert_eq!((ctx.queued, ctx.skipped), (Some((11, None)), 0));
}

#[test]
fn a_far_pointer_in_mmio_is_read_by_userspace_and_the_instruction_runs_again() {
    // les ax, [0x20] with DS at 0xFFFF0: the pointer at 0x100010, past
    // the fake's 1 MiB of RAM.
    let mut ctx = at(&[0xC4, 0x06, 0x20, 0x00]);
    ctx.sregs.ds = KvmSegment::real_mode(0xFFFF);
    let mut run = KvmRun::default();
    assert_eq!(gp(&mut ctx, &mut run), Action::ToUser);
    assert_eq!(run.exit_reason, abi::KVM_EXIT_MMIO);
    assert_eq!((run.exit.mmio().phys_addr, run.exit.mmio().len, run.exit.mmio().is_write), (0x10_0010, 4, 0));
    assert_eq!((ctx.mmio_expected, ctx.skipped), (Some((0x10_0010, 4)), 0));
    ctx.mmio_data = Some((0x10_0010, 4, [0x34, 0x12, 0x00, 0x30, 0, 0, 0, 0]));
    assert_eq!(super::super::mmio::resume(&mut ctx, &mut run), Action::Resume);
    assert_eq!((ctx.regs[0], ctx.sregs.es.selector, ctx.sregs.es.base, ctx.skipped), (0x1234, 0x3000, 0x30000, 4));
    // A stack in MMIO is not emulated: userspace hears of the #GP.
    let mut ctx = at(&[0x1F]);
    ctx.sregs.ss = KvmSegment::real_mode(0xFFFF);
    ctx.regs[SP] = 0x20;
    let mut run = KvmRun::default();
    assert_eq!(gp(&mut ctx, &mut run), Action::ToUser);
    assert_eq!((run.exit_reason, run.exit.ex().exception), (abi::KVM_EXIT_EXCEPTION, 13));
    assert_eq!(ctx.sregs.ds.selector, 0x2000);
}
