//@ stage 5
//! The MMU: the page tables the guest really runs on, which the module
//! builds and the guest never sees.
//!
//! Stage 05 has one kind: [`nonpaging`], for a guest whose own paging is
//! off. Shadow paging for guests that turn paging on comes in stage 08.

pub mod nonpaging;

// ANCHOR: guest_fetch
/// Reads guest memory as the guest addresses it, through the tables it
/// runs on. Used with preemption off: it must not sleep or take locks.
pub trait GuestFetch {
    /// Fills `buf` from guest-linear address `linear` on; `false` if any
    /// byte is not mapped.
    fn read_linear(&self, linear: u64, buf: &mut [u8]) -> bool;
}
// ANCHOR_END: guest_fetch
