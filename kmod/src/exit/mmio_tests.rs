//@ stage 10
//! Host tests of MMIO emulation, on the fake vCPU: RAM below 64 KiB,
//! MMIO above, flat 32-bit protected mode.

use super::*;
use crate::exit::fake::FakeContext;
use crate::exit::{Action, handle_exit, VmExit};

/// Flat 32-bit segments, and `code` at 0x1000 where RIP points.
fn prot32(code: &[u8]) -> FakeContext {
    let flat = KvmSegment { base: 0, limit: 0xFFFF_FFFF, db: 1, s: 1, present: 1, type_: 3, g: 1, ..KvmSegment::default() };
    let sregs = KvmSregs { cr0: 0x11, cs: KvmSegment { type_: 0xB, ..flat }, ds: flat, es: flat, ss: flat, ..KvmSregs::default() };
    let mut ram = vec![0; 0x10000];
    ram[0x1000..0x1000 + code.len()].copy_from_slice(code);
    FakeContext { sregs, ram, rip: 0x1000, rflags: 2, backed: 0x10000, ..FakeContext::default() }
}

fn fault_at(address: u64) -> VmExit {
    VmExit::PageFault { address, error_code: 2 }
}

#[test]
fn a_write_completes_and_goes_to_userspace_with_its_data() {
    // mov dword [ebx], 0x12345678
    let mut ctx = prot32(&[0xC7, 0x03, 0x78, 0x56, 0x34, 0x12]);
    ctx.regs[3] = 0xC000_0010;
    let mut run = KvmRun::default();
    assert_eq!(handle_exit(&fault_at(0xC000_0010), &mut ctx, &mut run), Action::ToUser);
    assert_eq!(run.exit_reason, abi::KVM_EXIT_MMIO);
    let m = run.exit.mmio();
    assert_eq!((m.phys_addr, m.len, m.is_write), (0xC000_0010, 4, 1));
    assert_eq!(m.data[..4], [0x78, 0x56, 0x34, 0x12]);
    assert_eq!(ctx.rip, 0x1006, "the instruction is done");
    assert_eq!(ctx.counted(Counter::MmioExits), 1);
}

#[test]
fn a_read_waits_for_userspace_then_completes_with_its_data() {
    // mov ax, [ebx + 2]
    let mut ctx = prot32(&[0x66, 0x8B, 0x43, 0x02]);
    ctx.regs[3] = 0xC000_0000;
    ctx.regs[0] = 0xFFFF_FFFF_FFFF_FFFF;
    let mut run = KvmRun::default();
    assert_eq!(handle_exit(&fault_at(0xC000_0002), &mut ctx, &mut run), Action::ToUser);
    let m = run.exit.mmio();
    assert_eq!((m.phys_addr, m.len, m.is_write), (0xC000_0002, 2, 0));
    assert_eq!((ctx.rip, ctx.mmio_expected), (0x1000, Some((0xC000_0002, 2))), "nothing done yet");
    // Userspace answers; the next KVM_RUN runs the instruction again.
    ctx.mmio_data = Some((0xC000_0002, 2, [0x34, 0x12, 0, 0, 0, 0, 0, 0]));
    assert_eq!(resume(&mut ctx, &mut run), Action::Resume);
    assert_eq!((ctx.regs[0], ctx.rip), (0xFFFF_FFFF_FFFF_1234, 0x1004), "ax only");
    assert_eq!(ctx.mmio_data, None, "the data is used once");
}

#[test]
fn a_fault_on_the_guests_tables_reaches_its_handler() {
    // mov eax, [ebx]: the fetch works, the data's page faults.
    let mut ctx = prot32(&[0x8B, 0x03]);
    ctx.regs[3] = 0xC000_0000;
    ctx.fault_at = Some((0xC000_0000, 0x4));
    let mut run = KvmRun::default();
    assert_eq!(emulate_fault(&mut ctx, &mut run), Some(Action::Resume));
    assert_eq!((ctx.queued, ctx.sregs.cr2, ctx.rip), (Some((14, Some(0x4))), 0xC000_0000, 0x1000));
}

#[test]
fn an_unknown_instruction_says_so_and_code_outside_memory_is_not_run() {
    // hlt is not an instruction with a memory operand.
    let mut ctx = prot32(&[0xF4]);
    let mut run = KvmRun::default();
    assert_eq!(emulate_fault(&mut ctx, &mut run), Some(Action::ToUser));
    assert_eq!((run.exit_reason, run.exit.hw().hardware_exit_reason), (abi::KVM_EXIT_UNKNOWN, EMULATION_FAILED));
    let mut ctx = prot32(&[]);
    ctx.rip = 0x2_0000;
    assert_eq!(emulate_fault(&mut ctx, &mut KvmRun::default()), None, "RIP outside RAM");
}

#[test]
fn a_segment_limit_is_general_protection() {
    // mov eax, [ebx] with a 4 KiB data segment.
    let mut ctx = prot32(&[0x8B, 0x03]);
    ctx.sregs.ds.limit = 0xFFF;
    ctx.regs[3] = 0xFFE;
    assert_eq!(emulate_fault(&mut ctx, &mut KvmRun::default()), Some(Action::Resume));
    assert_eq!(ctx.queued, Some((13, Some(0))));
}

#[test]
fn ram_accesses_of_an_emulated_instruction_stay_in_the_kernel() {
    // add [ebx], eax where ebx is RAM: done here, no exit.
    let mut ctx = prot32(&[0x01, 0x03]);
    ctx.regs[3] = 0x2000;
    ctx.regs[0] = 5;
    ctx.ram[0x2000] = 7;
    assert_eq!(emulate_fault(&mut ctx, &mut KvmRun::default()), Some(Action::Resume));
    assert_eq!((ctx.ram[0x2000], ctx.rip), (12, 0x1002));
}

#[test]
fn an_access_across_two_pages_of_ram_stays_in_the_kernel() {
    // add [ebx], eax where the dword straddles 0x2FFE..0x3001.
    let mut ctx = prot32(&[0x01, 0x03]);
    ctx.regs[3] = 0x2FFE;
    ctx.regs[0] = 0x0101_0101;
    ctx.ram[0x2FFE..0x3002].copy_from_slice(&[1, 2, 3, 4]);
    assert_eq!(emulate_fault(&mut ctx, &mut KvmRun::default()), Some(Action::Resume));
    assert_eq!(ctx.ram[0x2FFE..0x3002], [2, 3, 4, 5]);
    // A straddle whose second page faults: nothing is written.
    ctx.rip = 0x1000;
    ctx.fault_at = Some((0x3000, 0x2));
    assert_eq!(emulate_fault(&mut ctx, &mut KvmRun::default()), Some(Action::Resume));
    assert_eq!((ctx.queued, ctx.sregs.cr2), (Some((14, Some(0x2))), 0x3000));
    assert_eq!(ctx.ram[0x2FFE..0x3002], [2, 3, 4, 5], "all or nothing");
}

#[test]
fn a_non_canonical_address_in_64_bit_mode_is_general_protection() {
    // mov eax, [rbx] in 64-bit code, rbx = 0x0000_8000_0000_0000.
    let mut ctx = prot32(&[0x8B, 0x03]);
    ctx.sregs.efer = 0x500;
    ctx.sregs.cs.l = 1;
    ctx.sregs.cs.db = 0;
    ctx.regs[3] = 0x0000_8000_0000_0000;
    assert_eq!(emulate_fault(&mut ctx, &mut KvmRun::default()), Some(Action::Resume));
    assert_eq!(ctx.queued, Some((13, Some(0))));
}

/// A data segment: type 3 (read/write, accessed), or 7 with `down`
/// (expand-down), with `db` as its B flag.
fn data(limit: u32, down: bool, db: u8) -> KvmSegment {
    let type_ = if down { 7 } else { 3 };
    KvmSegment { base: 0, limit, type_, db, s: 1, present: 1, ..KvmSegment::default() }
}

/// Whether `len` bytes at `offset` of `seg` pass, in protected mode.
fn allows(seg: &KvmSegment, offset: u64, len: u64, write: bool) -> bool {
    segment_allows(seg, true, offset, len, write)
}

#[test]
fn an_expand_down_segment_is_valid_above_its_limit_up_to_64_kib_without_b() {
    // SDM Vol. 3A, 5.3: with B clear, offsets limit + 1 to 0xFFFF.
    let seg = data(0x0FFF, true, 0);
    assert!(!allows(&seg, 0x0FFF, 1, false), "the limit itself");
    assert!(!allows(&seg, 0x0FFE, 4, false), "across the limit");
    assert!(!allows(&seg, 0, 1, false), "the bottom");
    assert!(allows(&seg, 0x1000, 1, false), "limit + 1");
    assert!(allows(&seg, 0x1000, 4, true));
    assert!(allows(&seg, 0xFFFF, 1, false), "the top");
    assert!(allows(&seg, 0xFFFC, 4, true), "the last 4 bytes");
    assert!(!allows(&seg, 0xFFFD, 4, false), "across the top");
    assert!(!allows(&seg, 0x1_0000, 1, false), "past the top");
    // A limit of 0xFFFF leaves nothing valid.
    assert!(!allows(&data(0xFFFF, true, 0), 0xFFFF, 1, false));
}

#[test]
fn an_expand_down_segment_is_valid_above_its_limit_up_to_4_gib_with_b() {
    let seg = data(0x0FFF, true, 1);
    assert!(!allows(&seg, 0x0FFF, 1, false), "the limit itself");
    assert!(!allows(&seg, 0x0FFC, 8, true), "across the limit");
    assert!(allows(&seg, 0x1000, 8, true), "limit + 1");
    assert!(allows(&seg, 0x1_0000, 4, false), "above 64 KiB");
    assert!(allows(&seg, 0xFFFF_FFFF, 1, true), "the top");
    assert!(allows(&seg, 0xFFFF_FFF8, 8, false), "the last 8 bytes");
    assert!(!allows(&seg, 0xFFFF_FFFE, 4, false), "across the top");
    // A limit G scales (a descriptor's 0xFF, in 4 KiB units) reaches
    // `kvm_segment` scaled, 0xF_FFFF: still the last offset not valid.
    assert!(!allows(&data(0x000F_FFFF, true, 1), 0x000F_FFFF, 1, false));
    assert!(allows(&data(0x000F_FFFF, true, 1), 0x0010_0000, 1, false));
}

#[test]
fn an_expand_up_segment_is_valid_up_to_its_limit() {
    let seg = data(0x0FFF, false, 1);
    assert!(allows(&seg, 0, 1, true) && allows(&seg, 0x0FFC, 4, true) && allows(&seg, 0x0FFF, 1, false));
    assert!(!allows(&seg, 0x0FFD, 4, false) && !allows(&seg, 0x1000, 1, false));
    // The B flag counts only for expand-down segments.
    assert!(!allows(&data(0x0FFF, false, 0), 0x1000, 1, false));
}

#[test]
fn segment_types_and_the_null_selector_are_checked() {
    // SDM Vol. 3A, 5.4: a read-only data segment is read, not written.
    let read_only = KvmSegment { type_: 1, ..data(0xFFFF, false, 1) };
    assert!(allows(&read_only, 0x10, 4, false) && !allows(&read_only, 0x10, 4, true));
    let read_only_down = KvmSegment { type_: 5, ..data(0x0FFF, true, 0) };
    assert!(allows(&read_only_down, 0x1000, 2, false) && !allows(&read_only_down, 0x1000, 2, true));
    // A code segment (through a CS override): read if readable, written
    // only in real mode; bit 2 is "conforming" there, not expand-down.
    let code = KvmSegment { type_: 0xB, ..data(0xFFFF, false, 1) };
    let execute_only = KvmSegment { type_: 0x8, ..code };
    let conforming = KvmSegment { type_: 0xE, ..code };
    assert!(allows(&code, 0x10, 4, false) && !allows(&code, 0x10, 4, true));
    assert!(segment_allows(&code, false, 0x10, 4, true), "real mode writes a readable code segment");
    assert!(!allows(&execute_only, 0x10, 1, false) && !segment_allows(&execute_only, false, 0x10, 1, false));
    assert!(allows(&conforming, 0xFFFF, 1, false) && !allows(&conforming, 0x1_0000, 1, false));
    // 5.4.1: a segment loaded with the null selector, in protected mode.
    let null = KvmSegment { unusable: 1, present: 0, ..data(0xFFFF_FFFF, false, 1) };
    assert!(!allows(&null, 0x10, 1, false) && !allows(&null, 0x10, 1, true));
    assert!(segment_allows(&null, false, 0x10, 1, true), "real mode has no null selector");
}

#[test]
fn an_emulated_access_through_an_expand_down_segment_faults_below_its_limit() {
    // mov eax, [ebx] through DS, expand-down with B clear: the bytes at
    // 0xFFC to 0xFFFF are RAM, the read of RAM done in the kernel.
    let run = |ebx: u64, ss: bool| {
        // mov eax, [ebp]: SS is the segment.
        let mut ctx = if ss { prot32(&[0x8B, 0x45, 0x00]) } else { prot32(&[0x8B, 0x03]) };
        ctx.sregs.ds = data(0x0FFF, true, 0);
        ctx.sregs.ss = data(0x0FFF, true, 1);
        ctx.regs[if ss { 5 } else { 3 }] = ebx;
        assert_eq!(emulate_fault(&mut ctx, &mut KvmRun::default()), Some(Action::Resume));
        assert_eq!(ctx.rip == 0x1000, ctx.queued.is_some(), "RIP moves on if and only if no fault");
        ctx.queued
    };
    assert_eq!(run(0x0FFF, false), Some((13, Some(0))));
    assert_eq!(run(0x1000, false), None);
    assert_eq!(run(0xFFFC, false), None);
    assert_eq!(run(0xFFFD, false), Some((13, Some(0))));
    assert_eq!(run(0x0FFF, true), Some((12, Some(0))), "#SS through SS");
    assert_eq!(run(0xFFFC, true), None);
}

#[test]
fn an_emulated_write_through_a_read_only_segment_is_general_protection() {
    // mov [ebx], eax through a read-only DS: nothing written.
    let mut ctx = prot32(&[0x89, 0x03]);
    ctx.sregs.ds.type_ = 1;
    ctx.regs[3] = 0x2000;
    ctx.regs[0] = 0x1234_5678;
    assert_eq!(emulate_fault(&mut ctx, &mut KvmRun::default()), Some(Action::Resume));
    assert_eq!((ctx.queued, ctx.rip), (Some((13, Some(0))), 0x1000));
    assert_eq!(ctx.ram[0x2000..0x2004], [0; 4]);
}
//@ begin 13

/// Writes to a guest page table the shadow cache protects (stage 13):
/// emulated, or let through when the emulator declines.
mod table_writes {
    use super::*;

    #[test]
    fn a_write_to_a_protected_table_is_carried_out_by_the_emulator() {
        // mov dword [ebx], 0x5007: a new page-table entry.
        let mut ctx = prot32(&[0xC7, 0x03, 0x07, 0x50, 0x00, 0x00]);
        ctx.table_write = true;
        ctx.regs[3] = 0x3008;
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&fault_at(0x3008), &mut ctx, &mut run), Action::Resume);
        assert_eq!(ctx.ram[0x3008..0x300C], [0x07, 0x50, 0, 0], "the entry is in guest memory");
        assert_eq!(ctx.rip, 0x1006, "the instruction is done");
        assert_eq!((ctx.counted(Counter::PteWrites), ctx.counted(Counter::MmioExits)), (1, 0));
        assert!(ctx.declined.is_empty() && ctx.mapped.is_empty(), "the table stayed protected");
    }

    #[test]
    fn a_pae_entry_changed_by_cmpxchg8b_is_carried_out_by_the_emulator() {
        // lock cmpxchg8b [esi]: EDX:EAX the entry as it is, ECX:EBX the new one.
        let mut ctx = prot32(&[0xF0, 0x0F, 0xC7, 0x0E]);
        ctx.table_write = true;
        ctx.ram[0x3010..0x3018].copy_from_slice(&0x8000_0000_0000_5067u64.to_le_bytes());
        ctx.regs[6] = 0x3010;
        (ctx.regs[2], ctx.regs[0]) = (0x8000_0000, 0x5067);
        (ctx.regs[1], ctx.regs[3]) = (0, 0x6007);
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&fault_at(0x3010), &mut ctx, &mut run), Action::Resume);
        assert_eq!(ctx.ram[0x3010..0x3018], 0x6007u64.to_le_bytes(), "the new entry is in guest memory");
        assert_eq!((ctx.rip, ctx.rflags & 0x40), (0x1004, 0x40), "done, ZF set");
        assert_eq!(ctx.counted(Counter::PteWrites), 1);
        assert!(ctx.declined.is_empty() && ctx.mapped.is_empty(), "the table stayed protected");
    }

    #[test]
    fn an_instruction_the_emulator_does_not_know_is_let_through_unemulated() {
        // fxsave [ebx]: not in the emulator.
        let mut ctx = prot32(&[0x0F, 0xAE, 0x03]);
        ctx.table_write = true;
        ctx.regs[3] = 0x3000;
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&fault_at(0x3000), &mut ctx, &mut run), Action::Resume);
        assert_eq!(ctx.declined, [(0x3000, 2)], "the MMU handles the fault again, unprotecting");
        assert_eq!(ctx.rip, 0x1000, "the guest runs the instruction itself");
        assert_eq!(ctx.ram[0x3000..0x3010], [0; 16]);
    }

    #[test]
    fn a_fault_of_the_emulated_write_reaches_the_guest() {
        // mov [ebx], eax, where the guest's tables refuse the write.
        let mut ctx = prot32(&[0x89, 0x03]);
        ctx.table_write = true;
        ctx.regs[3] = 0x3000;
        ctx.fault_at = Some((0x3000, 0x7));
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&fault_at(0x3000), &mut ctx, &mut run), Action::Resume);
        assert_eq!((ctx.queued, ctx.sregs.cr2, ctx.rip), (Some((14, Some(0x7))), 0x3000, 0x1000));
    }
}

/// `invlpg` where the hardware gave no address (SVM without decode
/// assists): the address comes from the instruction (stage 13).
mod invlpg {
    use super::*;

    fn invlpg(ctx: &mut FakeContext, insn_len: u8) -> Vec<u64> {
        let mut run = KvmRun::default();
        assert_eq!(handle_exit(&VmExit::Invlpg { address: None, insn_len }, ctx, &mut run), Action::Resume);
        core::mem::take(&mut ctx.invlpgs)
    }

    #[test]
    fn the_address_is_the_operands_with_the_segments_base() {
        // invlpg [eax]; fs: invlpg [eax]; invlpg [ebp+0x2000] (SS), wrapping at 4 GiB.
        let mut ctx = prot32(&[0x0F, 0x01, 0x38]);
        ctx.sregs.ds.base = 0x1_0000;
        ctx.sregs.fs = KvmSegment { base: 0x7000_0000, ..ctx.sregs.ds };
        ctx.sregs.ss.base = 0x30_0000;
        ctx.regs[0] = 0x2000;
        ctx.regs[5] = 0xFFFF_F000;
        assert_eq!((invlpg(&mut ctx, 3), ctx.skipped, ctx.flushes), (vec![0x1_2000], 3, 0));
        ctx.ram[0x1000..0x1004].copy_from_slice(&[0x64, 0x0F, 0x01, 0x38]);
        assert_eq!(invlpg(&mut ctx, 4), [0x7000_2000]);
        ctx.ram[0x1000..0x1007].copy_from_slice(&[0x0F, 0x01, 0xBD, 0x00, 0x20, 0x00, 0x00]);
        assert_eq!(invlpg(&mut ctx, 7), [0x30_1000]);
        assert_eq!(ctx.flushes, 0, "nothing dropped everything");
    }

    #[test]
    fn in_64_bit_mode_only_fs_and_gs_have_a_base_and_rip_relative_counts_from_the_next_instruction() {
        let mut ctx = prot32(&[0x0F, 0x01, 0x38]);
        ctx.sregs.efer = Efer::LMA.bits() | Efer::LME.bits();
        ctx.sregs.cs.l = 1;
        ctx.sregs.cs.db = 0;
        ctx.sregs.ds.base = 0x1_0000;
        ctx.sregs.gs = KvmSegment { base: 0xFFFF_8880_0000_0000, ..ctx.sregs.ds };
        ctx.regs[0] = 0x7F00_0000_2000;
        assert_eq!(invlpg(&mut ctx, 3), [0x7F00_0000_2000]);
        ctx.ram[0x1000..0x1004].copy_from_slice(&[0x65, 0x0F, 0x01, 0x38]);
        ctx.regs[0] = 0x2000;
        assert_eq!(invlpg(&mut ctx, 4), [0xFFFF_8880_0000_2000]);
        ctx.ram[0x1000..0x1007].copy_from_slice(&[0x0F, 0x01, 0x3D, 0x10, 0x00, 0x00, 0x00]);
        assert_eq!(invlpg(&mut ctx, 7), [0x1017]);
    }

    #[test]
    fn bytes_that_are_no_invlpg_or_cannot_be_fetched_drop_everything() {
        // The bytes changed under the exit: swapgs (0F 01 F8) is no invlpg.
        let mut ctx = prot32(&[0x0F, 0x01, 0xF8]);
        assert_eq!((invlpg(&mut ctx, 3), ctx.flushes), (vec![], 1));
        ctx.rip = 0x2_0000;
        assert_eq!((invlpg(&mut ctx, 3), ctx.flushes), (vec![], 2), "code outside guest memory");
    }
}
//@ end
