use super::*;
use crate::header::parse_number;

/// `NAME equ VALUE` lines of `chaos-mmio.inc`.
fn include_constants() -> Vec<(String, u64)> {
    include_str!("../../../guests/chaos-mmio.inc")
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, equ, value) = (words.next()?, words.next()?, words.next()?);
            (equ == "equ").then(|| (name.to_string(), parse_number(value).unwrap()))
        })
        .collect()
}

#[test]
fn chaos_mmio_inc_and_the_runner_agree() {
    let mut ours: Vec<(&str, u64)> = vec![
        ("PROGRAM_ADDR", PROGRAM_ADDR),
        ("P_STEPS", P_STEPS),
        ("P_FLAGS", P_FLAGS),
        ("P_AFTER", P_AFTER),
        ("P_DONE", P_DONE),
        ("P_FIRST", P_FIRST),
        ("PAGING_FLAG", PAGING_FLAG.into()),
        ("RECORD_SIZE", RECORD_SIZE),
        ("R_CODE", R_CODE),
        ("R_STATE", R_STATE),
        ("S_REGS", S_REGS),
        ("S_FLAGS", S_FLAGS),
        ("S_CODE", S_CODE),
        ("S_SEGS", S_SEGS),
        ("S_SIZE", S_SIZE),
        ("RESULTS_ADDR", RESULTS_ADDR),
        ("RESULT_SIZE", RESULT_SIZE),
        ("X_VECTOR", X_VECTOR),
        ("X_ERROR", X_ERROR),
        ("X_RIP", X_RIP),
        ("X_CR2", X_CR2),
        ("X_FLAGS", X_FLAGS),
        ("X_REGS", X_REGS),
        ("NO_VECTOR", NO_VECTOR),
        ("STEP_MARK", STEP_MARK.into()),
        ("DATA_PAGE", space::DATA),
        ("FLANK_BELOW", space::FLANK_BELOW),
        ("FLANK_ABOVE", space::FLANK_ABOVE),
        // The guests' own memory, inside what the runner calls guarded.
        ("CUR", 0x5800),
        ("SAVE", 0x5900),
        ("GUEST_STACK", 0x5800),
        ("TABLES", 0x1_0000),
    ];
    for (name, seg, bits) in space::DESCRIPTORS {
        ours.push((Box::leak(format!("SEL_{name}").into_boxed_str()), seg.selector.into()));
        ours.push((Box::leak(format!("GDT_{name}").into_boxed_str()), bits));
    }
    let theirs = include_constants();
    for (name, value) in &theirs {
        let found = ours.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(found, Some(*value), "chaos-mmio.inc's {name} differs from the runner's, or the runner lacks it");
    }
    assert_eq!(theirs.len(), ours.len(), "the runner has a constant chaos-mmio.inc lacks");
    // The guests' own memory is guarded: no known step writes it.
    let config = Config { mode: Mode::Prot32, paging: true };
    for addr in [0x5800, 0x5900 + 0x87, PROGRAM_ADDR, RESULTS_ADDR + 0x17FF, 0x1_0000] {
        assert!(!config.may_write(addr), "{addr:#x}");
    }
    assert!(space::STACK_LOW >= 0x5900 + 0x88 && RESULTS_ADDR + STEPS as u64 * RESULT_SIZE <= space::DATA);
}

#[test]
fn the_chaos_guests_say_where_their_program_goes() {
    for name in ["chaos-mmio", "chaos-mmio-long", "chaos-mmio-real"] {
        let guest = crate::guests::find(name).unwrap();
        assert_eq!((guest.header.program, guest.header.seed), (Some(PROGRAM_ADDR), Some("ebx")), "{name}");
        assert!(LOAD_END_LIMIT >= crate::layout::LOAD_ADDR + guest.image.len() as u64, "{name}: its image reaches the program");
    }
}

/// The images must end below the program.
const LOAD_END_LIMIT: u64 = PROGRAM_ADDR;

#[test]
fn a_program_is_written_where_the_guest_reads_it() {
    let program = generate(Mode::Long64, 3);
    let mut memory = vec![0u8; 0x10_0000];
    write(&mut memory, &program);
    let dword = |a: u64| u32::from_le_bytes(memory[a as usize..a as usize + 4].try_into().unwrap());
    assert_eq!(dword(PROGRAM_ADDR + P_STEPS), STEPS as u32);
    let record = PROGRAM_ADDR + P_FIRST + 5 * RECORD_SIZE;
    let step = &program.steps[5];
    let code = &memory[record as usize..(record + R_STATE) as usize];
    assert_eq!(&code[..step.bytes.len()], step.bytes.as_slice());
    assert_eq!(dword(record + R_STATE + S_CODE), code_address(5) as u32);
    assert_eq!(dword(record + R_STATE + S_REGS + 8 * 4), step.frame.regs[4] as u32);
    assert_eq!(memory[(record + R_STATE - 1) as usize], 0xCC);
}

#[test]
fn outcomes_are_read_back_and_rendered() {
    let program = generate(Mode::Prot32, 9);
    let mut memory = vec![0u8; 0x10_0000];
    memory[(PROGRAM_ADDR + P_DONE) as usize] = 2;
    let step = &program.steps[1];
    let r = (RESULTS_ADDR + RESULT_SIZE) as usize;
    memory[r..r + 8].copy_from_slice(&14u64.to_le_bytes());
    memory[r + 8] = 2;
    memory[r + 0x10..r + 0x18].copy_from_slice(&step.frame.code.to_le_bytes());
    memory[r + 0x18..r + 0x20].copy_from_slice(&0xC000_3004u64.to_le_bytes());
    for (n, value) in step.frame.regs.iter().enumerate() {
        let at = r + X_REGS as usize + 8 * n;
        memory[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    let at = r + X_REGS as usize + 8;
    memory[at..at + 8].copy_from_slice(&0x1234u64.to_le_bytes());
    let outcomes = results(&memory);
    assert_eq!(outcomes.len(), 2);
    assert_eq!((outcomes[1].vector, outcomes[1].error_code, outcomes[1].cr2), (Some(14), 2, 0xC000_3004));
    let text = line(&program, 1, &outcomes[1]);
    assert!(text.starts_with(&format!("step 01 {} {} ", step.what.name(), step.name)), "{text}");
    assert!(text.ends_with(" -> #PF 0x2 at +0x0 cr2=0xc0003004, ecx=0x00001234 flags=0x0000"), "{text}");
}

#[test]
fn terminators_call_through_the_after_step_pointer() {
    assert_eq!(terminator(Mode::Real), [0x2E, 0xFF, 0x16, 0x08, 0xA0]);
    assert_eq!(terminator(Mode::Prot32), [0x2E, 0xFF, 0x15, 0x08, 0xA0, 0, 0]);
    assert_eq!(terminator(Mode::Long64), [0xFF, 0x14, 0x25, 0x08, 0xA0, 0, 0]);
}
