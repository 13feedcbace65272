//! The guests: the ones built into this binary, and `.asm` files.
//!
//! `build.rs` assembles every `testguests/guests/*.asm` with NASM and
//! embeds each image with its source (for the header) and its golden trace,
//! so the binary needs no files inside the L1 test machine. A path to an
//! `.asm` file is assembled when it is run, which needs NASM on the host.

use crate::header::{self, Header};
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// A guest built into the binary.
#[derive(Debug)]
pub struct EmbeddedGuest {
    pub name: &'static str,
    /// The assembly source, whose header says how to run the guest.
    pub source: &'static str,
    /// The flat binary NASM made of it.
    pub image: &'static [u8],
    /// `testguests/golden/<name>.trace`, if it existed at build time.
    pub golden: Option<&'static str>,
}

// `GUESTS`, sorted by stage, then name.
include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The include file every guest uses, for guests assembled at run time.
const RKVM_INC: &str = include_str!("../../guests/rkvm.inc");

/// A guest ready to load.
#[derive(Clone, Debug)]
pub struct Guest {
    pub header: Header,
    pub image: Vec<u8>,
}

impl EmbeddedGuest {
    /// The guest with its parsed header; `build.rs` has checked the header.
    pub fn guest(&self) -> Result<Guest> {
        let header = header::parse(self.source).with_context(|| format!("embedded guest {}", self.name))?;
        Ok(Guest { header, image: self.image.to_vec() })
    }

    /// Why the header leaves the guest out on L1 platform `platform`
    /// (`not-on:`), if it does.
    pub fn left_out_on(&self, platform: &str) -> Option<String> {
        header::parse(self.source).ok()?.left_out_on(platform).map(str::to_string)
    }

    /// Whether the header names a seed register.
    pub fn is_seeded(&self) -> bool {
        header::parse(self.source).is_ok_and(|h| h.seed.is_some())
    }
}

/// The embedded guest called `name`.
pub fn embedded(name: &str) -> Option<&'static EmbeddedGuest> {
    GUESTS.iter().find(|g| g.name == name)
}

/// The embedded guests with a golden trace whose first stage is at most
/// `max_stage`: the ones `all`, `check` and `--list` take. Seeded guests
/// are not among them.
pub fn up_to_stage(max_stage: Option<u32>) -> impl Iterator<Item = &'static EmbeddedGuest> {
    selected(max_stage).filter(|g| !g.is_seeded())
}

/// The seeded guests (header `seed:`) whose first stage is at most
/// `max_stage`: the ones `rkvm-run chaos` runs. Their traces change with
/// the seed, so they have no golden trace.
pub fn seeded(max_stage: Option<u32>) -> impl Iterator<Item = &'static EmbeddedGuest> {
    selected(max_stage).filter(|g| g.is_seeded())
}

fn selected(max_stage: Option<u32>) -> impl Iterator<Item = &'static EmbeddedGuest> {
    GUESTS.iter().filter(move |g| match (max_stage, header::parse(g.source)) {
        (Some(max), Ok(header)) => header.stage <= max,
        _ => true,
    })
}

/// A guest named on the command line: an embedded name or an `.asm` path.
pub fn find(arg: &str) -> Result<Guest> {
    if arg.ends_with(".asm") {
        return assemble(Path::new(arg));
    }
    match embedded(arg) {
        Some(guest) => guest.guest(),
        None => bail!("no guest named `{arg}`: `rkvm-run --list` shows them, or give the path of an .asm file"),
    }
}

/// Assembles an `.asm` file with NASM, with `rkvm.inc` on the include path.
fn assemble(path: &Path) -> Result<Guest> {
    let source = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = header::parse(&source).with_context(|| path.display().to_string())?;
    let scratch = std::env::temp_dir().join(format!("rkvm-run-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let result = run_nasm(path, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(Guest { header, image: result? })
}

fn run_nasm(path: &Path, scratch: &Path) -> Result<Vec<u8>> {
    std::fs::write(scratch.join("rkvm.inc"), RKVM_INC)?;
    let image = scratch.join("guest.bin");
    let own_dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let output = Command::new("nasm")
        .args(["-f", "bin", "-o"])
        .arg(&image)
        .arg(format!("-I{}/", own_dir.display()))
        .arg(format!("-I{}/", scratch.display()))
        .arg(path)
        .output()
        .context("cannot run nasm, which assembles .asm guests: apt-get install nasm")?;
    if !output.status.success() {
        bail!("nasm failed on {}:\n{}", path.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(std::fs::read(&image)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_guest_has_a_valid_header_naming_it() {
        assert!(GUESTS.len() >= 15);
        for g in GUESTS {
            let guest = g.guest().unwrap();
            assert_eq!(guest.header.name, g.name);
            assert!(!guest.image.is_empty(), "{}", g.name);
        }
    }

    #[test]
    fn guests_are_sorted_by_stage_then_name() {
        let keys: Vec<(u32, &str)> = GUESTS.iter().map(|g| (g.guest().unwrap().header.stage, g.name)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn the_hlt_guest_is_one_hlt_instruction() {
        assert_eq!(find("hlt").unwrap().image, [0xF4]);
    }

    #[test]
    fn max_stage_filters_by_first_stage() {
        let early: Vec<&str> = up_to_stage(Some(5)).map(|g| g.name).collect();
        assert_eq!(early, ["hlt", "hlt-real", "spin"]);
        assert_eq!(up_to_stage(None).count() + seeded(None).count(), GUESTS.len());
        assert!(seeded(Some(7)).next().is_none());
        assert!(seeded(None).all(|g| g.golden.is_none() && !up_to_stage(None).any(|h| h.name == g.name)));
    }

    #[test]
    fn unknown_names_say_where_to_look() {
        let error = find("no-such-guest").unwrap_err().to_string();
        assert!(error.contains("rkvm-run --list"), "{error}");
    }

    #[test]
    fn an_asm_file_is_assembled_with_rkvm_inc_available() {
        let dir = std::env::temp_dir().join(format!("rkvm-run-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mine.asm");
        let source = "; guest: mine\n; stage: 5\n; mode: real\n; demonstrates: x\n\
                      %include \"rkvm.inc\"\nbits 16\norg LOAD_ADDR\nout EXIT_PORT, al\n";
        std::fs::write(&path, source).unwrap();
        let guest = find(path.to_str().unwrap());
        std::fs::write(&path, "; guest: mine\n; stage: 5\n; mode: real\n; demonstrates: x\nout NO_SUCH_PORT, al\n").unwrap();
        let broken = find(path.to_str().unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(guest.unwrap().image, [0xE6, 0xF4]);
        assert!(broken.unwrap_err().to_string().contains("nasm failed"));
    }
}
