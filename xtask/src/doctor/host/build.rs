//! Building rkvm.ko for the running kernel: its headers, the compiler it
//! was built with, what its configuration asks of the module, and the
//! rkvm.ko files at hand.
//!
//! The kernel needs no Rust support: rkvm builds its Rust core itself for
//! `x86_64-unknown-none` (xtask/src/kmod.rs, kmod/Makefile), with the
//! code-generation flags the configuration demands (`kmod::rustflags`),
//! and Kbuild links it with the C glue. What that takes of the headers
//! tree: `include/config/auto.conf`, `Module.symvers` (modpost checks
//! every symbol against it, and warns without it, which `cargo xtask kmod`
//! treats as an error), `tools/objtool/objtool` when the kernel is built
//! with objtool, the thunks the flags call (`__x86_return_thunk`,
//! `__x86_indirect_thunk_*`) exported, and the compiler that built the
//! kernel.

use super::{Finding, Inputs, Ko, Status};
use std::path::{Path, PathBuf};

const HEADERS: &str = "kernel headers";
const COMPILER: &str = "kernel's compiler";
const CONFIG: &str = "kernel configuration";
const MODULE: &str = "rkvm.ko";

/// The command that installs the running kernel's headers.
fn install_headers(i: &Inputs, f: Finding) -> Finding {
    match super::distro(&i.os_release) {
        Some("debian") => f.run("sudo apt-get install linux-headers-$(uname -r)"),
        Some("fedora") => f.run("sudo dnf install kernel-devel-$(uname -r)"),
        _ => f
            .run("sudo apt-get install linux-headers-$(uname -r)   # Debian, Ubuntu")
            .run("sudo dnf install kernel-devel-$(uname -r)        # Fedora"),
    }
}

pub fn headers(i: &Inputs) -> Finding {
    let dir = format!("/lib/modules/{}/build", i.release);
    match &i.headers {
        None => install_headers(
            i,
            Finding::new(Status::Problem, HEADERS, format!("no {dir}: the running kernel's headers are not installed")),
        )
        .say("(a kernel built here has no package: link its build tree there, after `make modules_prepare` in it)"),
        Some(h) if h.config.is_none() => install_headers(
            i,
            Finding::new(Status::Problem, HEADERS, format!("{} is not a configured kernel tree (no include/config/auto.conf)", h.dir)),
        ),
        Some(h) => Finding::new(Status::Ok, HEADERS, format!("{}, configured", h.dir)),
    }
}

/// The value of `CONFIG_name` in a kernel configuration, unquoted.
fn value<'a>(config: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("CONFIG_{name}=");
    config.lines().find_map(|l| l.strip_prefix(key.as_str())).map(|v| v.trim_matches('"'))
}

fn on(config: &str, name: &str) -> bool {
    value(config, name) == Some("y")
}

/// The compiler program the kernel was built with, the first word of
/// CONFIG_CC_VERSION_TEXT (`gcc-12 (Debian 12.2.0-14) 12.2.0`,
/// `x86_64-linux-gnu-gcc-12 (Ubuntu ...)`, `gcc (GCC) 14.2.1 ...`), or
/// `None` for clang, whose text starts with its vendor.
pub fn compiler_program(config: &str) -> Option<String> {
    if on(config, "CC_IS_CLANG") {
        return None;
    }
    let program = value(config, "CC_VERSION_TEXT")?.split_whitespace().next()?;
    (program.contains("gcc") && !program.contains('/')).then(|| program.to_string())
}

/// The package of a gcc program: `gcc-12` for `gcc-12` and
/// `x86_64-linux-gnu-gcc-12`, `gcc` for `gcc`.
fn gcc_package(program: &str) -> String {
    match program.rsplit_once("gcc") {
        Some((_, version)) => format!("gcc{version}"),
        None => program.to_string(),
    }
}

pub fn compiler(i: &Inputs) -> Finding {
    let Some(config) = i.headers.as_ref().and_then(|h| h.config.as_deref()) else {
        return Finding::new(Status::Unknown, COMPILER, "not known without the headers (above)");
    };
    if on(config, "CC_IS_CLANG") {
        return Finding::new(Status::Warn, COMPILER, "the kernel was built with clang: rkvm's builds pass no LLVM=1 and are tried on gcc-built kernels only")
            .say("build against a gcc-built kernel, or add LLVM=1 to the make commands of kmod/Makefile");
    }
    let text = value(config, "CC_VERSION_TEXT").unwrap_or("");
    let Some(program) = compiler_program(config) else {
        return Finding::new(Status::Unknown, COMPILER, format!("CONFIG_CC_VERSION_TEXT \"{text}\" names no gcc"));
    };
    let version = i.headers.as_ref().and_then(|h| h.compiler_version.as_deref());
    let package = gcc_package(&program);
    match version {
        None => {
            let f = Finding::new(
                Status::Problem,
                COMPILER,
                format!("the kernel was built with {program}, which is not installed, and Kbuild compiles the module's glue with it"),
            );
            match super::distro(&i.os_release) {
                Some("fedora") => f.run("sudo dnf install gcc"),
                _ => f.run(format!("sudo apt-get install {package}")),
            }
        }
        Some(v) if v.trim() == text => Finding::new(Status::Ok, COMPILER, format!("{program}, as the kernel was built ({text})")),
        Some(v) => Finding::new(
            Status::Warn,
            COMPILER,
            format!("the kernel was built with \"{text}\", {program} here is \"{}\"", v.trim()),
        )
        .say("Kbuild warns \"the compiler differs from the one used to build the kernel\", and `cargo xtask kmod` stops at")
        .say("its warnings (dkms goes on): upgrade the compiler and the kernel together, and reboot into the new kernel"),
    }
}

pub fn config(i: &Inputs) -> Finding {
    let Some(h) = &i.headers else {
        return Finding::new(Status::Unknown, CONFIG, "not known without the headers (above)");
    };
    let Some(config) = h.config.as_deref() else {
        return Finding::new(Status::Unknown, CONFIG, "not known without a configured headers tree (above)");
    };
    let mut missing: Vec<String> = Vec::new();
    if !on(config, "X86_64") {
        missing.push("not an x86-64 kernel (CONFIG_X86_64)".into());
    }
    if !on(config, "MODULES") {
        missing.push("no loadable modules (CONFIG_MODULES)".into());
    }
    let symvers = h.symvers.as_deref();
    if symvers.is_none() {
        missing.push(format!("no {}/Module.symvers: modpost cannot check the module's symbols", h.dir));
    }
    if (on(config, "OBJTOOL") || on(config, "STACK_VALIDATION")) && !h.objtool {
        missing.push(format!("no {}/tools/objtool/objtool, which Kbuild runs on every object of this kernel's modules", h.dir));
    }
    let exports = |symbol: &str| symvers.is_none_or(|s| s.lines().any(|l| l.split('\t').nth(1).is_some_and(|n| n.starts_with(symbol))));
    let rethunk = on(config, "RETHUNK") || on(config, "MITIGATION_RETHUNK");
    let retpoline = on(config, "RETPOLINE") || on(config, "MITIGATION_RETPOLINE");
    if rethunk && !exports("__x86_return_thunk") {
        missing.push("return thunks on, but Module.symvers exports no __x86_return_thunk for the Rust core's `ret`s".into());
    }
    if retpoline && !exports("__x86_indirect_thunk_") {
        missing.push("retpolines on, but Module.symvers exports no __x86_indirect_thunk_* for the Rust core's indirect calls".into());
    }
    if missing.is_empty() {
        let defaults = crate::kmod::rustflags("").len();
        let flags = crate::kmod::rustflags(config).split_off(defaults);
        let flags = if flags.is_empty() { "no mitigation flags".to_string() } else { flags.join(" ") };
        return Finding::new(
            Status::Ok,
            CONFIG,
            format!("x86-64 with modules; the Rust core gets {flags}; no Rust support in the kernel needed"),
        );
    }
    install_headers(i, Finding::new(Status::Problem, CONFIG, missing.join("; ")))
        .say("these come with the headers package (on Debian, objtool and modpost with linux-kbuild-VERSION); reinstall it")
}

/// Where rkvm.ko may be: `--ko`, or `cargo xtask kmod`'s output and dkms's
/// installed module for this release.
pub fn candidates(ko: Option<PathBuf>, release: &str) -> Vec<PathBuf> {
    if let Some(ko) = ko {
        return vec![ko];
    }
    let dkms = Path::new("/lib/modules").join(release).join("updates/dkms");
    let mut paths = vec![crate::paths::target().join("kmod/rkvm/rkvm.ko")];
    paths.extend(["rkvm.ko", "rkvm.ko.xz", "rkvm.ko.zst", "rkvm.ko.gz"].map(|n| dkms.join(n)));
    paths
}

/// The marker the kernel's sign-file appends after a module's signature.
const SIGNATURE_MARKER: &[u8] = b"~Module signature appended~\n";

/// An rkvm.ko file: the release its `vermagic` names, and whether it is
/// signed. Compressed modules are not opened.
pub fn read_ko(path: &Path) -> Ko {
    let mut ko = Ko { path: path.display().to_string(), release: None, signed: None };
    if path.extension().is_none_or(|e| e != "ko") {
        return ko;
    }
    let Ok(data) = std::fs::read(path) else { return ko };
    ko.signed = Some(data.ends_with(SIGNATURE_MARKER));
    ko.release = vermagic_release(&data);
    ko
}

/// The first word of `vermagic=` in the module's `.modinfo` section.
pub fn vermagic_release(elf: &[u8]) -> Option<String> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(elf).ok()?;
    let modinfo = file.section_by_name(".modinfo")?.data().ok()?;
    modinfo.split(|&b| b == 0).find_map(|entry| {
        let text = std::str::from_utf8(entry.strip_prefix(b"vermagic=")?).ok()?;
        text.split_whitespace().next().map(str::to_string)
    })
}

pub fn module(i: &Inputs) -> Finding {
    let rebuild = "cargo xtask kmod --kdir /lib/modules/$(uname -r)/build";
    if i.modules.iter().any(|m| m.name == "rkvm") {
        return Finding::new(Status::Ok, MODULE, "loaded (see /sys/module/rkvm)");
    }
    if let Some(ko) = i.kos.iter().find(|k| k.release.as_deref() == Some(i.release.as_str())) {
        let signed = if ko.signed == Some(true) { ", signed" } else { "" };
        return Finding::new(Status::Ok, MODULE, format!("{} is built for {}{signed}", ko.path, i.release));
    }
    if let Some(ko) = i.kos.iter().find(|k| k.release.is_none()) {
        return Finding::new(Status::Unknown, MODULE, format!("{}: which kernel it is built for was not read", ko.path));
    }
    match i.kos.first() {
        Some(ko) => Finding::new(
            Status::Warn,
            MODULE,
            format!(
                "{} is built for {}, not for the running {}: insmod refuses it (\"Invalid module format\")",
                ko.path,
                ko.release.as_deref().unwrap_or("?"),
                i.release
            ),
        )
        .say("build it for this kernel (`cargo xtask kmod` alone builds for the course's L1 kernel):")
        .run(rebuild),
        None => Finding::new(Status::Warn, MODULE, "not built for this kernel yet")
            .run(rebuild)
            .say("or install it with dkms (the README's \"Installing with dkms\")"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, text};
    use super::super::{Headers, Module};
    use super::*;

    fn with_headers(change: impl FnOnce(&mut Headers)) -> Inputs {
        let mut i = fake::intel();
        if let Some(h) = i.headers.as_mut() {
            change(h);
        }
        i
    }

    #[test]
    fn headers_missing() {
        let i = Inputs { headers: None, ..fake::intel() };
        let f = headers(&i);
        assert_eq!(f.status, Status::Problem);
        assert!(f.summary.contains("/lib/modules/6.1.0-57-amd64/build"), "{}", f.summary);
        assert!(text(&f).contains("sudo apt-get install linux-headers-$(uname -r)") && !text(&f).contains("dnf"));
        let fedora = Inputs { os_release: "ID=fedora\n".into(), ..i.clone() };
        assert!(text(&headers(&fedora)).contains("sudo dnf install kernel-devel-$(uname -r)"));
        let other = Inputs { os_release: String::new(), ..i.clone() };
        assert!(text(&headers(&other)).contains("apt-get") && text(&headers(&other)).contains("dnf"));
        for check in [compiler, config] {
            assert_eq!(check(&i).status, Status::Unknown);
        }
        let unconfigured = with_headers(|h| h.config = None);
        assert_eq!(headers(&unconfigured).status, Status::Problem);
    }

    #[test]
    fn the_compiler_the_kernel_was_built_with() {
        assert_eq!(compiler_program(fake::CONFIG), Some("gcc-12".into()));
        let ubuntu = "CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-12 (Ubuntu 12.3.0-1ubuntu1~22.04) 12.3.0\"\n";
        assert_eq!(compiler_program(ubuntu).as_deref().map(gcc_package), Some("gcc-12".into()));
        assert_eq!(gcc_package("gcc"), "gcc");
        let clang = "CONFIG_CC_IS_CLANG=y\nCONFIG_CC_VERSION_TEXT=\"Debian clang version 16.0.6\"\n";
        assert_eq!(compiler_program(clang), None);
        let missing = with_headers(|h| h.compiler_version = None);
        assert_eq!(compiler(&missing).status, Status::Problem);
        assert!(text(&compiler(&missing)).contains("sudo apt-get install gcc-12"));
        let other = with_headers(|h| h.compiler_version = Some("gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0".into()));
        assert_eq!(compiler(&other).status, Status::Warn);
        assert!(text(&compiler(&other)).contains("compiler differs"));
        let built_by_clang = with_headers(|h| h.config = Some(clang.into()));
        assert_eq!(compiler(&built_by_clang).status, Status::Warn);
    }

    #[test]
    fn the_configuration_names_the_flags_and_what_the_tree_must_hold() {
        let f = config(&fake::intel());
        assert_eq!(f.status, Status::Ok);
        assert!(f.summary.contains("-Zretpoline-external-thunk -Zfunction-return=thunk-extern"), "{}", f.summary);
        let no_objtool = with_headers(|h| h.objtool = false);
        assert!(config(&no_objtool).summary.contains("objtool"));
        let no_symvers = with_headers(|h| h.symvers = None);
        assert_eq!(config(&no_symvers).status, Status::Problem);
        let no_thunk = with_headers(|h| h.symvers = Some(fake::SYMVERS.replace("__x86_return_thunk", "other")));
        assert!(config(&no_thunk).summary.contains("__x86_return_thunk"));
        let no_modules = with_headers(|h| h.config = Some("CONFIG_X86_64=y\n".into()));
        assert!(config(&no_modules).summary.contains("CONFIG_MODULES"));
    }

    #[test]
    fn the_module_at_hand() {
        assert_eq!(module(&fake::intel()).status, Status::Ok);
        let l1 = Ko { path: "target/kmod/rkvm/rkvm.ko".into(), release: Some("6.1.158-rkvm".into()), signed: Some(false) };
        let i = Inputs { kos: vec![l1], ..fake::intel() };
        assert_eq!(module(&i).status, Status::Warn);
        assert!(text(&module(&i)).contains("6.1.158-rkvm") && text(&module(&i)).contains("--kdir /lib/modules/$(uname -r)/build"));
        let none = Inputs { kos: Vec::new(), ..fake::intel() };
        assert!(module(&none).summary.contains("not built"));
        let loaded = Inputs { modules: vec![Module { name: "rkvm".into(), builtin: false, refcnt: Some(0) }], ..none };
        assert_eq!(module(&loaded).status, Status::Ok);
    }

    /// A relocatable ELF64 object with one section, `.modinfo`, holding
    /// `modinfo` (ELF: header, section data, names, section headers).
    fn elf_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let names = b"\0.modinfo\0.shstrtab\0";
        let shoff = (64 + modinfo.len() + names.len()).next_multiple_of(8);
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.resize(16, 0);
        for (value, size) in [(1, 2), (62, 2), (1, 4), (0, 8), (0, 8), (shoff, 8), (0, 4), (64, 2), (0, 2), (0, 2), (64, 2), (3, 2), (2, 2)] {
            elf.extend_from_slice(&(value as u64).to_le_bytes()[..size]);
        }
        elf.extend_from_slice(modinfo);
        elf.extend_from_slice(names);
        elf.resize(shoff, 0);
        // name, type, flags, addr, offset, size, link, info, align, entsize
        let sections = [[0; 10], [1, 1, 2, 0, 64, modinfo.len(), 0, 0, 1, 0], [10, 3, 0, 0, 64 + modinfo.len(), names.len(), 0, 0, 1, 0]];
        for header in sections {
            for (field, value) in header.into_iter().enumerate() {
                let size = if matches!(field, 0 | 1 | 6 | 7) { 4 } else { 8 };
                elf.extend_from_slice(&(value as u64).to_le_bytes()[..size]);
            }
        }
        elf
    }

    #[test]
    fn vermagic_and_signature_are_read_from_the_module() {
        let bytes = elf_with_modinfo(b"license=GPL\0vermagic=6.1.0-57-amd64 SMP preempt mod_unload modversions \0");
        assert_eq!(vermagic_release(&bytes), Some("6.1.0-57-amd64".into()));
        let mut signed = bytes.clone();
        signed.extend_from_slice(SIGNATURE_MARKER);
        let path = std::env::temp_dir().join(format!("rkvm-doctor-{}.ko", std::process::id()));
        std::fs::write(&path, &signed).unwrap();
        let ko = read_ko(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!((ko.release.as_deref(), ko.signed), (Some("6.1.0-57-amd64"), Some(true)));
        assert_eq!(read_ko(Path::new("/nonexistent/rkvm.ko.xz")).release, None);
    }
}
