//@ stage 5
//! The MMU: the page tables the guest really runs on, which the module
//! builds and the guest never sees.
//!
//! Stage 05 has one kind: [`nonpaging`], for a guest whose own paging is
//! off. Shadow paging for guests that turn paging on comes in stage 08.

pub mod nonpaging;
