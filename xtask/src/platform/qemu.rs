//! QEMU as an L1 platform: `tcg-svm` (software emulation of an AMD CPU with
//! SVM, on any x86 host) and `kvm` (the host's own virtualization, nested).
//!
//! QEMU boots the uncompressed `vmlinux` through its PVH entry point, which
//! skips the kernel's self-decompression (seconds under TCG). The verdict
//! comes from the `isa-debug-exit` device: a byte `v` written to port 0xf4
//! makes QEMU exit with status `2v + 1`.

use super::{BootImage, Ending, Platform, Vendor};
use crate::doctor::{self, Need};
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

pub struct Qemu {
    name: &'static str,
    accel: &'static str,
    cpu: &'static str,
    vendor: Vendor,
}

impl Qemu {
    /// TCG with `-cpu max`: AMD SVM with nested paging, emulated.
    pub fn tcg_svm() -> Self {
        Qemu { name: "tcg-svm", accel: "tcg", cpu: "max", vendor: Vendor::Amd }
    }

    /// The host's KVM with `-cpu host`: fast, when the host allows nesting.
    pub fn kvm(vendor: Vendor) -> Self {
        Qemu { name: "kvm", accel: "kvm", cpu: "host", vendor }
    }

    fn command(&self, image: &BootImage) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", self.accel, "-cpu", self.cpu])
            .args(["-smp", &image.cpus.to_string(), "-m", &format!("{}M", image.memory_mib)])
            .args(["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"])
            .args(["-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .arg("-kernel")
            .arg(&image.vmlinux)
            .arg("-initrd")
            .arg(&image.initramfs)
            .args(["-append", &image.cmdline])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

impl Platform for Qemu {
    fn name(&self) -> &'static str {
        self.name
    }

    fn vendor(&self) -> Vendor {
        self.vendor
    }

    fn needs(&self) -> &'static [Need] {
        doctor::QEMU
    }

    fn boot(&self, image: &BootImage, on_line: &mut dyn FnMut(&str)) -> Result<Ending> {
        doctor::require(self.needs())?;
        let mut child = self.command(image).spawn().context("starting qemu-system-x86_64")?;
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().context("qemu's stdout")?;
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut log = std::fs::File::create(&image.log)?;
        let deadline = Instant::now() + image.timeout;
        let mut bug_seen = false;
        let stopped = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = if bug_seen { left.min(super::SILENCE_AFTER_BUG) } else { left };
            match rx.recv_timeout(wait) {
                Ok(line) => {
                    let line = line.trim_end_matches('\r');
                    writeln!(log, "{line}")?;
                    bug_seen |= super::is_bug_line(line);
                    on_line(line);
                }
                Err(RecvTimeoutError::Disconnected) => break None,
                Err(RecvTimeoutError::Timeout) if wait < left => break Some(Ending::SilentAfterBug(wait)),
                Err(RecvTimeoutError::Timeout) => break Some(Ending::TimedOut),
            }
        };
        if stopped.is_some() {
            let _ = child.kill();
        }
        let status = child.wait()?;
        let _ = reader.join();
        Ok(stopped.unwrap_or_else(|| ending(status.code())))
    }
}

/// Decodes QEMU's exit status: `2v + 1` for a verdict byte `v`; anything
/// else (0 after a panic with `-no-reboot`, a signal) is no verdict.
fn ending(code: Option<i32>) -> Ending {
    match code {
        Some(c) if c % 2 == 1 && (1..=511).contains(&c) => Ending::Verdict(((c - 1) / 2) as u8),
        _ => Ending::NoVerdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_decodes_to_the_verdict_byte() {
        assert_eq!(ending(Some(1)), Ending::Verdict(0));
        assert_eq!(ending(Some(3)), Ending::Verdict(1));
        assert_eq!(ending(Some(0)), Ending::NoVerdict);
        assert_eq!(ending(None), Ending::NoVerdict);
    }
}
