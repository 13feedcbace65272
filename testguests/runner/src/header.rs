//! The header of a test guest: the comment lines at the top of its `.asm`
//! file that tell the runner how to start it.
//!
//! A header is the leading run of lines of the form `; key: value`. It must
//! name the guest (`guest`, equal to the file's stem), the first course stage
//! whose module must run it (`stage`), the CPU state the runner sets before
//! the first `KVM_RUN` (`mode`) and what it `demonstrates`; it may give the
//! size of guest memory (`memory`), a region the runner fills with the test
//! pattern before the run (`preload: ADDR LEN`), a region it prints after
//! the run (`dump: ADDR LEN`), and, for a guest that never stops by itself,
//! the seconds after which the runner stops it (`timeout`), and, for a
//! guest that `rkvm-run chaos` runs many times with a different seed each
//! time, the register the seed goes into (`seed`) and, if the runner is to
//! generate the guest's steps from the seed, where it writes them
//! (`program: ADDR`); and, for a guest that reads its own dirty log
//! through the runner, `dirty-log: yes`, which makes its memory log the
//! pages it writes; and, for a guest that counts the interrupts it takes,
//! where it keeps the counts (`irq-counts: ADDR`: two doublewords, the
//! interrupts its handlers took and how many of them had waited for the
//! interrupt window), which `rkvm-run check` holds against the
//! hypervisor's own counters; and, for a guest that no hypervisor can run
//! as its golden trace says on some L1 platform, the platforms and why
//! (`not-on: PLATFORM[, PLATFORM]: REASON`, the platforms named as
//! `cargo xtask --platform` names them): `rkvm-run --platform P check`
//! reports it as not run there, with the reason. Anything else is an
//! error, so a typo in a key or a platform cannot silently change how or
//! where a guest runs.
//!
//! This file uses only `std`: `build.rs` includes it too, so a malformed
//! header fails the build with the same message the runner would give.

use std::collections::BTreeMap;
use std::fmt;

/// Guest memory when the header does not say: 1 MiB, all a real-mode guest
/// can address.
pub const DEFAULT_MEMORY: u64 = 0x10_0000;
/// The largest guest memory a header may ask for: 64 MiB.
pub const MAX_MEMORY: u64 = 0x400_0000;
/// The last stage of the course.
pub const LAST_STAGE: u32 = 13;

/// The CPU state the runner gives a guest before its first instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode, all segments at base 0: as after reset, but at `LOAD_ADDR`.
    Real,
    /// 32-bit protected mode, flat segments, paging off.
    Prot32,
    /// 64-bit long mode on identity-mapping page tables the runner builds.
    Long64,
}

impl Mode {
    /// The header spelling of each mode.
    pub const ALL: [(&'static str, Mode); 3] =
        [("real", Mode::Real), ("prot32", Mode::Prot32), ("long64", Mode::Long64)];

    /// The mode's header spelling.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::Prot32 => "prot32",
            Mode::Long64 => "long64",
        }
    }
}

/// A range of guest-physical memory named by a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub addr: u64,
    pub len: u64,
}

/// A parsed, checked header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub stage: u32,
    pub mode: Mode,
    pub memory: u64,
    pub preload: Option<Region>,
    pub dump: Option<Region>,
    /// Stop the guest after this many seconds instead of `--timeout`'s: it
    /// never stops by itself, and its golden trace ends in `timeout N`.
    pub timeout: Option<u64>,
    /// A seeded guest: the runner puts the seed into this register (one of
    /// [`SEED_REGISTERS`]) before the first instruction. Its trace changes
    /// with the seed, so it has no golden trace; `rkvm-run chaos` runs it.
    pub seed: Option<&'static str>,
    /// Guest memory logs the pages the guest writes, and an `out` to
    /// [`crate::devices::DIRTY_PORT`] reads the log into the trace.
    pub dirty_log: bool,
    /// A seeded guest whose steps the runner generates from the seed and
    /// writes at this address (see `program`).
    pub program: Option<u64>,
    /// Where the guest keeps two doublewords: the interrupts its handlers
    /// took, and how many of them had waited for the interrupt window.
    pub irq_counts: Option<u64>,
    /// The L1 platforms the guest is left out on, and why.
    pub not_on: Option<NotOn>,
    pub demonstrates: String,
}

/// The L1 platforms (`cargo xtask --platform`) that a header's `not-on:`
/// may name; xtask's own list must be the same (a test of xtask checks).
pub const PLATFORMS: [&str; 3] = ["tcg-svm", "kvm", "bochs-vmx"];

/// A header's `not-on: PLATFORM[, PLATFORM]: REASON`: where no hypervisor
/// can give the guest's golden trace, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotOn {
    /// Each one of [`PLATFORMS`].
    pub platforms: Vec<&'static str>,
    pub reason: String,
}

impl Header {
    /// Why the guest is not run on `platform`, if it is not.
    pub fn left_out_on(&self, platform: &str) -> Option<&str> {
        let not_on = self.not_on.as_ref()?;
        not_on.platforms.contains(&platform).then_some(not_on.reason.as_str())
    }
}

/// The registers a header's `seed:` may name.
pub const SEED_REGISTERS: [&str; 7] = ["eax", "ebx", "ecx", "edx", "esi", "edi", "ebp"];

/// What is wrong with a header, and on which line (1-based; 0 for the
/// header as a whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            0 => write!(f, "guest header: {}", self.message),
            n => write!(f, "guest header, line {n}: {}", self.message),
        }
    }
}

impl std::error::Error for HeaderError {}

fn error<T>(line: usize, message: impl Into<String>) -> Result<T, HeaderError> {
    Err(HeaderError { line, message: message.into() })
}

/// The keys a header may have.
const KEYS: [&str; 13] = [
    "guest", "stage", "mode", "demonstrates", "memory", "preload", "dump", "timeout", "seed", "program", "dirty-log", "irq-counts",
    "not-on",
];

/// Each key's line number and value.
type Fields<'a> = BTreeMap<&'a str, (usize, &'a str)>;

/// Parses the header at the top of a guest's assembly source.
pub fn parse(source: &str) -> Result<Header, HeaderError> {
    let fields = fields(source)?;
    let required = |key: &str| {
        fields.get(key).copied().ok_or_else(|| HeaderError {
            line: 0,
            message: format!("no `; {key}: ...` line; every guest starts with `; guest:`, \
                              `; stage:`, `; mode:` and `; demonstrates:` lines"),
        })
    };
    let name = parse_name(required("guest")?)?;
    let stage = parse_stage(required("stage")?)?;
    let mode = parse_mode(required("mode")?)?;
    let demonstrates = parse_demonstrates(required("demonstrates")?)?;
    let memory = fields.get("memory").map(|&v| parse_memory(v)).transpose()?.unwrap_or(DEFAULT_MEMORY);
    let region = |key| fields.get(key).map(|&v| parse_region(v, memory)).transpose();
    let timeout = fields.get("timeout").map(|&v| parse_timeout(v)).transpose()?;
    let seed = fields.get("seed").map(|&v| parse_seed(v)).transpose()?;
    let program = fields.get("program").map(|&v| parse_program(v, memory, seed.is_some())).transpose()?;
    let dirty_log = fields.get("dirty-log").map(|&v| parse_yes(v)).transpose()?.is_some();
    let irq_counts = fields.get("irq-counts").map(|&v| parse_irq_counts(v, memory)).transpose()?;
    let not_on = fields.get("not-on").map(|&v| parse_not_on(v)).transpose()?;
    let (preload, dump) = (region("preload")?, region("dump")?);
    Ok(Header { name, stage, mode, memory, preload, dump, timeout, seed, program, dirty_log, irq_counts, not_on, demonstrates })
}

/// `PLATFORM[, PLATFORM]: REASON`: known platforms, each once, and a reason.
fn parse_not_on((line, text): (usize, &str)) -> Result<NotOn, HeaderError> {
    let Some((names, reason)) = text.split_once(':') else {
        return error(line, format!("not-on `{text}`: give the platforms, then `:` and why, like `tcg-svm: QEMU ...`"));
    };
    let mut platforms = Vec::new();
    for name in names.split(',').map(str::trim) {
        let Some(platform) = PLATFORMS.iter().find(|p| **p == name) else {
            return error(line, format!("not-on: unknown platform `{name}`; the platforms are {}", PLATFORMS.join(", ")));
        };
        if platforms.contains(platform) {
            return error(line, format!("not-on: `{name}` given twice"));
        }
        platforms.push(*platform);
    }
    let reason = reason.trim();
    if reason.is_empty() {
        return error(line, "not-on: say after the `:` why no hypervisor can run the guest there");
    }
    Ok(NotOn { platforms, reason: reason.to_string() })
}

/// Where a guest keeps its two interrupt counts: 8 bytes inside memory.
fn parse_irq_counts((line, text): (usize, &str), memory: u64) -> Result<u64, HeaderError> {
    match parse_number(text) {
        Some(addr) if addr.checked_add(8).is_some_and(|end| end <= memory) => Ok(addr),
        _ => error(line, format!("irq-counts `{text}`: give the address of two doublewords inside guest memory (0 to {memory:#x})")),
    }
}

fn parse_yes((line, text): (usize, &str)) -> Result<(), HeaderError> {
    match text {
        "yes" => Ok(()),
        _ => error(line, format!("`{text}`: the only value is `yes` (leave the line out for no)")),
    }
}

/// Where the runner writes a seeded guest's generated steps.
fn parse_program((line, text): (usize, &str), memory: u64, seeded: bool) -> Result<u64, HeaderError> {
    if !seeded {
        return error(line, "`program:` needs `seed:`: the steps are generated from the seed");
    }
    match parse_number(text) {
        Some(addr) if addr < memory => Ok(addr),
        _ => error(line, format!("program `{text}`: give an address inside guest memory (0 to {memory:#x})")),
    }
}

/// The register of a seeded guest's seed.
fn parse_seed((line, text): (usize, &str)) -> Result<&'static str, HeaderError> {
    match SEED_REGISTERS.iter().find(|r| **r == text) {
        Some(register) => Ok(register),
        None => error(line, format!("seed `{text}`: name the register the seed goes into: {}", SEED_REGISTERS.join(", "))),
    }
}

/// A guest's own timeout: 1 to 60 seconds.
fn parse_timeout((line, text): (usize, &str)) -> Result<u64, HeaderError> {
    match parse_number(text) {
        Some(n @ 1..=60) => Ok(n),
        _ => error(line, format!("timeout `{text}`: give whole seconds from 1 to 60")),
    }
}

/// The header's `key: value` lines, each key known and given once.
fn fields(source: &str) -> Result<Fields<'_>, HeaderError> {
    let mut fields = Fields::new();
    for (index, line) in source.lines().enumerate() {
        let Some((key, value)) = header_line(line) else { break };
        let number = index + 1;
        if !KEYS.contains(&key) {
            return error(number, format!("unknown key `{key}`; the keys are {}", KEYS.join(", ")));
        }
        if fields.insert(key, (number, value)).is_some() {
            return error(number, format!("`{key}` given twice"));
        }
    }
    Ok(fields)
}

/// Splits `; key: value` into its key and value; `None` ends the header.
fn header_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(';')?.trim_start();
    let (key, value) = rest.split_once(':')?;
    let is_key = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-');
    is_key.then(|| (key, strip_comment(value)))
}

/// A value, without surrounding blanks or a trailing `(...)` remark.
fn strip_comment(value: &str) -> &str {
    let value = value.trim();
    match value.find("  (") {
        Some(at) if value.ends_with(')') => value[..at].trim_end(),
        _ => value,
    }
}

fn parse_name((line, text): (usize, &str)) -> Result<String, HeaderError> {
    let valid = !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return error(line, format!("guest name `{text}`: use lowercase letters, digits and `-`"));
    }
    Ok(text.to_string())
}

fn parse_demonstrates((line, text): (usize, &str)) -> Result<String, HeaderError> {
    if text.is_empty() {
        return error(line, "say in a few words what the guest demonstrates");
    }
    Ok(text.to_string())
}

fn parse_stage((line, text): (usize, &str)) -> Result<u32, HeaderError> {
    match text.parse::<u32>() {
        Ok(stage) if (1..=LAST_STAGE).contains(&stage) => Ok(stage),
        _ => error(line, format!("stage `{text}`: give the first course stage, 1 to {LAST_STAGE}, that must run this guest")),
    }
}

fn parse_mode((line, text): (usize, &str)) -> Result<Mode, HeaderError> {
    match Mode::ALL.iter().find(|(name, _)| *name == text) {
        Some((_, mode)) => Ok(*mode),
        None => error(line, format!("unknown mode `{text}`: use real, prot32 or long64")),
    }
}

fn parse_memory((line, text): (usize, &str)) -> Result<u64, HeaderError> {
    match parse_number(text) {
        Some(bytes) if bytes % 0x1000 == 0 && (0x1_0000..=MAX_MEMORY).contains(&bytes) => Ok(bytes),
        _ => error(line, format!("memory `{text}`: give a multiple of 4 KiB from 0x10000 to {MAX_MEMORY:#x}")),
    }
}

/// `ADDR LEN`, inside guest memory.
fn parse_region((line, text): (usize, &str), memory: u64) -> Result<Region, HeaderError> {
    let mut words = text.split_whitespace().map(parse_number);
    let (Some(Some(addr)), Some(Some(len)), None) = (words.next(), words.next(), words.next()) else {
        return error(line, format!("`{text}`: give an address and a length, like `0x10000 0x100`"));
    };
    match addr.checked_add(len) {
        Some(end) if len > 0 && end <= memory => Ok(Region { addr, len }),
        _ => error(line, format!("region `{text}` is not inside guest memory (0 to {memory:#x})")),
    }
}

/// A decimal or `0x` hexadecimal number.
pub fn parse_number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => text.replace('_', "").parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "; guest: io-sizes\n; stage: 6\n; mode: prot32\n; demonstrates: out and in\n\nbits 32\n";

    #[test]
    fn a_minimal_header_parses_with_defaults() {
        let h = parse(GOOD).unwrap();
        assert_eq!((h.name.as_str(), h.stage, h.mode), ("io-sizes", 6, Mode::Prot32));
        assert_eq!((h.memory, h.preload, h.dump, h.timeout, h.seed), (DEFAULT_MEMORY, None, None, None, None));
        assert_eq!(h.demonstrates, "out and in");
    }

    #[test]
    fn optional_keys_and_remarks_in_parentheses() {
        let source = "; guest: m\n; stage: 06\n; mode: long64   (remark)\n; demonstrates: x\n\
                      ; memory: 0x20000\n; preload: 0x10000 0x100\n; dump: 4096 16\n; timeout: 2  (seconds)\n";
        let h = parse(source).unwrap();
        assert_eq!((h.stage, h.mode, h.memory, h.timeout), (6, Mode::Long64, 0x20000, Some(2)));
        assert_eq!(h.preload, Some(Region { addr: 0x10000, len: 0x100 }));
        assert_eq!(h.dump, Some(Region { addr: 0x1000, len: 16 }));
    }

    #[test]
    fn the_header_ends_at_the_first_other_line() {
        let source = format!("{GOOD}; stage: 7\n");
        assert_eq!(parse(&source).unwrap().stage, 6);
        let source = "; guest: a\n;\n; stage: 5\n; mode: real\n; demonstrates: x\n";
        assert!(parse(source).unwrap_err().message.contains("no `; stage: ...` line"));
    }

    #[test]
    fn missing_unknown_and_repeated_keys_are_errors() {
        assert_eq!(parse("bits 16\n").unwrap_err().line, 0);
        let unknown = parse("; guest: a\n; stages: 5\n").unwrap_err();
        assert_eq!(unknown.line, 2);
        assert!(unknown.message.contains("unknown key `stages`"));
        let twice = parse("; guest: a\n; guest: b\n").unwrap_err();
        assert_eq!((twice.line, twice.message.as_str()), (2, "`guest` given twice"));
    }

    #[test]
    fn bad_values_name_the_line_and_the_fix() {
        let bad_mode = GOOD.replace("prot32", "protected");
        assert_eq!(parse(&bad_mode).unwrap_err().to_string(),
                   "guest header, line 3: unknown mode `protected`: use real, prot32 or long64");
        assert_eq!(parse(&GOOD.replace("6", "14")).unwrap_err().line, 2);
        assert_eq!(parse(&GOOD.replace("6", "0")).unwrap_err().line, 2);
        assert_eq!(parse(&GOOD.replace("io-sizes", "IO")).unwrap_err().line, 1);
        let odd_memory = format!("{}; memory: 0x10001\n", &GOOD[..GOOD.find("\n\n").unwrap() + 1]);
        assert_eq!(parse(&odd_memory).unwrap_err().line, 5);
        let no_timeout = format!("{}; timeout: 0\n", &GOOD[..GOOD.find("\n\n").unwrap() + 1]);
        assert_eq!(parse(&no_timeout).unwrap_err().to_string(), "guest header, line 5: timeout `0`: give whole seconds from 1 to 60");
    }

    #[test]
    fn a_seeded_guest_names_its_seed_register() {
        let header = &GOOD[..GOOD.find("\n\n").unwrap() + 1];
        assert_eq!(parse(&format!("{header}; seed: ebx\n")).unwrap().seed, Some("ebx"));
        let wrong = parse(&format!("{header}; seed: rbx\n")).unwrap_err();
        assert_eq!(wrong.to_string(), "guest header, line 5: seed `rbx`: name the register the seed goes into: \
                                       eax, ebx, ecx, edx, esi, edi, ebp");
    }

    #[test]
    fn a_generated_program_needs_a_seed() {
        let header = &GOOD[..GOOD.find("\n\n").unwrap() + 1];
        assert_eq!(parse(&format!("{header}; seed: ebx\n; program: 0xa000\n")).unwrap().program, Some(0xA000));
        let unseeded = parse(&format!("{header}; program: 0xa000\n")).unwrap_err();
        assert_eq!(unseeded.to_string(), "guest header, line 5: `program:` needs `seed:`: the steps are generated from the seed");
        assert!(parse(&format!("{header}; seed: ebx\n; program: 0x100000\n")).is_err());
    }

    #[test]
    fn interrupt_counts_lie_inside_guest_memory() {
        let header = &GOOD[..GOOD.find("\n\n").unwrap() + 1];
        let counts = parse(&format!("{header}; irq-counts: 0x10800  (taken, waited)\n")).unwrap();
        assert_eq!(counts.irq_counts, Some(0x10800));
        assert_eq!(parse(header).unwrap().irq_counts, None);
        let outside = parse(&format!("{header}; memory: 0x10000\n; irq-counts: 0xfffc\n")).unwrap_err();
        assert_eq!(outside.line, 6);
        assert!(outside.message.contains("two doublewords inside guest memory"), "{outside}");
    }

    #[test]
    fn not_on_names_known_platforms_and_a_reason() {
        let header = &GOOD[..GOOD.find("\n\n").unwrap() + 1];
        let h = parse(&format!("{header}; not-on: tcg-svm: QEMU arms no breakpoint: none fires\n")).unwrap();
        let not_on = NotOn { platforms: vec!["tcg-svm"], reason: "QEMU arms no breakpoint: none fires".into() };
        assert_eq!(h.not_on, Some(not_on));
        assert_eq!(h.left_out_on("tcg-svm"), Some("QEMU arms no breakpoint: none fires"));
        assert_eq!((h.left_out_on("bochs-vmx"), h.left_out_on("kvm")), (None, None));
        assert_eq!(parse(header).unwrap().left_out_on("tcg-svm"), None, "without the key, everywhere");
        let two = parse(&format!("{header}; not-on: kvm , bochs-vmx: slow\n")).unwrap();
        assert_eq!(two.not_on.unwrap().platforms, ["kvm", "bochs-vmx"]);
        let error = |line: &str| parse(&format!("{header}{line}\n")).unwrap_err().to_string();
        assert_eq!(error("; not-on: tcg-svn: typo"),
                   "guest header, line 5: not-on: unknown platform `tcg-svn`; the platforms are tcg-svm, kvm, bochs-vmx");
        assert_eq!(error("; not-on: tcg-svm"),
                   "guest header, line 5: not-on `tcg-svm`: give the platforms, then `:` and why, like `tcg-svm: QEMU ...`");
        assert!(error("; not-on: tcg-svm:  ").ends_with("why no hypervisor can run the guest there"));
        assert!(error("; not-on: kvm, kvm: x").ends_with("`kvm` given twice"));
        assert!(error("; not-on: : x").contains("unknown platform ``"));
    }

    #[test]
    fn regions_must_lie_inside_guest_memory() {
        let header = &GOOD[..GOOD.find("\n\n").unwrap() + 1];
        let outside = format!("{header}; memory: 0x10000\n; dump: 0xff00 0x200\n");
        assert!(parse(&outside).unwrap_err().message.contains("not inside guest memory"));
        let malformed = format!("{header}; preload: 0x1000\n");
        assert_eq!(parse(&malformed).unwrap_err().line, 5);
        let empty = format!("{header}; preload: 0x1000 0\n");
        assert!(parse(&empty).is_err());
    }

    #[test]
    fn numbers_are_decimal_or_hex() {
        assert_eq!(parse_number("0x1_0000"), Some(0x10000));
        assert_eq!(parse_number("4096"), Some(4096));
        assert_eq!(parse_number("0xg"), None);
        assert_eq!(parse_number(""), None);
    }
}
