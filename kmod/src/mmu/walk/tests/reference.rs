//@ stage 8
//! The reference: the walk written again, plainly, once per format,
//! straight from the SDM's tables (Vol. 3A, Tables 4-4 to 4-20, and 4.6 to
//! 4.8). It shares nothing with the walker but its types, so that the two
//! agreeing on random tables means something.
//!
//! With `check` false the permission check is skipped, as if every access
//! were allowed: the tests outside `e8_1` compare the walker's other steps.

use super::super::{
    Access, EntrySize, GuestEntry, GuestTables, PagingMode, PagingState, PdpteError, Translation, WalkError,
};

/// The walk of `la` in the format `s.mode` names.
pub fn reference(
    s: &PagingState,
    la: u64,
    acc: Access,
    mem: &mut dyn GuestTables,
    update: bool,
    check: bool,
) -> Result<Translation, WalkError> {
    let how = How { acc, update, check };
    match s.mode {
        PagingMode::Bits32 => bits32(s, la, how, mem),
        PagingMode::Pae => pae(s, la, how, mem),
        PagingMode::Long => long(s, la, how, mem),
    }
}

#[derive(Clone, Copy)]
struct How {
    acc: Access,
    update: bool,
    check: bool,
}

/// Error-code bits 1, 2 and 4 for the access.
fn access_bits(s: &PagingState, acc: Access) -> u32 {
    let w = if acc.write { 2 } else { 0 };
    let u = if acc.user { 4 } else { 0 };
    let nx_paging = s.nxe && (s.mode == PagingMode::Pae || s.mode == PagingMode::Long);
    let id = if acc.fetch && nx_paging { 16 } else { 0 };
    w | u | id
}

fn not_present(s: &PagingState, how: How) -> Result<Translation, WalkError> {
    Err(WalkError::Fault { error_code: access_bits(s, how.acc) })
}

fn reserved(s: &PagingState, how: How) -> Result<Translation, WalkError> {
    Err(WalkError::Fault { error_code: 1 | 8 | access_bits(s, how.acc) })
}

fn read(mem: &dyn GuestTables, gpa: u64, size: EntrySize) -> Result<u64, WalkError> {
    mem.read(gpa, size).ok_or(WalkError::Unbacked { gpa })
}

fn bits32(s: &PagingState, la: u64, how: How, mem: &mut dyn GuestTables) -> Result<Translation, WalkError> {
    let la = la & 0xFFFF_FFFF;
    let pde_gpa = (s.cr3 & 0xFFFF_F000) + (la >> 22) * 4;
    let pde = read(mem, pde_gpa, EntrySize::Four)?;
    if pde & 1 == 0 {
        return not_present(s, how);
    }
    if s.pse && pde & 0x80 != 0 {
        // PDE bits 20:13 are physical-address bits 39:32, up to MAXPHYADDR.
        let m = u64::from(s.maxphyaddr).min(40);
        let high = (pde >> 13) & 0xFF;
        if pde & 1 << 21 != 0 || high >> (m - 32) != 0 {
            return reserved(s, how);
        }
        let page = (pde & 0xFFC0_0000) + (high << 32);
        return finish(s, la, how, mem, &[(2, pde_gpa, pde)], page, 4 << 20);
    }
    let pte_gpa = (pde & 0xFFFF_F000) + ((la >> 12) & 0x3FF) * 4;
    let pte = read(mem, pte_gpa, EntrySize::Four)?;
    if pte & 1 == 0 {
        return not_present(s, how);
    }
    finish(s, la, how, mem, &[(2, pde_gpa, pde), (1, pte_gpa, pte)], pte & 0xFFFF_F000, 4096)
}

fn pae(s: &PagingState, la: u64, how: How, mem: &mut dyn GuestTables) -> Result<Translation, WalkError> {
    let la = la & 0xFFFF_FFFF;
    let phys = (1u64 << s.maxphyaddr) - 1;
    let high = 0x7FFF_FFFF_FFFF_FFFF & !phys; // bits 62:MAXPHYADDR
    let xd = if s.nxe { 0 } else { 1 << 63 };
    let pdpte = s.pdptes[(la >> 30) as usize];
    if pdpte & 1 == 0 {
        return not_present(s, how);
    }
    let pde_gpa = (pdpte & phys & !0xFFF) + ((la >> 21) & 0x1FF) * 8;
    let pde = read(mem, pde_gpa, EntrySize::Eight)?;
    if pde & 1 == 0 {
        return not_present(s, how);
    }
    if pde & (high | xd) != 0 {
        return reserved(s, how);
    }
    if pde & 0x80 != 0 {
        if pde & 0x001F_E000 != 0 {
            return reserved(s, how);
        }
        return finish(s, la, how, mem, &[(2, pde_gpa, pde)], pde & phys & !0x1F_FFFF, 2 << 20);
    }
    let pte_gpa = (pde & phys & !0xFFF) + ((la >> 12) & 0x1FF) * 8;
    let pte = read(mem, pte_gpa, EntrySize::Eight)?;
    if pte & 1 == 0 {
        return not_present(s, how);
    }
    if pte & (high | xd) != 0 {
        return reserved(s, how);
    }
    finish(s, la, how, mem, &[(2, pde_gpa, pde), (1, pte_gpa, pte)], pte & phys & !0xFFF, 4096)
}

fn long(s: &PagingState, la: u64, how: How, mem: &mut dyn GuestTables) -> Result<Translation, WalkError> {
    let phys = (1u64 << s.maxphyaddr) - 1;
    let high = 0x000F_FFFF_FFFF_FFFF & !phys; // bits 51:MAXPHYADDR
    let rsvd = high | if s.nxe { 0 } else { 1 << 63 };
    let table = |entry: u64| entry & phys & !0xFFF;

    let pml4e_gpa = table(s.cr3) + ((la >> 39) & 0x1FF) * 8;
    let pml4e = read(mem, pml4e_gpa, EntrySize::Eight)?;
    if pml4e & 1 == 0 {
        return not_present(s, how);
    }
    if pml4e & (rsvd | 0x80) != 0 {
        return reserved(s, how);
    }
    let pdpte_gpa = table(pml4e) + ((la >> 30) & 0x1FF) * 8;
    let pdpte = read(mem, pdpte_gpa, EntrySize::Eight)?;
    if pdpte & 1 == 0 {
        return not_present(s, how);
    }
    if pdpte & rsvd != 0 || (pdpte & 0x80 != 0 && (!s.gbpages || pdpte & 0x3FFF_E000 != 0)) {
        return reserved(s, how);
    }
    let mut used = vec![(4, pml4e_gpa, pml4e), (3, pdpte_gpa, pdpte)];
    if pdpte & 0x80 != 0 {
        return finish(s, la, how, mem, &used, pdpte & phys & !0x3FFF_FFFF, 1 << 30);
    }
    let pde_gpa = table(pdpte) + ((la >> 21) & 0x1FF) * 8;
    let pde = read(mem, pde_gpa, EntrySize::Eight)?;
    if pde & 1 == 0 {
        return not_present(s, how);
    }
    if pde & rsvd != 0 || (pde & 0x80 != 0 && pde & 0x001F_E000 != 0) {
        return reserved(s, how);
    }
    used.push((2, pde_gpa, pde));
    if pde & 0x80 != 0 {
        return finish(s, la, how, mem, &used, pde & phys & !0x1F_FFFF, 2 << 20);
    }
    let pte_gpa = table(pde) + ((la >> 12) & 0x1FF) * 8;
    let pte = read(mem, pte_gpa, EntrySize::Eight)?;
    if pte & 1 == 0 {
        return not_present(s, how);
    }
    if pte & rsvd != 0 {
        return reserved(s, how);
    }
    used.push((1, pte_gpa, pte));
    finish(s, la, how, mem, &used, pte & phys & !0xFFF, 4096)
}

/// The end of every walk that reached a leaf: rights, the permission check,
/// accessed and dirty bits, the translation. `used` lists the entries read
/// as (level, gpa, value), top down; the last one is the leaf.
fn finish(
    s: &PagingState,
    la: u64,
    how: How,
    mem: &mut dyn GuestTables,
    used: &[(u32, u64, u64)],
    page: u64,
    page_size: u64,
) -> Result<Translation, WalkError> {
    let writable = used.iter().all(|&(_, _, e)| e & 2 != 0);
    let user = used.iter().all(|&(_, _, e)| e & 4 != 0);
    let executable = !(s.nxe && used.iter().any(|&(_, _, e)| e >> 63 == 1));
    if how.check {
        let mut denied = false;
        if how.acc.user && !user {
            denied = true;
        }
        if how.acc.write && !writable && (how.acc.user || s.wp) {
            denied = true;
        }
        if how.acc.fetch && !executable {
            denied = true;
        }
        if denied {
            return Err(WalkError::Fault { error_code: 1 | access_bits(s, how.acc) });
        }
    }
    let size = if s.mode == PagingMode::Bits32 { EntrySize::Four } else { EntrySize::Eight };
    let leaf_level = used.last().map_or(0, |e| e.0);
    let mut entries = [None; 4];
    //@ begin 13
    let mut dirtied = false;
    //@ end
    for &(level, gpa, old) in used {
        let mut new = old;
        if how.update {
            new |= 0x20;
            if level == leaf_level && how.acc.write {
                new |= 0x40;
                //@ begin 13
                dirtied = old & 0x40 == 0;
                //@ end
            }
        }
        if new != old && !mem.write(gpa, size, new) {
            return Err(WalkError::Unbacked { gpa });
        }
        entries[level as usize - 1] = Some(GuestEntry { gpa, value: new });
    }
    let leaf = entries[leaf_level as usize - 1].expect("the leaf is used");
    Ok(Translation {
        gpa: page + (la % page_size),
        writable,
        user,
        executable,
        dirty: leaf.value & 0x40 != 0,
        //@ begin 13
        dirtied,
        //@ end
        page_size,
        leaf_gpa: leaf.gpa,
        entries,
    })
}

/// The PDPTEs of PAE paging, as the processor loads them (SDM 4.4.1 and
/// Table 4-8): bits 2:1, 8:5 and 63:MAXPHYADDR of a present one are 0.
pub fn pdptes(cr3: u64, maxphyaddr: u8, mem: &dyn GuestTables) -> Result<[u64; 4], PdpteError> {
    let pdpt = cr3 & 0xFFFF_FFE0;
    let must_be_zero = 0x1E6 | u64::MAX << maxphyaddr;
    let mut loaded = [0; 4];
    for (index, pdpte) in loaded.iter_mut().enumerate() {
        let gpa = pdpt + 8 * index as u64;
        let value = mem.read(gpa, EntrySize::Eight).ok_or(PdpteError::Unbacked { gpa })?;
        if value & 1 == 1 && value & must_be_zero != 0 {
            return Err(PdpteError::Reserved { index, value });
        }
        *pdpte = value;
    }
    Ok(loaded)
}
