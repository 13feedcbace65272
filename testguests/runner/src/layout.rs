//! Guest memory and the CPU state a guest starts in.
//!
//! Every guest gets one memory slot at guest-physical address 0. The runner
//! copies the image to [`LOAD_ADDR`]; for the protected and long start modes
//! it also writes a GDT (the flat descriptors of stage 01) and, for long
//! mode, page tables that map the first 1 GiB to itself. The start state is
//! expressed in the 2006 ABI's own types, `KvmRegs` and `KvmSregs`; each
//! backend copies it into its vCPU. `testguests/guests/rkvm.inc` gives the
//! guests the same numbers, and a test below keeps the two files in step.

use crate::header::{Header, Mode};
use anyhow::{Result, bail};
use rkvm::abi::{KvmDtable, KvmRegs, KvmSegment, KvmSregs};
use rkvm::segments::{SegmentDescriptor, Selector, TYPE_ACCESSED, TYPE_CODE_EXECUTE_READ, TYPE_TSS_BUSY};

/// Where the image starts, and the first instruction.
pub const LOAD_ADDR: u64 = 0x8000;
/// The initial stack pointer; the stack grows down towards 0x5000.
pub const STACK_TOP: u64 = 0x7000;
/// The runner's GDT, for the prot32 and long64 start modes.
pub const GDT_ADDR: u64 = 0x1000;
/// The runner's PML4 (long64), then its PDPT and one page directory.
pub const PML4_ADDR: u64 = 0x2000;
const PDPT_ADDR: u64 = 0x3000;
const PD_ADDR: u64 = 0x4000;
/// Free memory above the image, for a guest's own tables and buffers.
pub const SCRATCH_ADDR: u64 = 0x1_0000;
/// The last bytes of memory, which no guest may use: 2006's VMX code keeps
/// the TSS of its vm86 real mode in the last three pages of slot 0.
pub const RESERVED_TOP: u64 = 0x3000;

/// Selectors of the runner's GDT.
pub const CODE32_SEL: u16 = 0x08;
pub const DATA32_SEL: u16 = 0x10;
pub const CODE64_SEL: u16 = 0x18;

/// The pattern a header's `preload` asks for: byte `i` of the region.
pub const PATTERN_MUL: u64 = 7;
pub const PATTERN_ADD: u64 = 0x11;

/// Byte `i` of the preload pattern.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(PATTERN_MUL).wrapping_add(PATTERN_ADD) & 0xFF) as u8
}

/// The runner's GDT: null, flat 32-bit code, flat data, 64-bit code.
pub fn gdt() -> [SegmentDescriptor; 4] {
    [
        SegmentDescriptor::NULL,
        SegmentDescriptor::flat_code32(),
        SegmentDescriptor::flat_data32(),
        SegmentDescriptor::code64(),
    ]
}

/// Writes everything the guest finds in memory at its first instruction.
/// `memory` is the whole slot, all zero.
pub fn prepare(memory: &mut [u8], header: &Header, image: &[u8]) -> Result<()> {
    let size = memory.len() as u64;
    let room = size.saturating_sub(RESERVED_TOP + LOAD_ADDR);
    if image.len() as u64 > room {
        bail!(
            "guest {}: its image is {} bytes, but with {size:#x} bytes of memory at most {room} fit \
             between {LOAD_ADDR:#x} and the reserved top {RESERVED_TOP:#x} bytes; \
             make it smaller or raise `; memory:` in its header",
            header.name,
            image.len()
        );
    }
    write(memory, LOAD_ADDR, image);
    if header.mode != Mode::Real {
        let gdt: Vec<u8> = gdt().iter().flat_map(|d| d.to_bytes()).collect();
        write(memory, GDT_ADDR, &gdt);
    }
    if header.mode == Mode::Long64 {
        write_page_tables(memory);
    }
    if let Some(region) = header.preload {
        let pattern: Vec<u8> = (0..region.len).map(pattern_byte).collect();
        write(memory, region.addr, &pattern);
    }
    Ok(())
}

/// Identity map of the first 1 GiB with 2 MiB pages: PML4[0] -> PDPT[0] -> PD.
fn write_page_tables(memory: &mut [u8]) {
    const PRESENT_WRITABLE: u64 = 0x3;
    const LARGE_PAGE: u64 = 0x80;
    write(memory, PML4_ADDR, &(PDPT_ADDR | PRESENT_WRITABLE).to_le_bytes());
    write(memory, PDPT_ADDR, &(PD_ADDR | PRESENT_WRITABLE).to_le_bytes());
    for i in 0..512u64 {
        let entry = (i << 21) | LARGE_PAGE | PRESENT_WRITABLE;
        write(memory, PD_ADDR + 8 * i, &entry.to_le_bytes());
    }
}

/// Copies `bytes` to guest-physical `addr`. Callers have checked the range
/// (the header parser checks regions; the runner's own tables are fixed).
fn write(memory: &mut [u8], addr: u64, bytes: &[u8]) {
    let start = addr as usize;
    memory[start..start + bytes.len()].copy_from_slice(bytes);
}

/// The registers and system registers a guest starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartState {
    pub regs: KvmRegs,
    pub sregs: KvmSregs,
}

/// The start state of `mode`: all general registers zero except rsp, rip at
/// [`LOAD_ADDR`], interrupts off.
pub fn start_state(mode: Mode) -> StartState {
    let regs = KvmRegs { rip: LOAD_ADDR, rsp: STACK_TOP, rflags: 0x2, ..KvmRegs::default() };
    let sregs = match mode {
        Mode::Real => real_mode_sregs(),
        Mode::Prot32 => protected_sregs(CODE32_SEL, 0x11, 0, 0, 0),
        // CR0 = PG | ET | PE, CR4 = PAE, EFER = LMA | LME.
        Mode::Long64 => protected_sregs(CODE64_SEL, 0x8000_0011, PML4_ADDR, 0x20, 0x500),
    };
    StartState { regs, sregs }
}

/// Real mode: every segment at base 0 with a 64 KiB limit; the IVT at 0.
fn real_mode_sregs() -> KvmSregs {
    let data = KvmSegment::real_mode(0);
    let code = KvmSegment { type_: TYPE_CODE_EXECUTE_READ | TYPE_ACCESSED, ..data };
    KvmSregs {
        cs: code,
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        idt: KvmDtable { base: 0, limit: 0x3FF, padding: [0; 3] },
        cr0: 0x10,
        ..system_segments()
    }
}

/// Protected or long mode on the runner's GDT; an empty IDT, so an
/// exception the guest does not handle itself ends in a triple fault.
fn protected_sregs(code: u16, cr0: u64, cr3: u64, cr4: u64, efer: u64) -> KvmSregs {
    let table = gdt();
    let data = loaded(DATA32_SEL, &table);
    KvmSregs {
        cs: loaded(code, &table),
        ds: data,
        es: data,
        fs: data,
        gs: data,
        ss: data,
        gdt: KvmDtable { base: GDT_ADDR, limit: (table.len() * 8 - 1) as u16, padding: [0; 3] },
        idt: KvmDtable::default(),
        cr0,
        cr3,
        cr4,
        efer,
        ..system_segments()
    }
}

/// A segment register as the CPU leaves it after loading `selector` from
/// `table`: the descriptor unpacked, with the accessed bit the CPU sets.
fn loaded(selector: u16, table: &[SegmentDescriptor]) -> KvmSegment {
    let segment = KvmSegment::from_descriptor(Selector(selector), &table[usize::from(selector >> 3)]);
    KvmSegment { type_: segment.type_ | TYPE_ACCESSED, ..segment }
}

/// TR and LDTR as KVM's vCPU reset leaves them: a busy TSS and an LDT at
/// base 0, both present. Nothing in the tests loads either.
fn system_segments() -> KvmSregs {
    let system = KvmSegment { limit: 0xFFFF, present: 1, ..KvmSegment::default() };
    KvmSregs {
        tr: KvmSegment { type_: TYPE_TSS_BUSY, ..system },
        ldt: KvmSegment { type_: 0x2, ..system },
        ..KvmSregs::default()
    }
}

/// Puts a seeded guest's seed into the register its header names (one of
/// [`crate::header::SEED_REGISTERS`]), zero-extended.
pub fn put_seed(regs: &mut KvmRegs, register: &str, seed: u32) {
    let slot = match register {
        "eax" => &mut regs.rax,
        "ebx" => &mut regs.rbx,
        "ecx" => &mut regs.rcx,
        "edx" => &mut regs.rdx,
        "esi" => &mut regs.rsi,
        "edi" => &mut regs.rdi,
        "ebp" => &mut regs.rbp,
        _ => unreachable!("the header parser accepts only SEED_REGISTERS, not `{register}`"),
    };
    *slot = u64::from(seed);
}

/// Copies the fields a start state sets onto a vCPU's current system
/// registers, keeping the rest (CR2, CR8, APIC base, pending interrupts).
pub fn apply_sregs(start: &KvmSregs, current: &mut KvmSregs) {
    let segments = [start.cs, start.ds, start.es, start.fs, start.gs, start.ss, start.tr, start.ldt];
    [current.cs, current.ds, current.es, current.fs, current.gs, current.ss, current.tr, current.ldt] = segments;
    current.gdt = start.gdt;
    current.idt = start.idt;
    current.cr0 = start.cr0;
    current.cr3 = start.cr3;
    current.cr4 = start.cr4;
    current.efer = start.efer;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{DEFAULT_MEMORY, Region};

    /// `NAME equ VALUE` lines of the guests' include file.
    fn include_constants() -> Vec<(String, u64)> {
        include_str!("../../guests/rkvm.inc")
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let (name, equ, value) = (words.next()?, words.next()?, words.next()?);
                (equ == "equ").then(|| (name.to_string(), crate::header::parse_number(value).unwrap()))
            })
            .collect()
    }

    #[test]
    fn rkvm_inc_and_the_runner_agree() {
        use crate::devices::*;
        let ours: [(&str, u64); 26] = [
            ("LOAD_ADDR", LOAD_ADDR),
            ("STACK_TOP", STACK_TOP),
            ("GDT_ADDR", GDT_ADDR),
            ("PML4_ADDR", PML4_ADDR),
            ("SCRATCH_ADDR", SCRATCH_ADDR),
            ("MEMORY_SIZE", DEFAULT_MEMORY),
            ("RESERVED_TOP", RESERVED_TOP),
            ("CODE32_SEL", CODE32_SEL.into()),
            ("DATA32_SEL", DATA32_SEL.into()),
            ("CODE64_SEL", CODE64_SEL.into()),
            ("ECHO_PORT", ECHO_PORT.into()),
            ("COUNTER_PORT", COUNTER_PORT.into()),
            ("REPORT_PORT", REPORT_PORT.into()),
            ("CONSOLE_PORT", CONSOLE_PORT.into()),
            ("DIRTY_PORT", DIRTY_PORT.into()),
            ("IRQ_PORT", IRQ_PORT.into()),
            ("TIMER_PORT", TIMER_PORT.into()),
            ("DEBUG_PORT", DEBUG_PORT.into()),
            ("STORM_PORT", STORM_PORT.into()),
            ("EXIT_PORT", EXIT_PORT.into()),
            ("MMIO_BASE", MMIO_BASE),
            ("MMIO_SIZE", MMIO_SIZE),
            ("PATTERN_MUL", PATTERN_MUL),
            ("PATTERN_ADD", PATTERN_ADD),
            ("CPUID_BASE_LEAF", CPUID_TABLE[0].0.into()),
            ("CPUID_INFO_LEAF", CPUID_TABLE[1].0.into()),
        ];
        let theirs = include_constants();
        for (name, value) in &theirs {
            let found = ours.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            assert_eq!(found, Some(*value), "rkvm.inc's {name} differs from the runner's, or the runner lacks it");
        }
        assert_eq!(theirs.len(), ours.len(), "the runner has a constant rkvm.inc lacks");
    }

    #[test]
    fn the_runner_gdt_holds_the_stage_01_descriptors() {
        let bits: Vec<u64> = gdt().iter().map(|d| d.to_bits()).collect();
        assert_eq!(bits, [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0x00AF_9A00_0000_FFFF]);
    }

    fn header(mode: Mode) -> Header {
        Header {
            name: "t".into(),
            stage: 5,
            mode,
            memory: DEFAULT_MEMORY,
            preload: Some(Region { addr: 0x10000, len: 4 }),
            dump: None,
            timeout: None,
            seed: None,
            dirty_log: false,
            program: None,
            irq_counts: None,
            not_on: None,
            demonstrates: "x".into(),
        }
    }

    #[test]
    fn prepare_writes_image_gdt_tables_and_pattern() {
        let mut memory = vec![0u8; DEFAULT_MEMORY as usize];
        prepare(&mut memory, &header(Mode::Long64), &[0xF4]).unwrap();
        assert_eq!(memory[0x8000], 0xF4);
        assert_eq!(&memory[0x1008..0x1010], &0x00CF_9A00_0000_FFFFu64.to_le_bytes());
        assert_eq!(&memory[0x2000..0x2008], &0x3003u64.to_le_bytes());
        assert_eq!(&memory[0x3000..0x3008], &0x4003u64.to_le_bytes());
        assert_eq!(&memory[0x4008..0x4010], &0x20_0083u64.to_le_bytes());
        assert_eq!(&memory[0x10000..0x10005], &[0x11, 0x18, 0x1F, 0x26, 0]);
    }

    #[test]
    fn real_mode_gets_no_gdt() {
        let mut memory = vec![0u8; DEFAULT_MEMORY as usize];
        prepare(&mut memory, &header(Mode::Real), &[0xF4]).unwrap();
        assert!(memory[0x1000..0x5000].iter().all(|&b| b == 0));
    }

    #[test]
    fn an_image_too_large_for_memory_is_refused_with_the_numbers() {
        let small = Header { memory: 0x10000, preload: None, ..header(Mode::Real) };
        let mut memory = vec![0u8; 0x10000];
        let image = vec![0x90; 0x5001];
        let error = prepare(&mut memory, &small, &image).unwrap_err().to_string();
        assert!(error.contains("20481 bytes") && error.contains("at most 20480 fit"), "{error}");
        assert!(prepare(&mut memory, &small, &image[1..]).is_ok());
    }

    #[test]
    fn start_states_of_each_mode() {
        let real = start_state(Mode::Real);
        assert_eq!((real.regs.rip, real.regs.rsp, real.regs.rflags), (0x8000, 0x7000, 2));
        assert_eq!((real.sregs.cs.type_, real.sregs.ds.type_, real.sregs.cs.base), (0xB, 0x3, 0));
        assert_eq!((real.sregs.cr0, real.sregs.idt.limit), (0x10, 0x3FF));

        let prot = start_state(Mode::Prot32).sregs;
        assert_eq!((prot.cs.selector, prot.cs.type_, prot.cs.db, prot.cs.limit), (0x08, 0xB, 1, 0xFFFF_FFFF));
        assert_eq!((prot.ss.selector, prot.ss.type_, prot.gdt.base, prot.gdt.limit), (0x10, 0x3, 0x1000, 31));
        assert_eq!((prot.cr0, prot.efer, prot.idt.limit), (0x11, 0, 0));

        let long = start_state(Mode::Long64).sregs;
        assert_eq!((long.cs.selector, long.cs.l, long.cs.db), (0x18, 1, 0));
        assert_eq!((long.cr0, long.cr3, long.cr4, long.efer), (0x8000_0011, 0x2000, 0x20, 0x500));
        assert_eq!((long.tr.type_, long.tr.s, long.ldt.type_), (0xB, 0, 0x2));
    }

    #[test]
    fn the_seed_goes_into_the_named_register() {
        for register in crate::header::SEED_REGISTERS {
            let mut regs = start_state(Mode::Prot32).regs;
            put_seed(&mut regs, register, 0xFFFF_FFFF);
            let set = [regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.rbp];
            assert_eq!(set.iter().filter(|&&r| r == 0xFFFF_FFFF).count(), 1, "{register}");
            assert_eq!((regs.rsp, regs.rip), (STACK_TOP, LOAD_ADDR));
        }
    }

    #[test]
    fn apply_keeps_what_the_start_state_does_not_set() {
        let start = start_state(Mode::Prot32).sregs;
        let mut current = KvmSregs { apic_base: 0xFEE0_0900, cr2: 7, ..KvmSregs::default() };
        apply_sregs(&start, &mut current);
        assert_eq!((current.apic_base, current.cr2), (0xFEE0_0900, 7));
        assert_eq!((current.cs, current.tr, current.gdt, current.cr0), (start.cs, start.tr, start.gdt, 0x11));
    }
}
