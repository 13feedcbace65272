//! `rkvm-devtest`: checks `/dev/rkvm` from inside L1.
//!
//! It runs in L1's busybox initramfs (so it is linked statically) right
//! after `insmod rkvm.ko`, and prints one line per check on the console:
//! `RKVM-CHECK ok NAME` or `RKVM-CHECK fail NAME: why`. The harness
//! (`cargo xtask test`) collects those lines.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

const DEVICE: &str = "/dev/rkvm";
/// The number of live VMs, from rkvm's debugfs directory.
const VMS: &str = "/sys/kernel/debug/rkvm/vms";

type Check = Result<(), String>;

fn main() {
    let checks: &[(&str, fn() -> Check)] = &[
        ("device-node", device_node),
        ("api-version", api_version),
        ("unknown-ioctls-get-enotty", unknown_ioctls),
        ("bad-arguments-get-errnos", bad_arguments),
        ("open-creates-and-close-frees-vms", open_and_close),
        ("thousand-opens-leave-no-vm", many_opens),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        match check() {
            Ok(()) => println!("RKVM-CHECK ok {name}"),
            Err(why) => {
                failed += 1;
                println!("RKVM-CHECK fail {name}: {why}");
            }
        }
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

/// `/dev/rkvm` is a character device, mode 0660, owned by root:root.
fn device_node() -> Check {
    let meta = std::fs::metadata(DEVICE).map_err(|e| format!("{DEVICE}: {e}"))?;
    if !meta.file_type().is_char_device() {
        return Err(format!("{DEVICE} is not a character device"));
    }
    let (mode, uid, gid) = (meta.mode() & 0o7777, meta.uid(), meta.gid());
    if (mode, uid, gid) != (0o660, 0, 0) {
        return Err(format!("mode {mode:o} owner {uid}:{gid}, expected 660 0:0"));
    }
    Ok(())
}

fn open() -> Result<File, String> {
    File::options().read(true).write(true).open(DEVICE).map_err(|e| format!("open {DEVICE}: {e}"))
}

/// `ioctl(fd, cmd, arg)`, as `Ok(return value)` or `Err(errno)`.
fn ioctl(file: &File, cmd: u32, arg: usize) -> Result<i32, i32> {
    // SAFETY: every command the checks send is either unknown to the driver
    // or takes no pointer, or is sent with an argument the driver must
    // reject; no memory of this process is handed over.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), cmd as _, arg) };
    if r < 0 { Err(io::Error::last_os_error().raw_os_error().unwrap_or(0)) } else { Ok(r) }
}

fn api_version() -> Check {
    let f = open()?;
    match ioctl(&f, rkvm::abi::KVM_GET_API_VERSION, 0) {
        Ok(2) => Ok(()),
        other => Err(format!("KVM_GET_API_VERSION returned {other:?}, expected Ok(2)")),
    }
}

fn unknown_ioctls() -> Check {
    let f = open()?;
    // Another type byte, an unused number of type 0xAE, and KVM_GET_API_VERSION
    // with a size field (a different command number altogether).
    for cmd in [0x0000_AF01u32, 0x0000_AEFF, 0x8004_AE01, 0xC008_AE7F, 0] {
        match ioctl(&f, cmd, 0) {
            Err(libc::ENOTTY) => {}
            other => return Err(format!("ioctl {cmd:#x} returned {other:?}, expected ENOTTY")),
        }
    }
    Ok(())
}

/// Every command of the 2006 ABI, given a null or wild pointer, gets an
/// errno back (which one depends on the stage), never a crash.
fn bad_arguments() -> Check {
    let f = open()?;
    for nr in 2..=15u32 {
        for size in [0u32, 8, 0x1000] {
            for dir in [1u32, 2, 3] {
                let cmd = dir << 30 | size << 16 | 0xAE << 8 | nr;
                for arg in [0usize, 1, usize::MAX - 4095] {
                    if let Ok(v) = ioctl(&f, cmd, arg) {
                        return Err(format!("ioctl {cmd:#x} with argument {arg:#x} succeeded ({v})"));
                    }
                }
            }
        }
    }
    Ok(())
}

fn live_vms() -> Result<u64, String> {
    let text = std::fs::read_to_string(VMS).map_err(|e| format!("{VMS}: {e}"))?;
    text.trim().parse().map_err(|e| format!("{VMS} holds {text:?}: {e}"))
}

fn expect_vms(n: u64, when: &str) -> Check {
    match live_vms()? {
        v if v == n => Ok(()),
        v => Err(format!("{v} VMs alive {when}, expected {n}")),
    }
}

/// Each open is a new VM; each close frees exactly its own.
fn open_and_close() -> Check {
    expect_vms(0, "before any open")?;
    let a = open()?;
    expect_vms(1, "after one open")?;
    let b = open()?;
    expect_vms(2, "after two opens")?;
    drop(a);
    expect_vms(1, "after closing the first")?;
    match ioctl(&b, rkvm::abi::KVM_GET_API_VERSION, 0) {
        Ok(2) => {}
        other => return Err(format!("the second VM stopped answering after the first closed: {other:?}")),
    }
    drop(b);
    expect_vms(0, "after closing both")
}

fn many_opens() -> Check {
    for i in 0..1000 {
        let f = open().map_err(|e| format!("open number {i}: {e}"))?;
        drop(f);
    }
    expect_vms(0, "after 1000 opens and closes")
}
