//! `cargo xtask kmod`: builds `rkvm.ko` from `kmod/` (or a stage crate).
//!
//! 1. The Rust core is built as a static library for `x86_64-unknown-none`,
//!    with `core` and `alloc` rebuilt (`-Zbuild-std`) under code-generation
//!    flags read from the target kernel's configuration.
//! 2. The crate's own object is taken out of the archive (not
//!    `compiler_builtins`: the kernel provides `memcpy` and friends) and
//!    checked by [`objcheck`](crate::objcheck).
//! 3. Kbuild links it with the C glue into `rkvm.ko` in a build directory
//!    under `target/`, never in the source tree (`make clean` there would
//!    delete cargo's archives).
//! 4. Every undefined symbol of the Rust object must be defined by the glue
//!    or exported by the kernel.

use crate::{doctor, kernel, objcheck, paths, progress};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Build against this kernel build tree (for example
    /// /lib/modules/$(uname -r)/build) instead of the L1 kernel.
    #[arg(long)]
    pub kdir: Option<PathBuf>,
    /// Extra rustc flags, appended to those derived from the kernel's config
    /// (for experiments, e.g. `--rustflags=-Ctarget-feature=+sse2`).
    #[arg(long, allow_hyphen_values = true)]
    pub rustflags: Option<String>,
}

/// What to build and against what.
pub struct Build {
    /// The kernel build tree (`KDIR`).
    pub kdir: PathBuf,
    /// The crate holding the Rust core and, beside it, `Kbuild` and `glue/`.
    pub crate_dir: PathBuf,
    /// Its cargo package name.
    pub package: String,
    pub extra_rustflags: Option<String>,
    /// The directory under `target/kmod/` the module is built in: the
    /// package's name, or for a kernel other than the default L1 one (a
    /// distribution's headers, the debug kernel) a name of its own, so that
    /// builds for two kernels never share one.
    pub out: String,
}

pub fn run(args: Args) -> Result<()> {
    let kdir = match args.kdir {
        Some(dir) => dir,
        None => kernel::ensure()?.build,
    };
    let mut build = Build::for_crate(kdir, paths::root().join("kmod"))?;
    build.extra_rustflags = args.rustflags;
    let ko = build_module(&build)?;
    println!("built {}", ko.display());
    Ok(())
}

impl Build {
    /// Builds the crate in `crate_dir` (kmod/ or a stage) against `kdir`.
    pub fn for_crate(kdir: PathBuf, crate_dir: PathBuf) -> Result<Self> {
        let package = manifest_field(&crate_dir, "package", "name")?;
        Ok(Build { kdir, crate_dir, out: package.clone(), package, extra_rustflags: None })
    }

    /// As [`Build::for_crate`], built in a directory named after the kernel
    /// tree too (`rkvm-linux-headers-6.1.0-57-amd64`).
    pub fn for_crate_and_kernel(kdir: PathBuf, crate_dir: PathBuf) -> Result<Self> {
        let mut build = Build::for_crate(kdir, crate_dir)?;
        if let Some(name) = build.kdir.file_name() {
            build.out = format!("{}-{}", build.package, name.to_string_lossy());
        }
        Ok(build)
    }
}

/// Builds the module and returns the path of the `.ko`.
pub fn build_module(b: &Build) -> Result<PathBuf> {
    doctor::require(&doctor::KERNEL_BUILD[1..3])?;
    let start = Instant::now();
    let config = read_kernel_config(&b.kdir)?;
    let mut flags = rustflags(&config);
    flags.extend(b.extra_rustflags.iter().flat_map(|f| f.split_whitespace().map(str::to_string)));
    let out = paths::target().join("kmod").join(&b.out);
    fs::create_dir_all(&out)?;
    // Two `cargo xtask` processes (the two lanes of `cargo xtask test`) may
    // build the same module at once: the second waits for the first. The
    // lock goes when `lock` is dropped, on return.
    let lock = fs::File::create(out.join(".lock"))?;
    lock.lock().with_context(|| format!("locking {}", out.display()))?;
    let archive = cargo_staticlib(b, &flags)?;
    let object = out.join("rkvm_core.rust.o");
    println!("kmod: [2/3] checking the Rust object (relocations, instructions, sections)");
    extract_crate_object(&archive, &object)?;
    let problems = objcheck::check(&fs::read(&object)?)?;
    if !problems.is_empty() {
        let shown = problems.iter().take(8).cloned().collect::<Vec<_>>().join("\n  ");
        let more = problems.len().saturating_sub(8);
        let more = if more > 0 { format!("\n  ... and {more} more") } else { String::new() };
        bail!("the Rust core is not fit for the kernel ({}):\n  {shown}{more}", object.display());
    }
    println!("kmod: [3/3] Kbuild links rkvm.ko with the C glue, against {}", b.kdir.display());
    let ko = kbuild(b, &object, &out)?;
    check_symbols(b, &object, &out)?;
    let dest = out.join("rkvm.ko");
    // Whole or not at all, for a process that reads it while another
    // builds the same module again.
    let partial = out.join("rkvm.ko.partial");
    fs::copy(&ko, &partial)?;
    fs::rename(&partial, &dest)?;
    println!("kmod: {} built in {:.1?}", dest.display(), start.elapsed());
    drop(lock);
    Ok(dest)
}

/// `include/config/auto.conf` of a configured kernel tree.
fn read_kernel_config(kdir: &Path) -> Result<String> {
    let path = kdir.join("include/config/auto.conf");
    fs::read_to_string(&path).with_context(|| {
        format!(
            "{} is not a configured kernel build tree (no {}); for your running kernel install \
             the headers: sudo apt-get install linux-headers-$(uname -r)",
            kdir.display(),
            path.display()
        )
    })
}

/// The rustc flags a kernel built with `config` demands, mirroring what its
/// `arch/x86/Makefile` gives C code.
pub fn rustflags(config: &str) -> Vec<String> {
    let on = |name: &str| config.lines().any(|l| l == format!("CONFIG_{name}=y"));
    let value = |name: &str| config.lines().find_map(|l| l.strip_prefix(&format!("CONFIG_{name}=")));
    let mut flags: Vec<String> =
        ["-Crelocation-model=static", "-Cforce-unwind-tables=no", "-Zplt=yes"].map(String::from).to_vec();
    if on("RETPOLINE") || on("MITIGATION_RETPOLINE") {
        flags.push("-Zretpoline-external-thunk".into());
    }
    if on("RETHUNK") || on("MITIGATION_RETHUNK") {
        flags.push("-Zfunction-return=thunk-extern".into());
    }
    if on("SLS") || on("MITIGATION_SLS") {
        flags.push("-Ctarget-feature=+harden-sls-ret,+harden-sls-ijmp".into());
    }
    if on("X86_KERNEL_IBT") {
        flags.extend(["-Zcf-protection=branch".into(), "-Cjump-tables=n".into()]);
    }
    if on("CALL_PADDING") {
        let n = value("FUNCTION_PADDING_BYTES").unwrap_or("16");
        flags.push(format!("-Zpatchable-function-entry={n},{n}"));
    }
    flags
}

/// Builds the crate as a static library for the kernel target, printing
/// progress while it runs. Each set of flags gets its own target directory,
/// so switching kernels does not rebuild everything every time.
fn cargo_staticlib(b: &Build, flags: &[String]) -> Result<PathBuf> {
    let joined = flags.join(" ");
    let target_dir = paths::target().join("kmod-rust").join(flags_key(&joined));
    let (package, manifest) = (&b.package, b.crate_dir.join("Cargo.toml"));
    let first = !target_dir.join("x86_64-unknown-none").is_dir();
    println!(
        "kmod: [1/3] cargo builds the Rust core of `{package}` for x86_64-unknown-none{}, with {joined}",
        if first { " (and, this first time, `core` and `alloc` for it: a minute or two)" } else { "" }
    );
    let start = Instant::now();
    let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(paths::root())
        .args(["rustc", "--manifest-path"])
        .arg(&manifest)
        .args(["--profile", "kmod", "--target", "x86_64-unknown-none", "-Zbuild-std=core,alloc"])
        .args(["--crate-type", "staticlib", "--color", "never", "--target-dir"])
        .arg(&target_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo (is the target installed? `cargo xtask doctor`)")?;
    let output = progress::follow_cargo(&mut child, &format!("kmod: building the Rust core of `{package}`"), None)?;
    eprint!("{}", without_known_warnings(&output.messages));
    if !output.status.success() {
        bail!("building the Rust core failed (cargo's errors are above)");
    }
    if output.crates > 0 {
        let took = progress::elapsed_text(start.elapsed());
        println!("kmod: the Rust core took {took} ({} compiled)", progress::crates_text(output.crates));
    }
    let lib = lib_name(&b.crate_dir)?;
    Ok(target_dir.join("x86_64-unknown-none/kmod").join(format!("lib{lib}.a")))
}

/// rustc warns that the straight-line-speculation features (which LLVM
/// knows and the kernel needs) are not in its own list of target features.
/// The warning says nothing the reader can act on, so it is dropped, with
/// cargo's count of warnings (`warning: `x` (lib) generated 2 warnings`),
/// which counted it; every other line of cargo's output is kept.
const KNOWN_WARNING: &str = "unstable feature specified for `-Ctarget-feature`: `harden-sls-";

fn without_known_warnings(stderr: &str) -> String {
    let mut kept = String::new();
    let mut skipping = false;
    for line in stderr.lines() {
        if line.starts_with("warning: `") && line.contains(") generated ") {
            continue;
        }
        if line.starts_with("warning:") && line.contains(KNOWN_WARNING) {
            skipping = true;
        } else if skipping && line.trim().is_empty() {
            skipping = false;
        } else if !skipping {
            kept += line;
            kept += "\n";
        }
    }
    kept
}

fn flags_key(flags: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for byte in flags.bytes() {
        h = (h ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

/// The library name of a crate: `[lib] name`, else the package name.
fn lib_name(crate_dir: &Path) -> Result<String> {
    let name = manifest_field(crate_dir, "lib", "name").or_else(|_| manifest_field(crate_dir, "package", "name"))?;
    Ok(name.replace('-', "_"))
}

/// A `key = "value"` of one section of a crate's `Cargo.toml`.
fn manifest_field(crate_dir: &Path, section: &str, key: &str) -> Result<String> {
    let path = crate_dir.join("Cargo.toml");
    let toml = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let body = toml.split(&format!("[{section}]")).nth(1).and_then(|b| b.split("\n[").next());
    body.and_then(|body| {
        body.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
        })
    })
    .with_context(|| format!("no `{key}` in [{section}] of {}", path.display()))
}

/// Copies the crate's own object out of the static library. With LTO it is
/// one object whose name starts with the crate's name; the rest of the
/// archive is `compiler_builtins`, which the kernel does without.
fn extract_crate_object(archive_path: &Path, dest: &Path) -> Result<()> {
    let data = fs::read(archive_path).with_context(|| format!("reading {}", archive_path.display()))?;
    let archive = object::read::archive::ArchiveFile::parse(&*data)?;
    let stem = archive_path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.strip_prefix("lib")).unwrap_or("");
    let mut found = Vec::new();
    for member in archive.members() {
        let member = member?;
        let name = String::from_utf8_lossy(member.name()).to_string();
        if name.starts_with(&format!("{stem}-")) && name.ends_with(".o") {
            found.push((name, member.data(&*data)?.to_vec()));
        }
    }
    match found.as_slice() {
        [(_, bytes)] => Ok(fs::write(dest, bytes)?),
        [] => bail!("no object of crate `{stem}` in {}", archive_path.display()),
        many => bail!(
            "{} objects of crate `{stem}` in {} (expected one: is LTO on in the kmod profile?)",
            many.len(),
            archive_path.display()
        ),
    }
}

/// Runs Kbuild in `out/kbuild`, a copy of the crate's `Kbuild` and `glue/`.
fn kbuild(b: &Build, object: &Path, out: &Path) -> Result<PathBuf> {
    let dir = out.join("kbuild");
    fs::create_dir_all(dir.join("glue"))?;
    copy_stripped(&b.crate_dir.join("Kbuild"), &dir.join("Kbuild"))?;
    for entry in fs::read_dir(b.crate_dir.join("glue"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "c" || e == "h") {
            copy_stripped(&path, &dir.join("glue").join(path.file_name().unwrap_or_default()))?;
        }
    }
    let log = out.join("kbuild.log");
    let mut child = Command::new("make")
        .arg("-C")
        .arg(&b.kdir)
        .arg(format!("M={}", dir.display()))
        .arg(format!("RKVM_RUST_OBJ={}", object.display()))
        .args(["-j2", "modules"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running make")?;
    // Two files compile: the glue and the module's own `.mod.c`.
    let status = progress::follow_build(&mut child, &log, "kmod: Kbuild", 2)?;
    let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("warning:") || l.contains("WARNING:")).collect();
    if !status.success() || !warnings.is_empty() {
        bail!("Kbuild failed or warned (full log: {}):\n{}", out.join("kbuild.log").display(), text.trim_end());
    }
    Ok(dir.join("rkvm.ko"))
}

/// Copies a source file without its stage-marker lines (`//@`, `#@`), which
/// mean nothing to the compiler but would clutter the build directory.
fn copy_stripped(src: &Path, dest: &Path) -> Result<()> {
    let text = fs::read_to_string(src).with_context(|| format!("reading {}", src.display()))?;
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !(l.trim_start().starts_with("//@") || l.trim_start().starts_with("#@")))
        .collect();
    let new = kept.join("\n") + "\n";
    if fs::read_to_string(dest).ok().as_deref() != Some(new.as_str()) {
        fs::write(dest, new)?;
    }
    Ok(())
}

/// Every symbol the Rust object needs must come from the glue or the kernel.
fn check_symbols(b: &Build, object: &Path, out: &Path) -> Result<()> {
    let needed = objcheck::undefined_symbols(&fs::read(object)?)?;
    let glue = objcheck::defined_symbols(&fs::read(out.join("kbuild/glue/rkvm_glue.o"))?)?;
    let symvers = fs::read_to_string(b.kdir.join("Module.symvers")).unwrap_or_default();
    let kernel = objcheck::exported_symbols(&symvers);
    let missing: Vec<&String> = needed.iter().filter(|s| !glue.contains(*s) && !kernel.contains(*s)).collect();
    if !missing.is_empty() {
        bail!(
            "the Rust core uses symbols that neither the glue defines nor the kernel exports: {}",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_kernel_config() {
        let debian_6_1 = "CONFIG_RETPOLINE=y\nCONFIG_RETHUNK=y\nCONFIG_SLS=y\n";
        let flags = rustflags(debian_6_1);
        assert!(flags.contains(&"-Zretpoline-external-thunk".to_string()));
        assert!(flags.contains(&"-Zfunction-return=thunk-extern".to_string()));
        assert!(!flags.iter().any(|f| f.contains("cf-protection")));
        let ibt = rustflags("CONFIG_X86_KERNEL_IBT=y\nCONFIG_CALL_PADDING=y\nCONFIG_FUNCTION_PADDING_BYTES=16\n");
        assert!(ibt.contains(&"-Zcf-protection=branch".to_string()));
        assert!(ibt.contains(&"-Zpatchable-function-entry=16,16".to_string()));
        assert!(!ibt.iter().any(|f| f.contains("retpoline")));
    }

    #[test]
    fn only_the_sls_feature_warnings_are_dropped() {
        let stderr = "warning: unknown and unstable feature specified for `-Ctarget-feature`: `harden-sls-ret`\n  |\n  = note: it is still passed through\n\nwarning: unused variable: `x`\n  --> src/lib.rs:1:1\nwarning: `rkvm` (lib) generated 2 warnings\n";
        assert_eq!(without_known_warnings(stderr), "warning: unused variable: `x`\n  --> src/lib.rs:1:1\n");
    }

    #[test]
    fn every_build_is_static_and_without_unwind_tables() {
        let flags = rustflags("");
        assert_eq!(flags, ["-Crelocation-model=static", "-Cforce-unwind-tables=no", "-Zplt=yes"]);
    }
}
