//@ stage 12
//! External interrupts from userspace: `KVM_INTERRUPT` and the interrupt
//! window.
//!
//! In 2006 the interrupt controllers (the two 8259s, the I/O APIC) lived in
//! userspace, in QEMU. When a device raised a line, QEMU asked its 8259
//! for the vector and handed it to the module with `KVM_INTERRUPT`, which
//! only queues it: one bit per vector, the `interrupt_bitmap` that
//! `KVM_GET_SREGS` shows. Before each entry the module delivers the
//! lowest queued vector, if the guest can take an interrupt now: RFLAGS.IF
//! set, no interrupt shadow (the instruction after `sti` or `mov ss`,
//! SDM Vol. 3A, 6.8.3), and no other event already going in. If it cannot,
//! the module asks the processor for an exit the moment it can (VMX's
//! "interrupt-window exiting", SVM's virtual-interrupt intercept): the
//! *interrupt window*.
//!
//! Userspace needs the window too. QEMU must not call `KVM_INTERRUPT`
//! when the guest cannot take an interrupt (its 8259 would have to take
//! the vector back), so it sets `request_interrupt_window` in `kvm_run`,
//! and the module exits with `KVM_EXIT_IRQ_WINDOW_OPEN` when the window
//! opens with nothing of its own queued; every exit also says whether an
//! interrupt could go in now (`ready_for_interrupt_injection`).

use crate::kernel::{Errno, KResult};

/// The vectors `KVM_INTERRUPT` takes (2006's `KVM_NR_INTERRUPTS`).
pub const NR_VECTORS: u32 = 256;

// ANCHOR: pending
/// Queues vector `irq`: `EINVAL` beyond the 256 vectors, as 2006 answered.
pub fn raise(bitmap: &mut [u64; 4], irq: u32) -> KResult<()> {
    if irq >= NR_VECTORS {
        return Err(Errno::EINVAL);
    }
    if let Some(word) = bitmap.get_mut((irq / 64) as usize) {
        *word |= 1 << (irq % 64);
    }
    Ok(())
}

/// Whether any vector is queued.
pub fn any(bitmap: &[u64; 4]) -> bool {
    bitmap.iter().any(|&w| w != 0)
}

/// Takes the lowest queued vector out of the queue: 2006 took the first
/// set bit too (`__ffs`), leaving priorities to userspace's 8259, which
/// hands over one vector at a time.
pub fn pop(bitmap: &mut [u64; 4]) -> Option<u8> {
    let (index, word) = bitmap.iter_mut().enumerate().find(|(_, w)| **w != 0)?;
    let bit = word.trailing_zeros();
    *word &= !(1 << bit);
    u8::try_from(index as u32 * 64 + bit).ok()
}
// ANCHOR_END: pending

// ANCHOR: before_entry
/// What to do about interrupts before an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Deliver this vector at the entry.
    pub inject: Option<u8>,
    /// Ask the processor to exit as soon as the guest can take an
    /// interrupt.
    pub window_exiting: bool,
    /// Do not enter: tell userspace its window is open
    /// (`KVM_EXIT_IRQ_WINDOW_OPEN`). Nothing is injected then, and
    /// `window_exiting` is not looked at: no entry follows, and the next
    /// `KVM_RUN` plans again.
    pub exit_window_open: bool,
}

/// The plan for the next entry. `can_take` says whether the guest can take
/// an interrupt now (IF set, no interrupt shadow, no event queued already);
/// `requested` is `kvm_run.request_interrupt_window`; `bitmap` holds the
/// queued vectors, one of which this may take out.
pub fn plan(can_take: bool, requested: bool, bitmap: &mut [u64; 4]) -> Plan {
    //@ exercise E12.1
    //@ instruction: Decide, before an entry, what the vCPU does about
    //@+ interrupts. What must hold: a queued vector goes in only when the
    //@+ guest can take it, one per entry, lowest first; when the guest
    //@+ cannot take one, and a vector is queued or userspace asked for the
    //@+ window, the processor must hand control back the moment it can
    //@+ (and not otherwise: an exit nobody wants costs a round trip per
    //@+ instruction); and when userspace asked for the window, the window
    //@+ is open and nothing is queued, userspace hears it before the guest
    //@+ runs on. Think about what "can take" means after an injection. The
    //@+ tests in `e12_1` run the plan against the SDM's rules (Vol. 3A,
    //@+ 6.8.1 and 6.8.3; Vol. 3C, 26.7.5 for the window).
    //@ hint: Work through the cases one by one: can take or not, queue
    //@+ empty or not, window asked for or not. In each, what must the
    //@+ guest get at this entry, and who must hear when it can take an
    //@+ interrupt?
    //@ hint: After a vector goes in, the guest cannot take another at the
    //@+ same entry: if more are queued, ask for the window. Userspace's
    //@+ exit comes only with nothing queued (2006's
    //@+ `dm_request_for_irq_injection`): a queued vector goes first.
    if can_take && requested && !any(bitmap) {
        return Plan { inject: None, window_exiting: false, exit_window_open: true };
    }
    let inject = if can_take { pop(bitmap) } else { None };
    let still_closed = !can_take || inject.is_some();
    let window_exiting = still_closed && (any(bitmap) || requested);
    Plan { inject, window_exiting, exit_window_open: false }
    //@ end
}
// ANCHOR_END: before_entry

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(vectors: &[u32]) -> [u64; 4] {
        let mut bitmap = [0; 4];
        for &v in vectors {
            raise(&mut bitmap, v).expect("a vector");
        }
        bitmap
    }

    #[test]
    fn vectors_queue_and_leave_lowest_first() {
        let mut b = queued(&[0x80, 0x20, 0xFF, 0x21]);
        assert_eq!(raise(&mut b, 256), Err(Errno::EINVAL));
        assert_eq!(raise(&mut b, u32::MAX), Err(Errno::EINVAL));
        let order: Vec<u8> = core::iter::from_fn(|| pop(&mut b)).collect();
        assert_eq!(order, [0x20, 0x21, 0x80, 0xFF]);
        assert!(!any(&b));
    }

    #[test]
    fn a_vector_queued_twice_goes_in_once() {
        let mut b = queued(&[0x30, 0x30]);
        assert_eq!((pop(&mut b), pop(&mut b)), (Some(0x30), None));
    }

    mod e12_1 {
        use super::*;

        #[test]
        fn an_open_window_takes_the_lowest_vector_and_asks_again_for_the_rest() {
            let mut b = queued(&[0x31, 0x30]);
            let p = plan(true, false, &mut b);
            assert_eq!(p, Plan { inject: Some(0x30), window_exiting: true, exit_window_open: false });
            let p = plan(true, false, &mut b);
            assert_eq!(p, Plan { inject: Some(0x31), window_exiting: false, exit_window_open: false });
            assert!(!any(&b));
        }

        #[test]
        fn a_closed_window_injects_nothing_and_waits_for_the_window() {
            let mut b = queued(&[0x40]);
            let p = plan(false, false, &mut b);
            assert_eq!(p, Plan { inject: None, window_exiting: true, exit_window_open: false });
            assert!(any(&b), "still queued");
        }

        #[test]
        fn nothing_wanted_means_no_window_exits() {
            let mut b = [0; 4];
            for can_take in [false, true] {
                assert_eq!(plan(can_take, false, &mut b), Plan { inject: None, window_exiting: false, exit_window_open: false });
            }
        }

        #[test]
        fn userspace_hears_of_an_open_window_only_with_nothing_queued() {
            let mut empty = [0; 4];
            // No entry follows this plan, so its `window_exiting` is not
            // looked at (`Vcpu::plan_interrupts`).
            let p = plan(true, true, &mut empty);
            assert_eq!((p.inject, p.exit_window_open), (None, true), "the window is open and nothing is queued");
            let p = plan(false, true, &mut empty);
            assert_eq!(p, Plan { inject: None, window_exiting: true, exit_window_open: false }, "wait for it");
            let mut b = queued(&[0x50]);
            let p = plan(true, true, &mut b);
            assert_eq!(p, Plan { inject: Some(0x50), window_exiting: true, exit_window_open: false }, "the queued vector first");
        }
    }
}
