//! Checks the Rust core's object before it goes into `rkvm.ko`.
//!
//! The kernel's module loader and objtool accept only what C code compiled
//! with the kernel's flags produces. A Rust object built with the wrong flags
//! links fine and then fails at `insmod` time ("Unknown rela relocation"), or
//! worse, runs SSE code with the guest's or the user's FPU state live. So
//! every build checks, and refuses with a clear message:
//!
//! - relocations: only the types `arch/x86/kernel/module.c` applies;
//! - sections: none the kernel does not expect (`.eh_frame`, `.got`, ...);
//! - instructions: none that touch x87, MMX or SSE/AVX registers;
//! - symbols: every undefined symbol is defined by the glue or exported by
//!   the kernel (`Module.symvers`).

use anyhow::{Context, Result, bail};
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, OpKind, Register};
use object::elf::{SHF_EXECINSTR, SHT_PROGBITS};
use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, SectionFlags, SectionKind};
use std::collections::BTreeSet;

/// Relocation types `apply_relocate_add` handles on x86-64 (Linux 6.1).
const ALLOWED_RELOCATIONS: &[(u32, &str)] = &[
    (object::elf::R_X86_64_NONE, "NONE"),
    (object::elf::R_X86_64_64, "64"),
    (object::elf::R_X86_64_PC32, "PC32"),
    (object::elf::R_X86_64_PLT32, "PLT32"),
    (object::elf::R_X86_64_32, "32"),
    (object::elf::R_X86_64_32S, "32S"),
    (object::elf::R_X86_64_PC64, "PC64"),
];

/// Sections that mean the object was built for user space, not the kernel.
const FORBIDDEN_SECTIONS: &[&str] =
    &[".eh_frame", ".got", ".got.plt", ".plt", ".llvmbc", ".llvmcmd", ".tdata", ".tbss", ".init_array", ".ctors"];

/// Problems found in one relocatable object; empty means it is fit for the kernel.
pub fn check(data: &[u8]) -> Result<Vec<String>> {
    let file = object::File::parse(data).context("the Rust core is not an ELF object")?;
    if file.architecture() != object::Architecture::X86_64 || file.kind() != object::ObjectKind::Relocatable {
        bail!("the Rust core is not an x86-64 relocatable object");
    }
    let mut problems = Vec::new();
    for section in file.sections() {
        let name = section.name().unwrap_or("?");
        if FORBIDDEN_SECTIONS.iter().any(|f| name == *f || name.starts_with(&format!("{f}."))) {
            problems.push(format!("section {name}: the kernel does not expect it (built without the kernel's flags?)"));
        }
        check_relocations(&file, &section, name, &mut problems);
        if is_code(&section) {
            check_instructions(&section, name, &mut problems)?;
        }
    }
    Ok(problems)
}

fn is_code(section: &object::Section<'_, '_>) -> bool {
    match section.flags() {
        SectionFlags::Elf { sh_flags } => sh_flags & u64::from(SHF_EXECINSTR) != 0,
        _ => section.kind() == SectionKind::Text,
    }
}

fn check_relocations(file: &object::File<'_>, section: &object::Section<'_, '_>, name: &str, out: &mut Vec<String>) {
    for (offset, reloc) in section.relocations() {
        let RelocationFlags::Elf { r_type } = reloc.flags() else { continue };
        if ALLOWED_RELOCATIONS.iter().any(|(t, _)| *t == r_type) {
            continue;
        }
        let target = match reloc.target() {
            object::RelocationTarget::Symbol(i) => file.symbol_by_index(i).and_then(|s| s.name()).unwrap_or("?"),
            _ => "?",
        };
        out.push(format!(
            "section {name}+{offset:#x}: relocation type {} against `{target}`: the module loader refuses it{}",
            relocation_name(r_type),
            if r_type == object::elf::R_X86_64_GOTPCREL || r_type == object::elf::R_X86_64_REX_GOTPCRELX {
                " (GOT-relative: build core/alloc with -Zbuild-std and -Crelocation-model=static)"
            } else {
                ""
            }
        ));
    }
}

fn relocation_name(r_type: u32) -> String {
    match r_type {
        object::elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL (9)".into(),
        object::elf::R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX (41)".into(),
        object::elf::R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX (42)".into(),
        other => format!("{other}"),
    }
}

/// Flags every instruction that uses x87, MMX, SSE or AVX registers: the
/// kernel does not save user FPU state around its own code.
fn check_instructions(section: &object::Section<'_, '_>, name: &str, out: &mut Vec<String>) -> Result<()> {
    if !matches!(section.flags(), SectionFlags::Elf { .. }) || section_type(section) != Some(SHT_PROGBITS) {
        return Ok(());
    }
    let code = section.data()?;
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut formatter = IntelFormatter::new();
    let mut found = 0;
    for instr in &mut decoder {
        if uses_fpu(&instr) {
            found += 1;
            if found <= 5 {
                let mut text = String::new();
                formatter.format(&instr, &mut text);
                out.push(format!("section {name}+{:#x}: `{text}` uses FPU/SSE registers", instr.ip()));
            }
        }
    }
    if found > 5 {
        out.push(format!("section {name}: {} more FPU/SSE instructions", found - 5));
    }
    Ok(())
}

fn section_type(section: &object::Section<'_, '_>) -> Option<u32> {
    // `object` does not expose sh_type directly; code sections with data are PROGBITS.
    (section.size() > 0 && section.kind() != SectionKind::UninitializedData).then_some(SHT_PROGBITS)
}

fn uses_fpu(instr: &iced_x86::Instruction) -> bool {
    let bad = |r: Register| r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_mm() || r.is_st();
    let operand = (0..instr.op_count()).any(|i| instr.op_kind(i) == OpKind::Register && bad(instr.op_register(i)));
    let x87 = instr.cpuid_features().contains(&iced_x86::CpuidFeature::FPU);
    operand || bad(instr.memory_index()) || x87
}

/// The names of the symbols `data` uses but does not define.
pub fn undefined_symbols(data: &[u8]) -> Result<BTreeSet<String>> {
    let file = object::File::parse(data)?;
    Ok(file
        .symbols()
        .filter(|s| s.is_undefined() && s.is_global())
        .filter_map(|s| s.name().ok().filter(|n| !n.is_empty()).map(str::to_string))
        .collect())
}

/// The names of the global symbols `data` defines.
pub fn defined_symbols(data: &[u8]) -> Result<BTreeSet<String>> {
    let file = object::File::parse(data)?;
    Ok(file
        .symbols()
        .filter(|s| s.is_definition() && s.is_global())
        .filter_map(|s| s.name().ok().map(str::to_string))
        .collect())
}

/// The symbols a kernel build tree exports to modules, from `Module.symvers`
/// (lines of `crc<TAB>symbol<TAB>module<TAB>export-type<TAB>namespace`).
pub fn exported_symbols(symvers: &str) -> BTreeSet<String> {
    symvers.lines().filter_map(|l| l.split('\t').nth(1)).map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Assembles `source` (AT&T syntax) with the system assembler.
    fn assemble(source: &str) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("rkvm-objcheck-{}-{}", std::process::id(), source.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let (src, obj) = (dir.join("t.s"), dir.join("t.o"));
        std::fs::write(&src, source).unwrap();
        let status = Command::new("as").arg("--64").arg("-o").arg(&obj).arg(&src).status().expect("run `as` (apt-get install binutils)");
        assert!(status.success());
        let data = std::fs::read(&obj).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        data
    }

    #[test]
    fn clean_kernel_code_passes() {
        let obj = assemble(".text\n.globl f\nf:\n call memcpy\n mov x(%rip), %rax\n lfence\n ret\n.data\nx: .quad f\n");
        assert_eq!(check(&obj).unwrap(), Vec::<String>::new());
        assert_eq!(undefined_symbols(&obj).unwrap().into_iter().collect::<Vec<_>>(), vec!["memcpy"]);
    }

    #[test]
    fn a_gotpcrel_relocation_is_refused() {
        let obj = assemble(".text\nf:\n call *memcpy@GOTPCREL(%rip)\n ret\n");
        let problems = check(&obj).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("GOTPCREL") && problems[0].contains("memcpy"), "{problems:?}");
    }

    #[test]
    fn sse_and_x87_instructions_are_refused() {
        let obj = assemble(".text\nf:\n movaps %xmm0, (%rdi)\n fldz\n pxor %mm0, %mm0\n ret\n");
        let problems = check(&obj).unwrap();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("movaps"), "{problems:?}");
    }

    #[test]
    fn unwind_tables_are_refused() {
        let obj = assemble(".text\nf:\n .cfi_startproc\n ret\n .cfi_endproc\n");
        let problems = check(&obj).unwrap();
        assert!(problems.iter().any(|p| p.contains(".eh_frame")), "{problems:?}");
    }

    #[test]
    fn symvers_lines_name_the_export() {
        let symvers = "0x12345678\tmemcpy\tvmlinux\tEXPORT_SYMBOL\t\n0x0\tkvm_init\tarch/x86/kvm/kvm\tEXPORT_SYMBOL_GPL\t\n";
        let names: Vec<_> = exported_symbols(symvers).into_iter().collect();
        assert_eq!(names, vec!["kvm_init", "memcpy"]);
    }
}
