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
//@ end
