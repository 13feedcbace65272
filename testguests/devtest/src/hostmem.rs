//! Guest memory a user cannot take from the host: a slot larger than free
//! memory is refused at once and leaves nothing behind; a process killed
//! while the module allocates a large slot for it dies at once, instead of
//! when the allocation is done; and guest memory is charged to the memory
//! cgroup of the process that asked for it, so that the cgroup's limit
//! holds (the glue allocates with GFP_KERNEL_ACCOUNT).

use crate::sys::{Check, NOT_RUN, PAGE, Vm, counter, errno_name, expect_counter, expect_errno, meminfo};
use std::time::{Duration, Instant};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

fn ok<T>(what: &str, r: Result<T, i32>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", errno_name(e)))
}

/// MemFree, once it is back within `tolerance_kb` of `before` (per-CPU
/// page lists drain into the global count about once a second), or as it
/// is after two seconds.
fn memfree_back(before: u64, tolerance_kb: u64) -> Result<u64, String> {
    let mut now = meminfo("MemFree")?;
    for _ in 0..20 {
        if now + tolerance_kb >= before {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        now = meminfo("MemFree")?;
    }
    Ok(now)
}

/// A slot 16 MiB larger than MemFree is `ENOMEM`, within seconds, and
/// takes nothing: no page counted, MemFree back where it was.
pub fn larger_than_free_memory() -> Check {
    const LIMIT: Duration = Duration::from_secs(10);
    let vm = Vm::open()?;
    let pages_before = counter("guest_pages")?;
    let (free, available) = (meminfo("MemFree")?, meminfo("MemAvailable")?);
    let size = ((free * KIB + 16 * MIB).next_multiple_of(PAGE as u64)).min(4 * GIB);
    let start = Instant::now();
    let result = vm.set_region(0, 0, size);
    let took = start.elapsed();
    println!(
        "RKVM-INFO a slot of {} MiB (MemFree {} MiB, MemAvailable {} MiB) was answered in {took:.1?}",
        size / MIB,
        free / 1024,
        available / 1024
    );
    expect_errno("a slot 16 MiB larger than MemFree", result, libc::ENOMEM)?;
    if took > LIMIT {
        return Err(format!("refusing a slot larger than free memory took {took:.1?} (more than {LIMIT:?})"));
    }
    expect_counter("guest_pages", pages_before, "after the refused slot")?;
    let after = memfree_back(free, 2048)?;
    if after + 2048 < free {
        return Err(format!("MemFree fell from {free} kB to {after} kB across a refused slot"));
    }
    Ok(())
}

/// A process killed by SIGKILL while `KVM_SET_MEMORY_REGION` allocates a
/// large slot for it dies without finishing the allocation. The VM belongs
/// to the parent too (the child inherits its file), so a slot that the
/// allocation completed after the kill would still be there: the
/// `guest_pages` counter, which a slot's pages join only once all of them
/// are allocated, tells. It is read just before the kill too, so that a
/// kill that comes after the allocation is retried sooner.
pub fn killed_during_allocation() -> Check {
    let pages_before = counter("guest_pages")?;
    let size = ((meminfo("MemAvailable")? * KIB / 2) & !(PAGE as u64 - 1)).min(4 * GIB);
    let npages = size / PAGE as u64;
    let vm = Vm::open()?;
    // How long a child takes, from its start to its end, to make the slot.
    let (status, whole) = allocate_in_child(&vm, size, None)?;
    if status != 0 || counter("guest_pages")? != pages_before + npages {
        return Err(format!("a child could not make a {} MiB slot (wait status {status:#x})", size / MIB));
    }
    ok("deleting the slot", vm.set_region(0, 0, 0))?;
    for attempt in 0..5u32 {
        let delay = whole / (4 << attempt);
        let (_, died) = allocate_in_child(&vm, size, Some(delay))?;
        let left = counter("guest_pages")? - pages_before;
        println!(
            "RKVM-INFO a {} MiB slot takes a child {whole:.1?}; killed {delay:.1?} into it, the child died {died:.1?} \
             later, leaving {left} of {npages} pages",
            size / MIB
        );
        match left {
            0 => return Ok(()),
            n if n == npages && LAST_BEFORE_KILL.get() == pages_before + npages => {
                // The allocation was over before the kill: try sooner.
                ok("deleting the slot", vm.set_region(0, 0, 0))?;
            }
            n => {
                return Err(format!(
                    "SIGKILL {delay:.1?} into a {} MiB allocation ({whole:.1?} in all): the child took {died:.1?} to \
                     die and the slot holds {n} pages, so the allocation went on after the kill; alloc_pages in \
                     kmod/src/memslot.rs must stop when kernel::fatal_signal_pending()",
                    size / MIB
                ));
            }
        }
    }
    Err(format!(
        "a {} MiB allocation ({whole:.1?}) was over before SIGKILL even {:.1?} into it: the check cannot tell on \
         this machine",
        size / MIB,
        whole / 64
    ))
}

thread_local! {
    /// `guest_pages` just before the last kill of `allocate_in_child`.
    static LAST_BEFORE_KILL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Forks a child that makes a slot of `size` on `vm` and exits. With a
/// delay, kills it that long after it starts and returns how long it then
/// took to die; without, returns how long it took in all. The wait status
/// comes first.
fn allocate_in_child(vm: &Vm, size: u64, kill_after: Option<Duration>) -> Result<(i32, Duration), String> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the pipe's two descriptors.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err("pipe failed".into());
    }
    let region = rkvm::abi::KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: size };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&vm.file);
    // SAFETY: the child only writes a byte, makes one ioctl on the
    // inherited file with a region on its stack, and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            libc::write(fds[1], b"go".as_ptr().cast(), 1);
            libc::ioctl(fd, rkvm::abi::KVM_SET_MEMORY_REGION as _, &region);
            libc::_exit(0);
        }
    }
    let mut byte = 0u8;
    // SAFETY: reads one byte into `byte`, written by the child as it starts.
    unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) };
    let started = Instant::now();
    if let Some(delay) = kill_after {
        std::thread::sleep(delay);
        LAST_BEFORE_KILL.set(counter("guest_pages")?);
    }
    let killed = Instant::now();
    let mut status = 0;
    // SAFETY: signals and reaps our own child; closes the pipe made above.
    unsafe {
        if kill_after.is_some() {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::waitpid(pid, &mut status, 0);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    Ok((status, if kill_after.is_some() { killed.elapsed() } else { started.elapsed() }))
}

const CGROUP: &str = "/sys/fs/cgroup";
const GROUP: &str = "/sys/fs/cgroup/rkvm-devtest";

fn write_file(path: &str, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {text:?} to {path}: {e}"))
}

fn read_u64(path: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.trim().parse().map_err(|e| format!("{path} holds {text:?}: {e}"))
}

/// `oom_kill N` from a cgroup's memory.events.
fn oom_kills() -> Result<u64, String> {
    let path = format!("{GROUP}/memory.events");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(text.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()).unwrap_or(0))
}

/// A memory cgroup v2 with this process in it, or why there is none.
fn enter_cgroup() -> Result<(), String> {
    let controllers = format!("{CGROUP}/cgroup.controllers");
    if !std::path::Path::new(&controllers).exists() {
        // SAFETY: NUL-terminated strings; mounting has no memory effects here.
        let r = unsafe { libc::mount(c"none".as_ptr(), c"/sys/fs/cgroup".as_ptr(), c"cgroup2".as_ptr(), 0, std::ptr::null()) };
        if r != 0 {
            return Err(format!("{NOT_RUN}this kernel has no cgroup v2 (CONFIG_MEMCG; the --debug-kernel L1 has it)"));
        }
    }
    let have = std::fs::read_to_string(&controllers).unwrap_or_default();
    if !have.split_whitespace().any(|c| c == "memory") {
        return Err(format!("{NOT_RUN}cgroup v2 has no memory controller (CONFIG_MEMCG)"));
    }
    write_file(&format!("{CGROUP}/cgroup.subtree_control"), "+memory")?;
    let _ = std::fs::create_dir(GROUP);
    write_file(&format!("{GROUP}/cgroup.procs"), &std::process::id().to_string())
}

fn leave_cgroup() {
    let _ = std::fs::write(format!("{CGROUP}/cgroup.procs"), std::process::id().to_string());
    let _ = std::fs::remove_dir(GROUP);
}

/// Guest memory counts in the memory cgroup of the process that made the
/// slot; a slot beyond the cgroup's limit is `ENOMEM`, promptly, without
/// the OOM killer; closing the VM uncharges it all.
pub fn charged_to_memory_cgroup() -> Check {
    enter_cgroup()?;
    let result = in_cgroup();
    leave_cgroup();
    result
}

fn in_cgroup() -> Check {
    let current = format!("{GROUP}/memory.current");
    let base = read_u64(&current)?;
    let vm = Vm::open()?;
    ok("a 32 MiB slot", vm.set_region(0, 0, 32 * MIB))?;
    let with = read_u64(&current)?;
    if with < base + 31 * MIB {
        return Err(format!(
            "the cgroup's memory.current grew by {} KiB for a 32 MiB slot: guest pages are not charged to the \
             process's memory cgroup (GFP_KERNEL_ACCOUNT in kmod/glue/rkvm_glue.c)",
            with.saturating_sub(base) / KIB
        ));
    }
    write_file(&format!("{GROUP}/memory.max"), &(with + 8 * MIB).to_string())?;
    let start = Instant::now();
    let grown = vm.set_region(0, 0, 64 * MIB);
    let took = start.elapsed();
    let _ = write_file(&format!("{GROUP}/memory.max"), "max");
    expect_errno("growing the slot to 64 MiB with 8 MiB left under memory.max", grown, libc::ENOMEM)?;
    if took > Duration::from_secs(10) {
        return Err(format!("refusing a slot beyond the cgroup's limit took {took:.1?}"));
    }
    if oom_kills()? != 0 {
        return Err("a slot beyond the cgroup's limit woke the OOM killer instead of failing with ENOMEM".into());
    }
    let after_refusal = read_u64(&current)?;
    if after_refusal > with + MIB {
        return Err(format!("the refused growth left {} KiB charged", (after_refusal - with) / KIB));
    }
    drop(vm);
    let closed = read_u64(&current)?;
    println!(
        "RKVM-INFO memory cgroup: {} KiB charged for a 32 MiB slot; the refused growth took {took:.1?}; {} KiB left \
         after close",
        (with - base) / KIB,
        closed.saturating_sub(base) / KIB
    );
    if closed > base + MIB {
        return Err(format!("closing the VM left {} KiB charged to the cgroup", (closed - base) / KIB));
    }
    Ok(())
}

/// How many times the OOM killer has run since boot: `oom_kill` in
/// /proc/vmstat where the kernel counts events (CONFIG_VM_EVENT_COUNTERS),
/// else the reports in the kernel's log ("invoked oom-killer"), which a
/// busy log may have overwritten but which this check's few seconds do not.
fn oom_kills_since_boot() -> Result<u64, String> {
    if let Some(n) = std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok()))
    {
        return Ok(n);
    }
    // SAFETY: with a null buffer, SYSLOG_ACTION_SIZE_BUFFER (10) only
    // returns the log's size.
    let size = unsafe { libc::klogctl(10, std::ptr::null_mut(), 0) };
    let mut log = vec![0u8; usize::try_from(size).map_err(|_| "klogctl: no kernel log".to_string())?];
    // SAFETY: SYSLOG_ACTION_READ_ALL (3) copies at most `log.len()` bytes
    // of the log into `log`.
    let read = unsafe { libc::klogctl(3, log.as_mut_ptr().cast(), log.len() as i32) };
    log.truncate(usize::try_from(read).map_err(|_| "klogctl: the kernel log cannot be read".to_string())?);
    Ok(String::from_utf8_lossy(&log).matches("invoked oom-killer").count() as u64)
}

/// The case that once woke the OOM killer: another process's VM holds all
/// the memory but 64 MiB, and this process asks for one more large slot.
/// A slot beyond what is left is `ENOMEM` at once; one the estimate
/// allows but the machine may not have is made or refused; either way no
/// process is killed (the OOM killer does not run), the holder
/// lives on, and when both are gone the memory is back.
pub fn filled_by_another_process() -> Check {
    const LEFT: u64 = 64 * MIB;
    let pages_before = counter("guest_pages")?;
    let kills_before = oom_kills_since_boot()?;
    let free_before = meminfo("MemFree")?;
    let fill = ((meminfo("MemAvailable")? * KIB).saturating_sub(LEFT) & !(PAGE as u64 - 1)).min(4 * GIB);
    if fill < 64 * MIB {
        return Err(format!("{NOT_RUN}MemAvailable is under 128 MiB"));
    }
    let holder = Holder::start(fill)?;
    let asked = ask_beyond_what_is_left();
    let kills = oom_kills_since_boot()?.saturating_sub(kills_before);
    let holder_alive = holder.alive();
    drop(holder);
    let (beyond, within) = asked?;
    if kills != 0 {
        return Err(format!("the OOM killer ran {kills} times while another VM held all but 64 MiB ({within})"));
    }
    if !holder_alive {
        return Err("the process holding the first slot died while another asked for more".into());
    }
    println!(
        "RKVM-INFO another VM held {} MiB: a slot beyond what was left was {beyond}; one within MemAvailable was \
         {within}; no OOM kill",
        fill / MIB
    );
    expect_counter("guest_pages", pages_before, "after both VMs closed")?;
    let after = memfree_back(free_before, 4096)?;
    if after + 4096 < free_before {
        return Err(format!("MemFree fell from {free_before} kB to {after} kB across the two VMs"));
    }
    Ok(())
}

/// With memory nearly full: a slot 64 MiB beyond MemAvailable, which
/// must be `ENOMEM` within seconds, then one 16 MiB within it, which may
/// be made or refused. Says how each went.
fn ask_beyond_what_is_left() -> Result<(String, String), String> {
    let vm = Vm::open()?;
    let available = meminfo("MemAvailable")? * KIB;
    let beyond = (available + 64 * MIB).next_multiple_of(PAGE as u64);
    let start = Instant::now();
    let result = vm.set_region(0, 0, beyond);
    let took = start.elapsed();
    expect_errno("a slot 64 MiB beyond MemAvailable, with another VM holding the rest", result, libc::ENOMEM)?;
    if took > Duration::from_secs(10) {
        return Err(format!("refusing a slot beyond MemAvailable took {took:.1?}"));
    }
    let beyond = format!("ENOMEM in {took:.1?}");
    let within = (available.saturating_sub(16 * MIB) & !(PAGE as u64 - 1)).min(4 * GIB);
    let start = Instant::now();
    let made = vm.set_region(1, 1 << 32, within);
    let within = match made {
        Ok(()) => format!("made ({} MiB, {:.1?})", within / MIB, start.elapsed()),
        Err(e) => format!("{} ({} MiB, {:.1?})", errno_name(e), within / MIB, start.elapsed()),
    };
    Ok((beyond, within))
}

/// A child process that makes a VM with one slot of the given size and
/// holds it until dropped.
struct Holder {
    pid: libc::pid_t,
    /// The parent's end of the pipe the child waits on.
    release: i32,
}

impl Holder {
    fn start(size: u64) -> Result<Holder, String> {
        let (mut ready, mut release) = ([0; 2], [0; 2]);
        // SAFETY: each array has room for a pipe's two descriptors.
        if unsafe { libc::pipe(ready.as_mut_ptr()) } != 0 || unsafe { libc::pipe(release.as_mut_ptr()) } != 0 {
            return Err("pipe failed".into());
        }
        let region = rkvm::abi::KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: size };
        // SAFETY: the child makes only async-signal-safe calls (open,
        // ioctl, write, read, _exit) on buffers of its own.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: see above.
            unsafe {
                let fd = libc::open(c"/dev/rkvm".as_ptr(), libc::O_RDWR);
                let ok = fd >= 0 && libc::ioctl(fd, rkvm::abi::KVM_SET_MEMORY_REGION as _, &region) == 0;
                libc::write(ready[1], [u8::from(ok)].as_ptr().cast(), 1);
                let mut byte = 0u8;
                libc::read(release[0], (&mut byte as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        let mut byte = 0u8;
        // SAFETY: reads one byte the child writes; closes our copies of the
        // ends we do not use.
        let got = unsafe {
            let got = libc::read(ready[0], (&mut byte as *mut u8).cast(), 1);
            libc::close(ready[0]);
            libc::close(ready[1]);
            libc::close(release[0]);
            got
        };
        let holder = Holder { pid, release: release[1] };
        if got != 1 || byte != 1 {
            return Err(format!("a child could not make a slot of {} MiB to fill memory", size / MIB));
        }
        Ok(holder)
    }

    /// Whether the child is still there (not killed, not exited).
    fn alive(&self) -> bool {
        let mut status = 0;
        // SAFETY: our own child; WNOHANG does not wait.
        unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) == 0 }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let mut status = 0;
        // SAFETY: wakes our own child (a byte, or the pipe's end) and
        // reaps it.
        unsafe {
            libc::write(self.release, b"x".as_ptr().cast(), 1);
            libc::close(self.release);
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}
