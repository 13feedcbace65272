//! rkvm-run: runs the course's test guests on rkvm or on Linux KVM and
//! prints what they did, as a trace that must be the same on both.
//!
//! From the top: `cli` reads the command line, `guests` finds a guest and
//! `header` reads how to start it, `run` drives the `KVM_RUN` loop of a
//! `backend`, `exit::handle` decides what each exit means with the
//! `devices`, `trace` writes it all down, and `check` compares traces with
//! the golden ones; `chaos` runs the seeded guests with many seeds and
//! sorts out how each run ended; `migrate` moves a running guest to a
//! second VM with the dirty log. `layout` says where things are in guest memory;
//! `debugfs` reads the hypervisor's exit counter for `--repeat`.

pub mod backend;
pub mod chaos;
pub mod check;
pub mod cli;
pub mod debugfs;
pub mod devices;
pub mod exit;
pub mod guests;
pub mod header;
pub mod layout;
pub mod migrate;
pub mod program;
pub mod run;
pub mod timer;
pub mod trace;
