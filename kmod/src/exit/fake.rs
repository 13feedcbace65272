//@ stage 5
//! A fake vCPU for the handlers' tests: it records what the handlers asked.

use super::{ExitContext, PageFault};
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
    /// The addresses `page_fault` mapped.
    pub mapped: Vec<u64>,
    pub counts: [u64; NR_COUNTERS],
    //@ begin 8
    /// What `page_fault` answers for an address that is not backed:
    /// the guest's fault with this error code, or (`None`) not memory.
    pub guest_fault: Option<u32>,
    /// The exception queued last.
    pub queued: Option<(u8, Option<u32>)>,
    /// Calls of `flush_guest_tlb`, and the addresses given to `invlpg`.
    pub flushes: u32,
    pub invlpgs: Vec<u64>,
    /// `pdptes_valid` answers no.
    pub bad_pdptes: bool,
    //@ end
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

    fn page_fault(&mut self, address: u64, _error_code: u32) -> PageFault {
        if address < self.backed {
            self.mapped.push(address);
            return PageFault::Fixed;
        }
        //@ begin 8
        if let Some(error_code) = self.guest_fault {
            return PageFault::Guest { error_code };
        }
        //@ end
        PageFault::NotMemory
    }
    //@ begin 8

    fn flush_guest_tlb(&mut self) {
        self.flushes += 1;
    }

    fn invlpg(&mut self, address: u64) {
        self.invlpgs.push(address);
    }

    fn pdptes_valid(&self, _cr3: u64) -> bool {
        !self.bad_pdptes
    }

    fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.queued = Some((vector, error_code));
    }
    //@ end

    fn count(&mut self, counter: Counter) {
        self.counts[counter as usize] += 1;
    }
}
