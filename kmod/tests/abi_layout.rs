//@ stage 2
//! The layout oracle: gcc, not rkvm, says where each field of the 2.6.20
//! interface lies.
//!
//! `tests/c/kvm-2.6.20.h` declares the interface in C as Linux 2.6.20 did,
//! and `tests/c/layout.c` prints every struct's size and alignment, every
//! field's offset, size and alignment, every ioctl number (computed by the
//! system's `<linux/ioctl.h>`) and every constant. These tests compile and
//! run that program, then hold `rkvm::abi` to each line, and each line to
//! `rkvm::abi`: nothing may be missing on either side.

use rkvm::abi::{self, IOCTLS, LAYOUTS};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What the C program printed: `"struct kvm_run"` → `[72, 8]`,
/// `"field kvm_run.cr8"` → `[32, 8, 8]`, `"ioctl KVM_RUN"` → `[0xC048AE02]`.
type Facts = BTreeMap<String, Vec<u64>>;

// ANCHOR: oracle
/// Compiles and runs `layout.c` once per test binary and parses its output.
fn c_facts() -> &'static Facts {
    static FACTS: OnceLock<Result<Facts, String>> = OnceLock::new();
    match FACTS.get_or_init(|| build_and_run().map(|text| parse(&text))) {
        Ok(facts) => facts,
        Err(message) => panic!("{message}"),
    }
}

fn build_and_run() -> Result<String, String> {
    let c_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let exe = scratch_dir()?.join("layout");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let compiled = Command::new(&cc)
        .args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(&c_dir)
        .arg(c_dir.join("layout.c"))
        .arg("-o")
        .arg(&exe)
        .output()
        .map_err(|e| {
            format!(
                "cannot run the C compiler `{cc}` ({e}). The layout oracle needs gcc \
                 and the Linux headers: install them with `apt-get install gcc`."
            )
        })?;
    if !compiled.status.success() {
        return Err(format!("`{cc}` failed on layout.c:\n{}", String::from_utf8_lossy(&compiled.stderr)));
    }
    let ran = Command::new(&exe).output().map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !ran.status.success() {
        return Err(format!("{} exited with {}", exe.display(), ran.status));
    }
    String::from_utf8(ran.stdout).map_err(|e| format!("layout.c printed non-UTF-8: {e}"))
}
// ANCHOR_END: oracle

/// A directory of this test process's own under Cargo's scratch space.
fn scratch_dir() -> Result<PathBuf, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("abi_layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

/// `"field kvm_run.cr8 32 8 8"` → key `"field kvm_run.cr8"`, values `[32, 8, 8]`.
fn parse(text: &str) -> Facts {
    let mut facts = Facts::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(name)) = (words.next(), words.next()) else {
            panic!("layout.c printed a malformed line: {line:?}");
        };
        let values = words.map(|w| w.parse().unwrap_or_else(|_| panic!("not a number in {line:?}"))).collect();
        assert!(facts.insert(format!("{kind} {name}"), values).is_none(), "printed twice: {line:?}");
    }
    facts
}

/// What `rkvm::abi` says, in the same form.
fn rust_facts() -> Facts {
    let mut facts = Facts::new();
    for s in LAYOUTS {
        facts.insert(format!("struct {}", s.c_name), vec![s.size as u64, s.align as u64]);
        for f in s.fields {
            let values = vec![f.offset as u64, f.size as u64, f.align as u64];
            facts.insert(format!("field {}.{}", s.c_name, f.name), values);
        }
    }
    for i in IOCTLS {
        facts.insert(format!("ioctl {}", i.name), vec![u64::from(i.cmd)]);
    }
    for (name, value) in CONSTANTS {
        facts.insert(format!("const {name}"), vec![value]);
    }
    facts
}

const CONSTANTS: [(&str, u64); 19] = [
    ("KVMIO", abi::KVMIO as u64),
    ("KVM_API_VERSION", abi::KVM_API_VERSION as u64),
    ("KVM_NR_INTERRUPTS", abi::KVM_NR_INTERRUPTS as u64),
    ("KVM_IRQ_BITMAP_SIZE_BYTES", abi::KVM_IRQ_BITMAP_SIZE_BYTES as u64),
    ("KVM_IRQ_BITMAP_SIZE_U64", abi::KVM_IRQ_BITMAP_SIZE_U64 as u64),
    ("KVM_MEM_LOG_DIRTY_PAGES", abi::KVM_MEM_LOG_DIRTY_PAGES as u64),
    ("KVM_EXIT_TYPE_FAIL_ENTRY", abi::KVM_EXIT_TYPE_FAIL_ENTRY as u64),
    ("KVM_EXIT_TYPE_VM_EXIT", abi::KVM_EXIT_TYPE_VM_EXIT as u64),
    ("KVM_EXIT_UNKNOWN", abi::KVM_EXIT_UNKNOWN as u64),
    ("KVM_EXIT_EXCEPTION", abi::KVM_EXIT_EXCEPTION as u64),
    ("KVM_EXIT_IO", abi::KVM_EXIT_IO as u64),
    ("KVM_EXIT_CPUID", abi::KVM_EXIT_CPUID as u64),
    ("KVM_EXIT_DEBUG", abi::KVM_EXIT_DEBUG as u64),
    ("KVM_EXIT_HLT", abi::KVM_EXIT_HLT as u64),
    ("KVM_EXIT_MMIO", abi::KVM_EXIT_MMIO as u64),
    ("KVM_EXIT_IRQ_WINDOW_OPEN", abi::KVM_EXIT_IRQ_WINDOW_OPEN as u64),
    ("KVM_EXIT_SHUTDOWN", abi::KVM_EXIT_SHUTDOWN as u64),
    ("KVM_EXIT_IO_IN", abi::KVM_EXIT_IO_IN as u64),
    ("KVM_EXIT_IO_OUT", abi::KVM_EXIT_IO_OUT as u64),
];

/// The facts of one kind: `"struct"`, `"field"`, `"ioctl"` or `"const"`.
fn of_kind<'a>(facts: &'a Facts, kind: &'a str) -> impl Iterator<Item = (&'a String, &'a Vec<u64>)> {
    facts.iter().filter(move |(key, _)| key.split(' ').next() == Some(kind))
}

/// Holds Rust's facts of one kind to gcc's, both ways; returns how many
/// were compared.
fn compare(kind: &str) -> usize {
    let (c, rust) = (c_facts(), rust_facts());
    let mut mismatches = Vec::new();
    for (key, c_values) in of_kind(c, kind) {
        match rust.get(key) {
            Some(r) if r == c_values => {}
            Some(r) => mismatches.push(format!("{key}: gcc says {c_values:?}, rkvm says {r:?}")),
            None => mismatches.push(format!("{key}: in the C header, missing from rkvm::abi")),
        }
    }
    for (key, _) in of_kind(&rust, kind).filter(|(key, _)| !c.contains_key(*key)) {
        mismatches.push(format!("{key}: in rkvm::abi, missing from the C header"));
    }
    assert!(mismatches.is_empty(), "rkvm::abi disagrees with gcc:\n  {}", mismatches.join("\n  "));
    of_kind(c, kind).count()
}

#[test]
fn struct_sizes_and_alignments_match_gcc() {
    assert_eq!(compare("struct"), 18, "structs compared");
}

#[test]
fn field_offsets_sizes_and_alignments_match_gcc() {
    assert_eq!(compare("field"), 117, "fields compared");
}

#[test]
fn ioctl_numbers_match_linux_ioctl_h() {
    assert_eq!(compare("ioctl"), 15, "ioctls compared");
}

#[test]
fn constants_match_the_header() {
    assert_eq!(compare("const"), CONSTANTS.len(), "constants compared");
}
