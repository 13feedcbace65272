//@ stage 6
//! Port I/O exits: `in`, `out`, `ins`, `outs`, with or without `rep`.
//!
//! As in 2006, the kernel does not perform port I/O itself: every access
//! goes to userspace in `kvm_run.io`, which finishes the instruction (for
//! `in`, writes RAX; for strings, copies the data and advances RSI/RDI and
//! RCX) and sets `kvm_run.emulated` so that the next `KVM_RUN` skips it.

use super::{Action, ExitContext, IoExit, to_user};
use crate::abi::{self, KvmRun, KvmRunExit, KvmRunIo, KvmRunIoData};
use crate::stats::Counter;

// ANCHOR: handle_io
/// Hands a port access to userspace. One exception: `rep ins`/`outs` with
/// a count of zero does nothing at all, so it is completed here (some
/// processors check the intercept before the count).
pub fn handle_io(io: &IoExit, ctx: &mut dyn ExitContext, run: &mut KvmRun) -> Action {
    ctx.count(Counter::IoExits);
    if io.string.is_some_and(|s| s.rep && s.count == 0) {
        ctx.skip_instruction(io.insn_len);
        return Action::Resume;
    }
    run.exit = KvmRunExit::from_io(kvm_run_io(io));
    ctx.skip_if_emulated(io.insn_len);
    to_user(run, abi::KVM_EXIT_IO)
}

/// `kvm_run.io` for an access.
fn kvm_run_io(io: &IoExit) -> KvmRunIo {
    let direction = if io.is_in { abi::KVM_EXIT_IO_IN } else { abi::KVM_EXIT_IO_OUT };
    let (string, string_down, rep, count, data) = match io.string {
        Some(s) => (1, s.down.into(), s.rep.into(), if s.rep { s.count } else { 1 }, KvmRunIoData::from_address(s.address)),
        None => (0, 0, 0, 1, KvmRunIoData::from_value(io.value)),
    };
    KvmRunIo { direction, size: io.size, string, string_down, rep, pad: 0, port: io.port, count, data }
}
// ANCHOR_END: handle_io

#[cfg(test)]
mod tests {
    use super::super::StringIo;
    use super::super::fake::FakeContext;
    use super::*;

    fn out(port: u16, size: u8, value: u32) -> IoExit {
        IoExit { port, size, is_in: false, string: None, value, insn_len: 1 }
    }

    #[test]
    fn an_out_carries_its_value_and_waits_for_userspace() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        assert_eq!(handle_io(&out(0xE0, 2, 0x1234), &mut ctx, &mut run), Action::ToUser);
        assert_eq!(run.exit_reason, abi::KVM_EXIT_IO);
        let io = *run.exit.io();
        assert_eq!((io.direction, io.size, io.port, io.count, io.string), (abi::KVM_EXIT_IO_OUT, 2, 0xE0, 1, 0));
        assert_eq!(io.data.value(), 0x1234);
        assert_eq!((ctx.skipped, ctx.pending_skip), (0, 1));
        assert_eq!(ctx.counted(Counter::IoExits), 1);
    }

    #[test]
    fn a_rep_string_gives_its_address_count_and_direction() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        let string = StringIo { address: 0x9006, rep: true, down: true, count: 2 };
        let ins = IoExit { port: 0xE4, size: 2, is_in: true, string: Some(string), value: 0, insn_len: 3 };
        assert_eq!(handle_io(&ins, &mut ctx, &mut run), Action::ToUser);
        let io = *run.exit.io();
        assert_eq!((io.direction, io.string, io.string_down, io.rep, io.count), (abi::KVM_EXIT_IO_IN, 1, 1, 1, 2));
        assert_eq!(io.data.address(), 0x9006);
        assert_eq!(ctx.pending_skip, 3);
    }

    #[test]
    fn a_string_without_rep_is_one_element() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        let string = StringIo { address: 0x500, rep: false, down: false, count: 77 };
        let outs = IoExit { port: 0xE8, size: 2, is_in: false, string: Some(string), value: 0, insn_len: 2 };
        handle_io(&outs, &mut ctx, &mut run);
        assert_eq!((run.exit.io().count, run.exit.io().rep), (1, 0));
    }

    #[test]
    fn a_rep_string_of_zero_elements_is_completed_here() {
        let mut ctx = FakeContext::default();
        let mut run = KvmRun::default();
        let string = StringIo { address: 0x500, rep: true, down: false, count: 0 };
        let outs = IoExit { port: 0xE8, size: 1, is_in: false, string: Some(string), value: 0, insn_len: 2 };
        assert_eq!(handle_io(&outs, &mut ctx, &mut run), Action::Resume);
        assert_eq!((ctx.skipped, ctx.pending_skip), (2, 0));
        assert_eq!(run, KvmRun::default());
    }
}
