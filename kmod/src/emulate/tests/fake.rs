//@ stage 10
//! A made-up guest: sixteen registers, RIP, RFLAGS, and sparse memory
//! addressed linearly (segment base + offset) in which one range plays a
//! device (MMIO, with 2006's protocol: a read leaves and is answered on
//! the next run, a write is recorded and leaves after the instruction) and
//! another faults. Every access is logged.

use super::super::{Access, Exception, Guest, Segment};
use crate::regs::Reg;
use std::collections::BTreeMap;

/// The MMIO range: 4 KiB at 0xFEE0_0000.
pub const MMIO: u64 = 0xFEE0_0000;
pub const MMIO_END: u64 = MMIO + 0x1000;
/// Accesses to this page fault with #PF.
pub const FAULTY: u64 = 0xDEAD_0000;

/// One access, as the emulator asked it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub write: bool,
    pub segment: Segment,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The MMIO exit the last run recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmioExit {
    pub write: bool,
    /// The linear address (the fake's guest-physical one).
    pub address: u64,
    pub len: usize,
    /// Written data, for a write.
    pub data: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
pub struct Fake {
    pub regs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    /// Segment bases, by segment number.
    pub bases: [u64; 6],
    pub memory: BTreeMap<u64, u8>,
    pub log: Vec<Logged>,
    /// The MMIO exit pending for userspace, if any.
    pub exit: Option<MmioExit>,
    /// Userspace's answer to an MMIO read: its address and data, used once.
    pub answer: Option<(u64, Vec<u8>)>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake { rip: 0x1000, rflags: 0x2, ..Fake::default() }
    }

    pub fn with_regs(regs: &[(Reg, u64)]) -> Fake {
        let mut fake = Fake::new();
        for &(r, v) in regs {
            fake.regs[r as usize] = v;
        }
        fake
    }

    pub fn get(&self, r: Reg) -> u64 {
        self.regs[r as usize]
    }

    /// Memory wraps at 2^64, as the addresses of a wrong answer may.
    pub fn poke(&mut self, address: u64, bytes: &[u8]) {
        for (i, b) in (0..).zip(bytes) {
            self.memory.insert(address.wrapping_add(i), *b);
        }
    }

    pub fn peek(&self, address: u64, len: usize) -> Vec<u8> {
        (0..len as u64).map(|i| self.memory.get(&address.wrapping_add(i)).copied().unwrap_or(0)).collect()
    }

    pub fn peek_u64(&self, address: u64, len: usize) -> u64 {
        let mut bytes = [0; 8];
        bytes[..len].copy_from_slice(&self.peek(address, len));
        u64::from_le_bytes(bytes)
    }

    fn linear(&self, segment: Segment, offset: u64) -> u64 {
        self.bases[segment as usize].wrapping_add(offset)
    }

    /// Userspace answers the pending MMIO read with `data`.
    pub fn answer_read(&mut self, data: &[u8]) {
        let exit = self.exit.take().expect("an MMIO read is pending");
        assert!(!exit.write && exit.len == data.len(), "{exit:?}");
        self.answer = Some((exit.address, data.to_vec()));
    }

    /// Userspace takes the pending MMIO write.
    pub fn take_write(&mut self) -> MmioExit {
        let exit = self.exit.take().expect("an MMIO write is pending");
        assert!(exit.write);
        exit
    }
}

fn mmio(address: u64) -> bool {
    (MMIO..MMIO_END).contains(&address)
}

impl Guest for Fake {
    fn reg(&self, reg: Reg) -> u64 {
        self.regs[reg as usize]
    }

    fn set_reg(&mut self, reg: Reg, value: u64) {
        self.regs[reg as usize] = value;
    }

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

    fn read(&mut self, segment: Segment, offset: u64, data: &mut [u8]) -> Access {
        assert!(self.exit.is_none(), "no access after an MMIO exit was recorded");
        let address = self.linear(segment, offset);
        if address >> 16 == FAULTY >> 16 {
            return Access::Fault(Exception { vector: 14, error_code: Some(0) });
        }
        if mmio(address) {
            match self.answer.take() {
                Some((a, bytes)) if a == address && bytes.len() == data.len() => data.copy_from_slice(&bytes),
                other => {
                    assert!(other.is_none(), "the answer was not used by the repeated read");
                    self.exit = Some(MmioExit { write: false, address, len: data.len(), data: Vec::new() });
                    return Access::Mmio;
                }
            }
        } else {
            data.copy_from_slice(&self.peek(address, data.len()));
        }
        self.log.push(Logged { write: false, segment, offset, data: data.to_vec() });
        Access::Done
    }

    fn write(&mut self, segment: Segment, offset: u64, data: &[u8]) -> Access {
        assert!(self.exit.is_none(), "no access after an MMIO exit was recorded");
        let address = self.linear(segment, offset);
        if address >> 16 == FAULTY >> 16 {
            return Access::Fault(Exception { vector: 14, error_code: Some(2) });
        }
        self.log.push(Logged { write: true, segment, offset, data: data.to_vec() });
        if mmio(address) {
            self.exit = Some(MmioExit { write: true, address, len: data.len(), data: data.to_vec() });
            return Access::Mmio;
        }
        self.poke(address, data);
        Access::Done
    }
}
