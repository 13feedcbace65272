//! Bochs as an L1 platform: `bochs-vmx`, an emulated Intel CPU with VMX and
//! EPT, on any x86 host (Debian's Bochs 2.7 is built with `--enable-vmx=2`).
//!
//! Bochs has no kernel loader of its own, so the L1 kernel (`bzImage`) and
//! the job's initramfs go onto an isolinux CD image, which Bochs boots. The
//! serial console goes to a file; it is followed as it grows and handed on
//! line by line. Bochs always exits with status 1, so the verdict is the
//! job's own closing line, `RKVM-END rc=N`; after it L1 leaves Bochs by
//! writing "Shutdown" to port 0x8900 (see `xtask/l1/init.sh`, which does so
//! when the command line says `rkvm.exit=bochs`).
//!
//! Debian's Bochs cannot run without a display. Its VNC display (`rfb`) is
//! told not to wait for a viewer, but it still listens on a TCP port between
//! 5900 and 5949 on every interface, so Bochs runs in a private network
//! namespace (`unshare --net`) where nothing outside can reach that port.

use super::{BootImage, Ending, Platform, Vendor};
use crate::doctor::{self, Need};
use anyhow::{Context, Result, bail};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's Bochs BIOS, from package `bochsbios`.
const BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// The VGA BIOS, from package `vgabios`.
const VGA_BIOS: &str = "/usr/share/vgabios/vgabios.bin";
/// The CD boot loader, from package `isolinux`.
const ISOLINUX: &str = "/usr/lib/ISOLINUX/isolinux.bin";
/// The library isolinux loads next, from package `syslinux-common`.
const LDLINUX: &str = "/usr/lib/syslinux/modules/bios/ldlinux.c32";

/// Guest instructions per guest second. With `clock: sync=none` Bochs's
/// clock is its instruction count, so this sets how fast guest time runs.
/// It matters with 2 CPUs: Debian's Bochs is built with its debugger, which
/// runs several CPUs in rounds of 5 instructions each (the `quantum` option
/// is ignored) and advances the clock by one tick per round while every CPU
/// halts, so each idle guest second costs `IPS` rounds. 10 million keeps
/// idle waits cheap while leaving 40,000 instructions between two timer
/// ticks (HZ=250); `book/src/platforms.md` has the measurements.
const IPS: u64 = 10_000_000;
/// How long L1 may take to leave Bochs after its job has ended.
const GRACE: Duration = Duration::from_secs(10);
/// How often the serial log is read.
const POLL: Duration = Duration::from_millis(50);

pub struct Bochs {
    name: &'static str,
    /// Bochs's name for the emulated CPU (`cpu: model=`).
    model: &'static str,
    vendor: Vendor,
}

impl Bochs {
    /// Intel Haswell: VMX with EPT, VPID and unrestricted guest.
    pub fn vmx() -> Self {
        Bochs { name: "bochs-vmx", model: "corei7_haswell_4770", vendor: Vendor::Intel }
    }
}

impl Platform for Bochs {
    fn name(&self) -> &'static str {
        self.name
    }

    fn vendor(&self) -> Vendor {
        self.vendor
    }

    fn needs(&self) -> &'static [Need] {
        doctor::BOCHS
    }

    fn boot(&self, image: &BootImage, on_line: &mut dyn FnMut(&str)) -> Result<Ending> {
        doctor::require(self.needs())?;
        let netns = private_network()?;
        let files = Files::create(&image.log)?;
        make_iso(image, &files)?;
        let machine = Machine { model: self.model, cpus: image.cpus, memory_mib: image.memory_mib, files: &files };
        fs::write(files.bochsrc(), bochsrc(&machine))?;
        // Bochs's debugger reads its first commands from this file: continue.
        fs::write(files.rc(), "c\n")?;
        let _ = fs::remove_file(files.serial());
        let mut child = command(&netns, &files)?.spawn().context("starting bochs-bin")?;
        let run = follow(&mut child, &files, image, on_line);
        let _ = child.kill();
        let _ = child.wait();
        let run = run?;
        report(&run, &files);
        Ok(ending(run.end, run.stop == Some(Stop::TimedOut)))
    }
}

/// The files of one boot, in a directory beside the serial log
/// (`target/l1/NAME.bochs/`), kept for inspection after the run.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn create(log: &Path) -> Result<Self> {
        let dir = log.with_extension("bochs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Files { dir })
    }

    fn iso(&self) -> PathBuf {
        self.dir.join("l1.iso")
    }

    fn isolinux_cfg(&self) -> PathBuf {
        self.dir.join("isolinux.cfg")
    }

    fn bochsrc(&self) -> PathBuf {
        self.dir.join("bochsrc")
    }

    fn rc(&self) -> PathBuf {
        self.dir.join("debugger.rc")
    }

    /// The serial console as Bochs writes it, byte for byte.
    fn serial(&self) -> PathBuf {
        self.dir.join("serial.raw")
    }

    /// Bochs's own log: configuration, warnings, the reason it stopped.
    fn bochs_log(&self) -> PathBuf {
        self.dir.join("bochs.log")
    }

    /// What Bochs prints on its standard output and error.
    fn bochs_out(&self) -> PathBuf {
        self.dir.join("bochs.out")
    }
}

/// The kernel command line under Bochs: the image's, with these changes.
/// - The serial console runs at 115200 baud rather than Linux's default
///   9600: Bochs emulates the line speed, and at 9600 every console line
///   costs the guest about 80 ms.
/// - The TSC rate is Bochs's: its TSC counts guest instructions, [`IPS`] a
///   second (a rate given for other platforms, `tsc_early_khz`, is wrong here).
/// - `rkvm.exit=bochs` tells `init.sh` how to leave the machine.
/// - A reboot is a triple fault, so that a kernel panic (`panic=-1` reboots
///   at once) stops Bochs (`reset_on_triple_fault=0` makes a triple fault
///   fatal) instead of booting the CD again.
/// - Two savings that matter with 2 CPUs, where every hand-over between
///   CPUs costs idle time (see [`IPS`]): expedited RCU grace periods, and
///   no legacy BSD ptys (creating their 512 device nodes took 4.4 of the
///   13.5 guest seconds to init).
fn cmdline(base: &str) -> String {
    let words: Vec<&str> = base
        .split_whitespace()
        .filter(|w| !w.starts_with("tsc_early_khz="))
        .map(|w| if w == "console=ttyS0" { "console=ttyS0,115200" } else { w })
        .collect();
    format!(
        "{} tsc_early_khz={} rkvm.exit=bochs reboot=t rcupdate.rcu_expedited=1 pty.legacy_count=0",
        words.join(" "),
        IPS / 1000
    )
}

/// isolinux's configuration: the template in `xtask/l1/` with the command line.
fn isolinux_cfg(template: &str, cmdline: &str) -> String {
    template.replace("@CMDLINE@", cmdline)
}

/// Makes the bootable CD image: isolinux, the kernel as `/linux` and the
/// initramfs as `/initrd`.
fn make_iso(image: &BootImage, files: &Files) -> Result<()> {
    let template_path = crate::paths::l1_sources().join("isolinux.cfg");
    let template =
        fs::read_to_string(&template_path).with_context(|| format!("reading {}", template_path.display()))?;
    fs::write(files.isolinux_cfg(), isolinux_cfg(&template, &cmdline(&image.cmdline)))?;
    let graft = |dest: &str, src: &Path| format!("{dest}={}", src.display());
    let out = Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-R", "-o"])
        .arg(files.iso())
        .args(["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat"])
        .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-graft-points"])
        .arg(graft("isolinux/isolinux.bin", Path::new(ISOLINUX)))
        .arg(graft("isolinux/ldlinux.c32", Path::new(LDLINUX)))
        .arg(graft("isolinux/isolinux.cfg", &files.isolinux_cfg()))
        .arg(graft("linux", &image.bzimage))
        .arg(graft("initrd", &image.initramfs))
        .stdin(Stdio::null())
        .output()
        .context("starting xorriso")?;
    if !out.status.success() {
        bail!(
            "xorriso could not make the L1 boot CD {}:\n{}",
            files.iso().display(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

/// What the generated `bochsrc` describes.
struct Machine<'a> {
    model: &'a str,
    cpus: u32,
    memory_mib: u32,
    files: &'a Files,
}

/// Bochs's configuration for one boot.
fn bochsrc(m: &Machine) -> String {
    let f = m.files;
    let q = |p: PathBuf| format!("\"{}\"", p.display());
    let lines = [
        "# Generated by `cargo xtask` for one boot of L1; see xtask/src/platform/bochs.rs.".to_string(),
        // Debian's build has no `nogui`; this display waits for no viewer.
        "display_library: rfb, options=\"timeout=0\"".into(),
        format!("romimage: file={BIOS}, options=fastboot"),
        format!("vgaromimage: file={VGA_BIOS}"),
        format!("cpu: model={}, count={}, ips={IPS}, reset_on_triple_fault=0", m.model, m.cpus),
        format!("megs: {}", m.memory_mib),
        // Guest time is counted in instructions, never waits for the host.
        "clock: sync=none, time0=local".into(),
        format!("ata0-master: type=cdrom, path={}, status=inserted", q(f.iso())),
        "boot: cdrom".into(),
        format!("com1: enabled=1, mode=file, dev={}", q(f.serial())),
        // With sound, Debian's Bochs stops after ALSA errors on hosts without it.
        "speaker: enabled=0".into(),
        "sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy".into(),
        "mouse: enabled=0".into(),
        format!("log: {}", q(f.bochs_log())),
        "panic: action=fatal".into(),
        "error: action=report".into(),
        "info: action=report".into(),
        "debug: action=ignore".into(),
    ];
    lines.join("\n") + "\n"
}

/// The words that put a command into a private network namespace: root
/// can make one directly; another user makes it inside a user namespace.
fn netns_words() -> Vec<&'static str> {
    if effective_uid() == Some(0) { vec!["--net"] } else { vec!["--net", "--map-root-user"] }
}

/// The effective user id, from `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Checks that Bochs can run in a private network namespace and returns
/// the `unshare` words that put it there.
pub fn private_network() -> Result<Vec<&'static str>> {
    let words = netns_words();
    let out = Command::new("unshare").args(&words).arg("true").stdin(Stdio::null()).output();
    let why = match out {
        Ok(out) if out.status.success() => return Ok(words),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("cannot run unshare: {e}"),
    };
    bail!(
        "Bochs's display listens on a TCP port (5900-5949) on every interface, so rkvm runs Bochs in a \
         private network namespace with `unshare {}`, and that failed: {why}\n\
         Run as root, or allow unprivileged user namespaces (Debian: `sudo sysctl -w \
         kernel.unprivileged_userns_clone=1`; Ubuntu 24.04: `sudo sysctl -w \
         kernel.apparmor_restrict_unprivileged_userns=0`).",
        words.join(" ")
    )
}

/// `unshare ... bochs-bin -q -f bochsrc -rc debugger.rc`, its output to a file.
fn command(netns: &[&str], files: &Files) -> Result<Command> {
    let out = fs::File::create(files.bochs_out())?;
    let mut cmd = Command::new("unshare");
    cmd.args(netns)
        .args(["bochs-bin", "-q", "-f"])
        .arg(files.bochsrc())
        .arg("-rc")
        .arg(files.rc())
        .current_dir(&files.dir)
        // The debugger reads from stdin once the rc file is done: give it
        // an end of file, so that it quits when the machine stops.
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    Ok(cmd)
}

/// Why the harness stopped Bochs, when Bochs did not stop by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    TimedOut,
    /// The job ended but L1 did not leave through port 0x8900.
    DidNotLeave,
}

/// What the serial console said, and how the run stopped.
struct Run {
    /// The status in the job's `RKVM-END rc=N` line, once seen.
    end: Option<i32>,
    stop: Option<Stop>,
}

/// Follows the serial log until Bochs exits, the timeout passes, or the job
/// has ended and L1 had `GRACE` to leave. Every line is copied to the
/// image's log and handed to `on_line`.
fn follow(child: &mut Child, files: &Files, image: &BootImage, on_line: &mut dyn FnMut(&str)) -> Result<Run> {
    let mut serial = Follower::new(files.serial());
    let mut log = fs::File::create(&image.log).with_context(|| format!("creating {}", image.log.display()))?;
    let deadline = Instant::now() + image.timeout;
    let mut leave_by = None;
    let mut end = None;
    loop {
        // Ask before reading, so that nothing written before the exit is missed.
        let exited = child.try_wait()?.is_some();
        let mut lines = serial.read()?;
        if exited {
            lines.extend(serial.rest());
        }
        for line in &lines {
            writeln!(log, "{line}")?;
            end = end.or(end_status(line));
            on_line(line);
        }
        if exited {
            return Ok(Run { end, stop: None });
        }
        let now = Instant::now();
        if end.is_some() && leave_by.is_none() {
            leave_by = Some(now + GRACE);
        }
        if now >= deadline {
            return Ok(Run { end, stop: Some(Stop::TimedOut) });
        }
        if leave_by.is_some_and(|t| now >= t) {
            return Ok(Run { end, stop: Some(Stop::DidNotLeave) });
        }
        std::thread::sleep(POLL);
    }
}

/// The job's exit status, from its closing line `RKVM-END rc=N`.
fn end_status(line: &str) -> Option<i32> {
    line.strip_prefix("RKVM-END rc=")?.trim().parse().ok()
}

/// How the machine ended. Bochs's exit status says nothing (always 1), so
/// the verdict is the job's: 0 when it exited with status 0, else 1 (the
/// same byte `init.sh` writes to QEMU's exit device).
fn ending(end: Option<i32>, timed_out: bool) -> Ending {
    match end {
        Some(0) => Ending::Verdict(0),
        Some(_) => Ending::Verdict(1),
        None if timed_out => Ending::TimedOut,
        None => Ending::NoVerdict,
    }
}

/// Says where to look when the machine did not end cleanly.
fn report(run: &Run, files: &Files) {
    match (run.end, run.stop) {
        (Some(_), Some(Stop::DidNotLeave)) => {
            println!("  bochs: L1 did not leave through port 0x8900 after its job ended; stopped it")
        }
        (None, Some(Stop::TimedOut)) => println!("  bochs: stopped at the timeout; Bochs's log: {}", files.bochs_log().display()),
        (None, None) => {
            println!("  bochs: stopped without the job's end; Bochs's log: {}", files.bochs_log().display());
            for line in crate::progress::tail(&files.bochs_log(), 200).lines().filter(|l| l.contains("PANIC")) {
                println!("  bochs | {line}");
            }
        }
        _ => {}
    }
}

/// Reads a file that another process is still writing, in whole lines.
struct Follower {
    path: PathBuf,
    file: Option<fs::File>,
    partial: Vec<u8>,
}

impl Follower {
    fn new(path: PathBuf) -> Self {
        Follower { path, file: None, partial: Vec::new() }
    }

    /// The lines completed since the last call (none while the file does
    /// not exist yet).
    fn read(&mut self) -> Result<Vec<String>> {
        if self.file.is_none() {
            match fs::File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e).with_context(|| format!("opening {}", self.path.display())),
            }
        }
        let mut new = Vec::new();
        if let Some(file) = self.file.as_mut() {
            file.read_to_end(&mut new).with_context(|| format!("reading {}", self.path.display()))?;
        }
        Ok(take_lines(&mut self.partial, &new))
    }

    /// The last line, when the file ends without a newline.
    fn rest(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.partial);
        (!rest.is_empty()).then(|| clean(&rest))
    }
}

/// Appends `new` to `partial` and takes out every completed line.
fn take_lines(partial: &mut Vec<u8>, new: &[u8]) -> Vec<String> {
    partial.extend_from_slice(new);
    let mut lines = Vec::new();
    while let Some(i) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=i).collect();
        lines.push(clean(&line));
    }
    lines
}

/// A console line as text, without its line ending (the kernel writes `\r\n`).
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches(['\r', '\n']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(cpus: u32) -> String {
        let files = Files { dir: PathBuf::from("/t/job.bochs") };
        bochsrc(&Machine { model: "corei7_haswell_4770", cpus, memory_mib: 512, files: &files })
    }

    #[test]
    fn bochsrc_is_headless_and_boots_the_cd() {
        let rc = config(2);
        for want in [
            "display_library: rfb, options=\"timeout=0\"\n",
            "cpu: model=corei7_haswell_4770, count=2, ips=10000000, reset_on_triple_fault=0\n",
            "megs: 512\n",
            "clock: sync=none, time0=local\n",
            "ata0-master: type=cdrom, path=\"/t/job.bochs/l1.iso\", status=inserted\n",
            "boot: cdrom\n",
            "com1: enabled=1, mode=file, dev=\"/t/job.bochs/serial.raw\"\n",
            "speaker: enabled=0\n",
            "log: \"/t/job.bochs/bochs.log\"\n",
        ] {
            assert!(rc.contains(want), "bochsrc lacks {want:?}:\n{rc}");
        }
        assert!(config(1).contains("count=1,"));
    }

    #[test]
    fn command_line_names_the_exit_method() {
        let line = cmdline("console=ttyS0 panic=-1 tsc_early_khz=2000000");
        assert_eq!(
            line,
            "console=ttyS0,115200 panic=-1 tsc_early_khz=10000 rkvm.exit=bochs reboot=t \
             rcupdate.rcu_expedited=1 pty.legacy_count=0"
        );
        let cfg = isolinux_cfg("LABEL l1\n  APPEND @CMDLINE@\n", &line);
        assert_eq!(cfg, format!("LABEL l1\n  APPEND {line}\n"));
    }

    #[test]
    fn the_template_has_the_placeholder() {
        let template = fs::read_to_string(crate::paths::l1_sources().join("isolinux.cfg")).unwrap();
        assert!(template.contains("APPEND @CMDLINE@"));
    }

    #[test]
    fn lines_are_split_across_reads() {
        let mut partial = Vec::new();
        assert_eq!(take_lines(&mut partial, b"RKVM-INFO a\r\nRKVM-"), vec!["RKVM-INFO a"]);
        assert_eq!(take_lines(&mut partial, b"END rc"), Vec::<String>::new());
        assert_eq!(take_lines(&mut partial, b"=0\r\n\r\nx"), vec!["RKVM-END rc=0", ""]);
        assert_eq!(partial, b"x");
    }

    #[test]
    fn the_verdict_comes_from_the_job_end_line() {
        assert_eq!(end_status("RKVM-END rc=0"), Some(0));
        assert_eq!(end_status("RKVM-END rc=3"), Some(3));
        assert_eq!(end_status("[ 1.0] RKVM-END rc=0"), None);
        assert_eq!(end_status("RKVM-INFO rc=0"), None);
        assert_eq!(ending(Some(0), false), Ending::Verdict(0));
        assert_eq!(ending(Some(3), false), Ending::Verdict(1));
        assert_eq!(ending(Some(0), true), Ending::Verdict(0));
        assert_eq!(ending(None, true), Ending::TimedOut);
        assert_eq!(ending(None, false), Ending::NoVerdict);
    }

    #[test]
    fn a_file_is_followed_as_it_grows() {
        let path = std::env::temp_dir().join(format!("rkvm-bochs-follow-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        let mut follower = Follower::new(path.clone());
        assert!(follower.read().unwrap().is_empty());
        fs::write(&path, "one\r\ntw").unwrap();
        assert_eq!(follower.read().unwrap(), vec!["one"]);
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"o\r\nend").unwrap();
        assert_eq!(follower.read().unwrap(), vec!["two"]);
        assert_eq!(follower.rest(), Some("end".into()));
        let _ = fs::remove_file(&path);
    }
}
