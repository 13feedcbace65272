//@ stage 12
//! The segments the hardware gets, checked against a model of VM entry's
//! checks on them (SDM Vol. 3C, 27.3.1.2, outside virtual-8086 mode and
//! without unrestricted guest), for guest states made the ways a guest can
//! make them: protected-mode loads at any privilege level, then real-mode
//! loads of any selector, then CR0.PE set again.

use super::super::fields::Seg;
use super::super::guest::tests::{FIXED, FakeVmcs};
use super::super::guest::{Fields, access_rights, entry_segments, read_sregs, write_sregs};
use super::*;
use crate::abi::KvmSregs;
use crate::real_mode::load_segment;
use crate::test_rng::Rng;

/// What VM entry says of segment registers `segs` (VMCS order), the way
/// 27.3.1.2 lists it for ES, CS, SS, DS, FS and GS: the first check that
/// fails, or none. LDTR and TR are left out.
fn entry_refuses(segs: &[KvmSegment; 8]) -> Option<String> {
    let [es, cs, ss, ds, fs, gs, _, _] = segs;
    // The access-rights field, as the VMCS holds it (Table 25-2).
    let ar = |s: &KvmSegment| access_rights(s);
    let (type_, s, dpl) = (|a: u32| a & 0xF, |a: u32| a >> 4 & 1, |a: u32| a >> 5 & 3);
    let (p, usable) = (|a: u32| a >> 7 & 1, |a: u32| a >> 16 & 1 == 0);
    let rpl = |s: &KvmSegment| u32::from(s.selector & 3);
    let limit_fits_g = |seg: &KvmSegment| {
        let g = ar(seg) >> 15 & 1;
        (seg.limit & 0xFFF == 0xFFF || g == 0) && (seg.limit >> 20 == 0 || g == 1)
    };
    let (a_cs, a_ss) = (ar(cs), ar(ss));
    let fail = |what: &str| Some(format!("{what} (CS {cs:x?}, SS {ss:x?})"));
    if rpl(ss) != rpl(cs) {
        return fail("SS.RPL != CS.RPL");
    }
    if ![9, 11, 13, 15].contains(&type_(a_cs)) || s(a_cs) != 1 || p(a_cs) != 1 || !limit_fits_g(cs) {
        return fail("CS type, S, P or G");
    }
    if type_(a_cs) <= 11 && dpl(a_cs) != dpl(a_ss) || type_(a_cs) >= 13 && dpl(a_cs) > dpl(a_ss) {
        return fail("CS.DPL against SS.DPL");
    }
    if dpl(a_ss) != rpl(ss) {
        return fail("SS.DPL != SS.RPL");
    }
    if usable(a_ss) && (![3, 7].contains(&type_(a_ss)) || s(a_ss) != 1 || p(a_ss) != 1 || !limit_fits_g(ss)) {
        return fail("SS type, S, P or G");
    }
    for (name, seg) in [("ES", es), ("DS", ds), ("FS", fs), ("GS", gs)] {
        let a = ar(seg);
        if !usable(a) {
            continue;
        }
        if type_(a) & 1 == 0 || type_(a) & 8 != 0 && type_(a) & 2 == 0 || s(a) != 1 || p(a) != 1 || !limit_fits_g(seg) {
            return Some(format!("{name} type, S, P or G: {seg:x?}"));
        }
        if type_(a) <= 11 && dpl(a) < rpl(seg) {
            return Some(format!("{name}.DPL < {name}.RPL: {seg:x?}"));
        }
    }
    None
}

/// A base, and a limit that G can express, drawn at random.
fn base_and_limit(rng: &mut Rng) -> (u64, u32, u8) {
    let base = rng.next() & 0xFFFF_FFFF;
    if rng.one_in(2) { (base, rng.next() as u32 & 0xF_FFFF, 0) } else { (base, (rng.next() as u32) | 0xFFF, 1) }
}

/// A segment register after a protected-mode load at privilege level
/// `cpl`: what the processor's checks let through, with the accessed bit
/// it sets (SDM Vol. 3A, 5.5 to 5.7, and `mov`, `pop`, `lss` in Vol. 2).
fn loaded(rng: &mut Rng, seg: Seg, cpl: u8) -> KvmSegment {
    let (base, limit, g) = base_and_limit(rng);
    let (db, avl) = (rng.below(2) as u8, rng.below(2) as u8);
    let any = KvmSegment { base, limit, g, s: 1, present: 1, db, avl, ..KvmSegment::default() };
    let selector = |rng: &mut Rng, rpl: u8| (rng.next() as u16 & !3 | u16::from(rpl)).max(8 | u16::from(rpl));
    match seg {
        Seg::Cs => {
            let type_ = [9, 11, 13, 15][rng.below(4) as usize];
            let dpl = if type_ >= 13 { rng.below(u64::from(cpl) + 1) as u8 } else { cpl };
            KvmSegment { selector: selector(rng, cpl), type_, dpl, ..any }
        }
        Seg::Ss => KvmSegment { selector: selector(rng, cpl), type_: [3, 7][rng.below(2) as usize], dpl: cpl, ..any },
        _ if rng.one_in(8) => {
            // A null selector: an unusable register, the rest undefined.
            KvmSegment { selector: rng.below(4) as u16, unusable: 1, ..KvmSegment::default() }
        }
        _ => {
            let type_ = [1, 3, 5, 7, 11, 15][rng.below(6) as usize];
            let rpl = rng.below(4) as u8;
            // Data and non-conforming code: max(CPL, RPL) <= DPL.
            let lowest = if type_ == 15 { 0 } else { cpl.max(rpl) };
            let dpl = lowest + rng.below(u64::from(4 - lowest)) as u8;
            KvmSegment { selector: selector(rng, rpl), type_, dpl, ..any }
        }
    }
}

/// A guest state as a guest can make it: loads in protected mode at some
/// CPL; then, in half of them, a stay in real mode (entered at CPL 0)
/// with real-mode loads of any selector into some registers; then
/// CR0.PE set. Returns the state and whether real mode loaded anything.
fn made_by_a_guest(rng: &mut Rng) -> (KvmSregs, bool) {
    let via_real = rng.one_in(2);
    let cpl = if via_real { 0 } else { rng.below(4) as u8 };
    let mut sregs = KvmSregs { cr0: 0x11, ..KvmSregs::default() };
    let regs = [(&mut sregs.es, Seg::Es), (&mut sregs.cs, Seg::Cs), (&mut sregs.ss, Seg::Ss)];
    for (reg, seg) in regs {
        *reg = loaded(rng, seg, cpl);
    }
    for reg in [&mut sregs.ds, &mut sregs.fs, &mut sregs.gs] {
        *reg = loaded(rng, Seg::Ds, cpl);
    }
    let mut reloaded = false;
    if via_real {
        for reg in [&mut sregs.es, &mut sregs.cs, &mut sregs.ss, &mut sregs.ds, &mut sregs.fs, &mut sregs.gs] {
            if rng.one_in(2) {
                *reg = load_segment(reg, rng.next() as u16);
                reloaded = true;
            }
        }
    }
    (sregs, reloaded)
}

/// The six segment registers VM entry checks here, in VMCS order.
fn six(s: &KvmSregs) -> [KvmSegment; 6] {
    [s.es, s.cs, s.ss, s.ds, s.fs, s.gs]
}

/// Real mode's segments at reset (CS with a code type), and CR0.PE set.
fn just_protected() -> KvmSregs {
    let data = KvmSegment::real_mode(0);
    let cs = KvmSegment { type_: 0xB, ..data };
    KvmSregs { cr0: 0x11, cs, ss: data, ds: data, es: data, fs: data, gs: data, ..KvmSregs::default() }
}

#[test]
fn every_state_a_guest_makes_enters_in_protected_and_in_real_mode() {
    let mut rng = Rng::new(0x3121);
    let mut refused_as_it_was = 0;
    for _ in 0..20_000 {
        let (sregs, _) = made_by_a_guest(&mut rng);
        let raw: [KvmSegment; 8] = [sregs.es, sregs.cs, sregs.ss, sregs.ds, sregs.fs, sregs.gs, sregs.ldt, sregs.tr];
        refused_as_it_was += usize::from(entry_refuses(&raw).is_some());
        assert_eq!(entry_refuses(&entry_segments(&sregs)), None, "protected mode: {sregs:x?}");
        // The same segments with CR0.PE clear: 16-bit protected mode.
        let real = KvmSregs { cr0: 0x10, ..sregs };
        assert_eq!(entry_refuses(&entry_segments(&real)), None, "real mode: {sregs:x?}");
    }
    assert!(refused_as_it_was > 5_000, "the guest's own segments fail often: {refused_as_it_was}");
}

#[test]
fn what_the_processor_loaded_enters_unchanged() {
    let mut rng = Rng::new(0x3122);
    for _ in 0..20_000 {
        let (sregs, reloaded) = made_by_a_guest(&mut rng);
        if !reloaded {
            let raw = [sregs.es, sregs.cs, sregs.ss, sregs.ds, sregs.fs, sregs.gs, sregs.ldt, sregs.tr];
            assert_eq!(entry_segments(&sregs), raw, "{sregs:x?}");
        }
    }
}

#[test]
fn only_rpls_and_dpls_change_and_a_dpl_only_up_to_the_rpl() {
    let mut rng = Rng::new(0x3123);
    for _ in 0..20_000 {
        let (sregs, _) = made_by_a_guest(&mut rng);
        let raw = [sregs.es, sregs.cs, sregs.ss, sregs.ds, sregs.fs, sregs.gs, sregs.ldt, sregs.tr];
        let hw = entry_segments(&sregs);
        let cpl = sregs.ss.dpl;
        for (i, (was, now)) in raw.iter().zip(&hw).enumerate() {
            let same_but = KvmSegment { selector: was.selector & !3 | now.selector & 3, dpl: now.dpl, ..*was };
            assert_eq!(*now, same_but, "only the RPL and the DPL: {i} {sregs:x?}");
            match Seg::ALL[i] {
                Seg::Cs | Seg::Ss => assert_eq!(now.selector & 3, u16::from(cpl), "RPL = CPL"),
                Seg::Es | Seg::Ds | Seg::Fs | Seg::Gs => {
                    assert_eq!(now.selector, was.selector, "a data segment keeps its selector");
                    assert!(now.dpl == was.dpl || now.dpl == (was.selector & 3) as u8 && now.dpl > was.dpl, "{sregs:x?}");
                }
                Seg::Ldtr | Seg::Tr => assert_eq!(now, was),
            }
        }
    }
}

#[test]
fn the_guest_reads_back_its_own_segments_after_an_exit() {
    let mut rng = Rng::new(0x3124);
    for _ in 0..5_000 {
        let (sregs, _) = made_by_a_guest(&mut rng);
        for cr0 in [0x11, 0x10] {
            let sregs = KvmSregs { cr0, ..sregs };
            let mut vmcs = FakeVmcs::default();
            write_sregs(&mut vmcs, &sregs, &FIXED);
            let mut back = sregs;
            read_sregs(&vmcs, &mut back);
            assert_eq!(six(&back), six(&sregs), "{sregs:x?}");
        }
    }
}

/// `chaos-mmio-real` seed 91 on bochs-vmx, with the segments its kernel
/// log showed: random bytes in real mode ran `sub sp, sp` and `pop ds`,
/// which loaded DS with the word at 0 (the offset of the guest's vector 0
/// handler, 0x81A7: RPL 3) and kept the DPL 0 of the descriptor DS last
/// had; then the guest set CR0.PE to load its own segments, and VM entry
/// refused DS.
#[test]
fn a_real_mode_pop_ds_then_cr0_pe_enters_with_dpl_3_and_reads_back_dpl_0() {
    let data = KvmSegment { s: 1, present: 1, ..KvmSegment::default() };
    let below = KvmSegment { base: 0xBFFF_8000, limit: 0xFFFF_FFFF, g: 1, db: 1, selector: 0x28, type_: 3, ..data };
    let down16 = KvmSegment { base: 0xBFFF_1000, limit: 0xEFFF, selector: 0x48, type_: 7, ..data };
    let real0 = KvmSegment { selector: 0x50, ..KvmSegment::real_mode(0) };
    let code = KvmSegment { type_: 0xB, ..KvmSegment::real_mode(0) };
    let ds = load_segment(&below, 0x81A7);
    let sregs = KvmSregs { cr0: 0x11, cs: code, ss: real0, ds, es: down16, fs: below, gs: down16, ..KvmSregs::default() };
    let raw = [sregs.es, sregs.cs, sregs.ss, sregs.ds, sregs.fs, sregs.gs, sregs.ldt, sregs.tr];
    assert!(entry_refuses(&raw).is_some_and(|why| why.starts_with("DS.DPL < DS.RPL")), "what Bochs refused");
    let mut vmcs = FakeVmcs::default();
    write_sregs(&mut vmcs, &sregs, &FIXED);
    assert_eq!(vmcs.read(Seg::Ds.selector()), 0x81A7, "the selector as the guest has it");
    assert_eq!(vmcs.read(Seg::Ds.base()), 0x81A70, "its real-mode base");
    assert_eq!(vmcs.read(Seg::Ds.access_rights()), 0xC0F3, "DPL 3; type, G and the rest kept");
    let mut back = sregs;
    read_sregs(&vmcs, &mut back);
    assert_eq!(back.ds, sregs.ds, "DPL 0 again");
    // The guest's next instruction loads DS in protected mode: the
    // hardware's, as it says.
    let loaded = KvmSegment { selector: 0x50, base: 0, limit: 0xFFFF, g: 0, db: 0, ..sregs.ds };
    vmcs.write(Seg::Ds.selector(), 0x50);
    vmcs.write(Seg::Ds.base(), 0);
    vmcs.write(Seg::Ds.limit(), 0xFFFF);
    vmcs.write(Seg::Ds.access_rights(), u64::from(access_rights(&loaded)));
    read_sregs(&vmcs, &mut back);
    assert_eq!(back.ds, loaded);
}

#[test]
fn cs_and_ss_run_at_the_cpl_after_real_mode_far_jumps_and_stack_loads() {
    // jmp 0x07C3:..., mov ss, 0x1403 in real mode, then CR0.PE.
    let code = load_segment(&KvmSegment { type_: 0xB, ..KvmSegment::real_mode(0) }, 0x07C3);
    let stack = load_segment(&KvmSegment::real_mode(0), 0x1403);
    let sregs = KvmSregs { cs: code, ss: stack, ..just_protected() };
    let hw = entry_segments(&sregs);
    assert_eq!((hw[1].selector, hw[1].base, hw[2].selector, hw[2].base), (0x07C0, 0x7C30, 0x1400, 0x14030));
    assert_eq!(entry_refuses(&hw), None);
    // A conforming CS above the CPL comes down to it; one below stays.
    let conforming = KvmSegment { type_: 0xF, dpl: 2, selector: 0x8, ..code };
    let ring1 = KvmSegment { dpl: 1, selector: 0x11, ..stack };
    let hw = entry_segments(&KvmSregs { cs: conforming, ss: ring1, ..sregs });
    assert_eq!((hw[1].dpl, hw[1].selector), (1, 0x9));
    let hw = entry_segments(&KvmSregs { cs: KvmSegment { dpl: 0, ..conforming }, ss: ring1, ..sregs });
    assert_eq!(hw[1].dpl, 0);
}

#[test]
fn unusable_and_conforming_data_registers_are_not_checked_and_not_changed() {
    let null = KvmSegment { selector: 3, unusable: 1, ..KvmSegment::default() };
    let conforming = KvmSegment { type_: 0xF, dpl: 0, selector: 0x1B, ..KvmSegment::real_mode(0) };
    let sregs = KvmSregs { ds: null, es: conforming, ..just_protected() };
    let hw = entry_segments(&sregs);
    assert_eq!((hw[3], hw[0]), (null, conforming));
    assert_eq!(entry_refuses(&hw), None);
}
