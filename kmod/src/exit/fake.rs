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
    //@ begin 12
    /// The MSRs written, as (index, value).
    pub msrs: Vec<(u32, u64)>,
    /// The guest's debug registers and the debugger.
    pub debug: crate::debug::DebugState,
    /// Calls of `instruction_done` (`skip_instruction` does not count).
    pub instructions_done: u32,
    //@ end
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
    //@ begin 10
    pub rip: u64,
    pub rflags: u64,
    /// Guest RAM from guest-physical 0: `translate` is the identity, and
    /// everything past `ram` is MMIO.
    pub ram: Vec<u8>,
    /// A linear address whose translation faults, with its error code.
    pub fault_at: Option<(u64, u32)>,
    /// The MMIO read userspace was asked for, and the data it gave.
    pub mmio_expected: Option<(u64, usize)>,
    pub mmio_data: Option<(u64, usize, [u8; 8])>,
    //@ end
    //@ begin 13
    /// What `page_fault` answers for an address that is backed: a write
    /// to a protected guest table, to emulate (`mapped` is not noted).
    pub table_write: bool,
    /// The faults the emulator declined, as (address, error code).
    pub declined: Vec<(u64, u32)>,
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
        //@ begin 13
        if self.table_write && address < self.backed {
            return PageFault::TableWrite;
        }
        //@ end
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
    //@ begin 12

    fn read_msr(&self, index: u32) -> Option<u64> {
        match super::msr::home(index)? {
            super::msr::MsrHome::Constant(value) => Some(value),
            _ => Some(self.msrs.iter().find(|(i, _)| *i == index).map_or(0, |(_, v)| *v)),
        }
    }

    fn write_msr(&mut self, index: u32, value: u64) -> bool {
        if super::msr::home(index).is_none() {
            return false;
        }
        self.msrs.retain(|(i, _)| *i != index);
        self.msrs.push((index, value));
        true
    }
    //@ end
    //@ begin 10

    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.rflags = rflags;
    }

    fn translate(&mut self, address: u64, _access: super::mmio::LinearAccess) -> Result<u64, u32> {
        match self.fault_at {
            Some((at, error_code)) if at >> 12 == address >> 12 => Err(error_code),
            _ => Ok(address),
        }
    }

    fn read_phys(&mut self, gpa: u64, data: &mut [u8]) -> bool {
        let start = gpa as usize;
        match self.ram.get(start..start + data.len()) {
            Some(src) => {
                data.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    fn write_phys(&mut self, gpa: u64, data: &[u8]) -> bool {
        let start = gpa as usize;
        match self.ram.get_mut(start..start + data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    fn expect_mmio_read(&mut self, gpa: u64, len: usize) {
        self.mmio_expected = Some((gpa, len));
    }

    //@ begin 13
    fn table_write_declined(&mut self, address: u64, error_code: u32) -> PageFault {
        self.declined.push((address, error_code));
        self.mapped.push(address);
        PageFault::Fixed
    }
    //@ end

    fn completed_mmio_read(&mut self, gpa: u64, len: usize) -> Option<[u8; 8]> {
        match self.mmio_data {
            Some((g, l, data)) if (g, l) == (gpa, len) => {
                self.mmio_data = None;
                Some(data)
            }
            _ => None,
        }
    }
    //@ end
    //@ begin 12

    fn debug_state(&mut self) -> &mut crate::debug::DebugState {
        &mut self.debug
    }

    fn instruction_done(&mut self) {
        self.instructions_done += 1;
    }
    //@ end

    fn count(&mut self, counter: Counter) {
        self.counts[counter as usize] += 1;
    }
}
