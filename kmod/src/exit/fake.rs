//@ stage 5
//! A fake vCPU for the handlers' tests: it records what the handlers asked.

use super::ExitContext;
use crate::abi::KvmSregs;
use crate::stats::{Counter, NR_COUNTERS};
use std::vec::Vec;

/// What a handler did to the vCPU.
#[derive(Default)]
pub struct FakeContext {
    /// Bytes skipped now, in total.
    pub skipped: u32,
    /// What the next `KVM_RUN` would skip if userspace emulated.
    pub pending_skip: u8,
    pub regs: [u64; 16],
    pub sregs: KvmSregs,
    /// Guest-physical memory below this address is backed by a slot.
    pub backed: u64,
    /// The addresses `map_guest_page` mapped.
    pub mapped: Vec<u64>,
    pub counts: [u64; NR_COUNTERS],
}

impl FakeContext {
    pub fn counted(&self, counter: Counter) -> u64 {
        self.counts[counter as usize]
    }
}

impl ExitContext for FakeContext {
    fn skip_instruction(&mut self, len: u8) {
        self.skipped += u32::from(len);
    }

    fn skip_if_emulated(&mut self, len: u8) {
        self.pending_skip = len;
    }

    fn gpr(&self, reg: u8) -> u64 {
        self.regs[usize::from(reg)]
    }

    fn set_gpr(&mut self, reg: u8, value: u64) {
        self.regs[usize::from(reg)] = value;
    }

    fn sregs(&self) -> KvmSregs {
        self.sregs
    }

    fn set_sregs(&mut self, sregs: &KvmSregs) {
        self.sregs = *sregs;
    }

    fn map_guest_page(&mut self, gpa: u64) -> bool {
        if gpa < self.backed {
            self.mapped.push(gpa);
        }
        gpa < self.backed
    }

    fn count(&mut self, counter: Counter) {
        self.counts[counter as usize] += 1;
    }
}
