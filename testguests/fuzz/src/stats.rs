//! What the fuzzer did, counted across its threads: ioctls and their
//! errnos, guests and their exits, and the findings that fail the run.

use crate::sys::errno_name;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const ERRNOS: usize = 140;
/// `KVM_EXIT_*` reasons 0 to 8, then the outcomes that are not exits.
const EXIT_NAMES: [&str; 13] = [
    "unknown", "exception", "io", "cpuid", "debug", "hlt", "mmio", "irq-window", "shutdown",
    "fail-entry", "other-reason", "interrupted (EINTR)", "exit limit",
];
pub const FAIL_ENTRY: usize = 9;
pub const OTHER_REASON: usize = 10;
pub const INTERRUPTED: usize = 11;
pub const EXIT_LIMIT: usize = 12;

pub struct Stats {
    pub ioctls: AtomicU64,
    pub ioctls_ok: AtomicU64,
    errnos: [AtomicU64; ERRNOS],
    pub vms: AtomicU64,
    pub mmaps: AtomicU64,
    pub remaps: AtomicU64,
    pub guests: AtomicU64,
    pub runs: AtomicU64,
    exits: [AtomicU64; EXIT_NAMES.len()],
    run_errnos: [AtomicU64; ERRNOS],
    pub children: AtomicU64,
    pub max_kill_ms: AtomicU64,
    findings: Mutex<Vec<String>>,
}

pub static STATS: Stats = Stats {
    ioctls: AtomicU64::new(0),
    ioctls_ok: AtomicU64::new(0),
    errnos: [const { AtomicU64::new(0) }; ERRNOS],
    vms: AtomicU64::new(0),
    mmaps: AtomicU64::new(0),
    remaps: AtomicU64::new(0),
    guests: AtomicU64::new(0),
    runs: AtomicU64::new(0),
    exits: [const { AtomicU64::new(0) }; EXIT_NAMES.len()],
    run_errnos: [const { AtomicU64::new(0) }; ERRNOS],
    children: AtomicU64::new(0),
    max_kill_ms: AtomicU64::new(0),
    findings: Mutex::new(Vec::new()),
};

impl Stats {
    /// Counts one ioctl and its result.
    pub fn ioctl(&self, result: Result<i32, i32>) -> Result<i32, i32> {
        self.ioctls.fetch_add(1, Relaxed);
        match result {
            Ok(_) => self.ioctls_ok.fetch_add(1, Relaxed),
            Err(e) => self.errnos[(e as usize).min(ERRNOS - 1)].fetch_add(1, Relaxed),
        };
        result
    }

    /// Counts how one `KVM_RUN` ended: an exit reason, or an errno.
    pub fn run_ended(&self, outcome: Result<usize, i32>) {
        self.runs.fetch_add(1, Relaxed);
        match outcome {
            Ok(kind) => self.exits[kind.min(EXIT_NAMES.len() - 1)].fetch_add(1, Relaxed),
            Err(libc::EINTR) => self.exits[INTERRUPTED].fetch_add(1, Relaxed),
            Err(e) => self.run_errnos[(e as usize).min(ERRNOS - 1)].fetch_add(1, Relaxed),
        };
    }

    pub fn exit_limit(&self) {
        self.exits[EXIT_LIMIT].fetch_add(1, Relaxed);
    }

    /// Something the module must never do, seen from userspace; fails the run.
    pub fn finding(&self, what: String) {
        println!("RKVM-INFO fuzz finding: {what}");
        let mut f = self.findings.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < 20 {
            f.push(what);
        }
    }

    pub fn findings(&self) -> Vec<String> {
        self.findings.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn kill_latency(&self, ms: u64) {
        self.max_kill_ms.fetch_max(ms, Relaxed);
    }

    /// The report: `RKVM-INFO` lines.
    pub fn report(&self) {
        let n = |a: &AtomicU64| a.load(Relaxed);
        println!(
            "RKVM-INFO fuzz: {} ioctls ({} succeeded), {} VMs opened, {} mmaps, {} mremaps, {} guests, {} KVM_RUNs, \
             {} children killed (slowest to die: {} ms)",
            n(&self.ioctls),
            n(&self.ioctls_ok),
            n(&self.vms),
            n(&self.mmaps),
            n(&self.remaps),
            n(&self.guests),
            n(&self.runs),
            n(&self.children),
            n(&self.max_kill_ms)
        );
        let list = |counts: &[AtomicU64], name: &dyn Fn(usize) -> String| -> String {
            let parts: Vec<String> =
                counts.iter().enumerate().filter(|(_, c)| n(c) > 0).map(|(i, c)| format!("{} {}", name(i), n(c))).collect();
            if parts.is_empty() { "none".into() } else { parts.join(", ") }
        };
        println!("RKVM-INFO fuzz: ioctl errnos: {}", list(&self.errnos, &|e| errno_name(e as i32)));
        println!("RKVM-INFO fuzz: KVM_RUN ended by: {}", list(&self.exits, &|i| EXIT_NAMES[i].to_string()));
        println!("RKVM-INFO fuzz: KVM_RUN errnos: {}", list(&self.run_errnos, &|e| errno_name(e as i32)));
    }
}
