//@ stage 5
//! The MMU: the page tables the guest really runs on, which the module
//! builds and the guest never sees.
//!
//! Stage 05 has one kind: [`nonpaging`], for a guest whose own paging is
//@ begin 5 until 8
//! off. Shadow paging for guests that turn paging on comes in stage 08.
//@ end
//@ begin 8
//! off. Shadow paging, for guests that turn paging on, starts from
//! [`walk`]: what the guest's own page tables say about a linear address,
//! found as the processor would find it.
//@ end

pub mod nonpaging;
//@ begin 8
pub mod walk;
//@ end
