//@ stage 9
//! Host tests of the shadow page cache: guest walks are made by hand, and
//! the shadow is read back as the processor would walk it.

use super::*;
use crate::kernel::fake;
use crate::mmu::walk::GuestEntry;

/// Entry `index` of the table at host "physical" address `phys`.
fn entry(phys: u64, index: u64) -> u64 {
    // SAFETY: in host tests a physical address is the page's address.
    unsafe { ((phys & 0x000F_FFFF_FFFF_F000) as *const u64).add(index as usize).read() }
}

/// The processor's walk of a PAE-shaped shadow: the leaf entry of `linear`.
fn shadow_leaf(root: u64, linear: u64) -> Option<u64> {
    let pdpte = Some(entry(root, (linear >> 30) & 3)).filter(|e| e & P != 0)?;
    let pde = Some(entry(pdpte, (linear >> 21) & 511)).filter(|e| e & P != 0)?;
    Some(entry(pde, (linear >> 12) & 511)).filter(|e| e & P != 0)
}

/// A 32-bit guest's 4 KiB translation of `linear`: page directory at
/// `cr3`, page table at `pt`, page at `frame`, everything writable, user
/// and dirty.
fn walk32(cr3: u64, linear: u64, pt: u64, frame: u64) -> Translation {
    let pde = GuestEntry { gpa: cr3 + ((linear >> 22) & 1023) * 4, value: pt | 0x67 };
    let pte = GuestEntry { gpa: pt + ((linear >> 12) & 1023) * 4, value: frame | 0x67 };
    page_4k(linear, frame, pte, [Some(pde), None, None])
}

/// The translation of `linear` to the 4 KiB page at `frame` through the
/// leaf entry `pte` and the entries `above` it, lowest level first, with
/// every right and the page dirty.
fn page_4k(linear: u64, frame: u64, pte: GuestEntry, above: [Option<GuestEntry>; 3]) -> Translation {
    let [l2, l3, l4] = above;
    Translation {
        gpa: frame | (linear & 0xFFF),
        writable: true,
        user: true,
        executable: true,
        dirty: true,
        //@ begin 13
        dirtied: false,
        //@ end
        page_size: 0x1000,
        leaf_gpa: pte.gpa,
        entries: [Some(pte), l2, l3, l4],
    }
}

fn leaf(page: &Page) -> Leaf {
    Leaf { page: page.get(), writable: true, user: true, no_execute: false }
}

fn mmu_with_root(cr3: u64) -> CachedMmu {
    let mut mmu = CachedMmu::new().expect("a cache");
    mmu.set_root(PagingMode::Bits32, cr3, &[0; 4]).expect("a root");
    mmu
}

/// A 4-level guest's 4 KiB translation of `linear` through the tables at
/// `tables` (PML4, PDPT, directory, page table) to the page at `frame`,
/// every entry writable, user and dirty.
fn walk64(linear: u64, tables: [u64; 4], frame: u64) -> Translation {
    let [pml4, pdpt, pd, pt] = tables;
    let at = |table: u64, shift: u32, next: u64| {
        GuestEntry { gpa: table + ((linear >> shift) & 511) * 8, value: next | 0x67 }
    };
    page_4k(linear, frame, at(pt, 12, frame), [Some(at(pd, 21, pt)), Some(at(pdpt, 30, pd)), Some(at(pml4, 39, pdpt))])
}

mod e9_1 {
    use super::*;

    #[test]
    fn shadow_pages_outlive_a_cr3_switch_and_are_shared() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        mmu.install(0x40_1000, &walk32(0x10000, 0x40_1000, 0x20000, 0x30000), PagingMode::Bits32, leaf(&page))
            .expect("installed");
        let first = mmu.root_phys().expect("a root");
        assert!(shadow_leaf(first, 0x40_1000).is_some());
        // Another address space whose directory uses the same page table.
        mmu.set_root(PagingMode::Bits32, 0x11000, &[0; 4]).expect("a second root");
        let tables = mmu.in_use();
        mmu.install(0x40_2000, &walk32(0x11000, 0x40_2000, 0x20000, 0x31000), PagingMode::Bits32, leaf(&page))
            .expect("installed");
        assert_eq!(mmu.in_use(), tables, "the guest page table's shadow page is shared");
        // Back to the first: its translation is still there, no fault needed.
        mmu.set_root(PagingMode::Bits32, 0x10000, &[0; 4]).expect("the first root again");
        let again = mmu.root_phys().expect("a root");
        assert!(shadow_leaf(again, 0x40_1000).is_some(), "cached across the CR3 loads");
        assert!(shadow_leaf(again, 0x40_2000).is_some(), "and what the other address space added to the shared table");
    }

    #[test]
    fn a_shadowed_guest_table_is_mapped_read_only_wherever_it_is_mapped() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        // The guest maps its own page table 0x20000 at 0x80_0000, before
        // that table is shadowed: writable.
        let alias = walk32(0x10000, 0x80_0000, 0x21000, 0x20000);
        mmu.install(0x80_0000, &alias, PagingMode::Bits32, leaf(&page)).expect("alias");
        let root = mmu.root_phys().expect("a root");
        assert_ne!(shadow_leaf(root, 0x80_0000).expect("mapped") & RW, 0);
        assert!(!mmu.is_protected(0x20));
        // Now a walk goes through table 0x20000: the alias turns read-only.
        // (The next entry takes the flag: `set_root`'s flush is done.)
        mmu.needs_flush = false;
        mmu.install(0x40_1000, &walk32(0x10000, 0x40_1000, 0x20000, 0x30000), PagingMode::Bits32, leaf(&page))
            .expect("installed");
        assert!(mmu.is_protected(0x20));
        assert_eq!(shadow_leaf(root, 0x80_0000).expect("mapped") & RW, 0, "write-protected");
        assert!(mmu.needs_flush, "the TLB may hold the writable translation");
        // A new mapping of the table is read-only from the start.
        let mut ro = leaf(&page);
        ro.writable = true;
        mmu.install(0x80_0000, &alias, PagingMode::Bits32, ro).expect("alias again");
        assert_eq!(shadow_leaf(root, 0x80_0000).expect("mapped") & RW, 0);
    }

    #[test]
    fn a_write_to_a_shadowed_table_throws_its_shadow_away_unless_it_is_on_the_path() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        mmu.install(0x40_1000, &walk32(0x10000, 0x40_1000, 0x20000, 0x30000), PagingMode::Bits32, leaf(&page))
            .expect("installed");
        let root = mmu.root_phys().expect("a root");
        // A write through an alias whose own walk does not use table 0x20000.
        let alias = walk32(0x10000, 0x80_0000, 0x21000, 0x20000);
        mmu.unprotect(0x20, &alias);
        assert!(!mmu.is_protected(0x20));
        assert_eq!(shadow_leaf(root, 0x40_1000), None, "its shadow page is gone");
        // A write to the table that translates the writing access itself.
        mmu.install(0x40_1000, &walk32(0x10000, 0x40_1000, 0x20000, 0x30000), PagingMode::Bits32, leaf(&page))
            .expect("installed again");
        let self_map = walk32(0x10000, 0x40_5000, 0x20000, 0x20000);
        mmu.unprotect(0x20, &self_map);
        assert!(!mmu.is_protected(0x20), "unsync: writable");
        assert!(shadow_leaf(root, 0x40_1000).is_some(), "kept until the guest flushes");
        mmu.sync();
        //@ begin 13
        // From stage 13 a page table stays unsync at the flush, and the
        // next entry resyncs it: here against a guest table now empty.
        mmu.resync(&mut |_, _| Some(0));
        //@ end
        assert_eq!(shadow_leaf(mmu.root_phys().unwrap_or(root), 0x40_1000), None, "gone at the flush");
    }

    #[test]
    fn a_write_to_a_table_of_the_root_makes_it_unsync_not_gone() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        mmu.install(0x40_1000, &walk32(0x10000, 0x40_1000, 0x20000, 0x30000), PagingMode::Bits32, leaf(&page))
            .expect("installed");
        // The page directory, CR3's table, written through a walk that does
        // not use it (an alias whose table the guest reaches otherwise
        // cannot exist in 32-bit paging, so the walk is made up).
        let elsewhere = walk32(0x90000, 0x80_0000, 0x21000, 0x10000);
        mmu.unprotect(0x10, &elsewhere);
        assert!(mmu.root_phys().is_some(), "the root stays until the guest flushes");
        assert!(!mmu.is_protected(0x10));
        mmu.sync();
        assert!(mmu.root_phys().is_none(), "then it goes, and the next entry makes it again");
    }

    #[test]
    fn the_cache_never_passes_its_bound_and_keeps_the_root() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        let last = mmu.capacity() as u64 + 300;
        for i in 0..=last {
            let linear = i << 22;
            let t = walk32(0x10000, linear, 0x100_0000 + (i << 12), 0x30000);
            mmu.install(linear, &t, PagingMode::Bits32, leaf(&page)).expect("installed");
            assert!(mmu.in_use() <= mmu.capacity());
        }
        let root = mmu.root_phys().expect("the root survived");
        assert!(shadow_leaf(root, last << 22).is_some());
        let (made, zapped) = mmu.take_counts();
        assert_eq!(made - zapped, mmu.in_use() as u64);
    }

    #[test]
    fn invlpg_and_zap_all_leave_nothing_behind() {
        let before = fake::live_pages();
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        mmu.install(0x40_1000, &walk32(0x10000, 0x40_1000, 0x20000, 0x30000), PagingMode::Bits32, leaf(&page))
            .expect("installed");
        mmu.invalidate(0x40_1000, PagingMode::Bits32, 1 << 22);
        assert!(mmu.mapped(0x40_1000, PagingMode::Bits32).is_none());
        mmu.install(0x40_1000, &walk32(0x10000, 0x40_1000, 0x20000, 0x30000), PagingMode::Bits32, leaf(&page))
            .expect("installed");
        mmu.zap_all();
        assert_eq!(mmu.in_use(), 0);
        drop((mmu, page));
        assert_eq!(fake::live_pages(), before);
    }

    /// A guest frame other than `gfn` in the same bucket: the shadow
    /// entries that map either are on one reverse-map chain.
    fn same_bucket(gfn: u64) -> u64 {
        (gfn + 1..).find(|&other| bucket(other) == bucket(gfn)).expect("a frame in the same bucket")
    }

    /// Maps guest frame `gfn` at `linear` through page table `pt` of the
    /// directory at 0x10000, writable.
    fn map(mmu: &mut CachedMmu, linear: u64, pt: u64, gfn: u64, page: &Page) {
        let t = walk32(0x10000, linear, pt, gfn << PAGE_SHIFT);
        mmu.install(linear, &t, PagingMode::Bits32, leaf(page)).expect("mapped");
    }

    /// A walk goes through the guest page table in frame `gfn`, which the
    /// cache shadows from now on.
    fn shadow_table(mmu: &mut CachedMmu, gfn: u64, page: &Page) {
        let t = walk32(0x10000, 0x40_1000, gfn << PAGE_SHIFT, 0x30000);
        mmu.install(0x40_1000, &t, PagingMode::Bits32, leaf(page)).expect("installed");
        assert!(mmu.is_protected(gfn));
    }

    #[test]
    fn every_entry_that_maps_a_shadowed_table_turns_read_only() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        // The guest maps its page table 0x20000 three times, in two page
        // tables, and another frame of the same chain between them.
        map(&mut mmu, 0x80_0000, 0x21000, 0x20, &page);
        map(&mut mmu, 0x80_1000, 0x21000, same_bucket(0x20), &page);
        map(&mut mmu, 0x80_2000, 0x21000, 0x20, &page);
        map(&mut mmu, 0xC0_0000, 0x22000, 0x20, &page);
        let root = mmu.root_phys().expect("a root");
        shadow_table(&mut mmu, 0x20, &page);
        for linear in [0x80_0000, 0x80_2000, 0xC0_0000] {
            assert_eq!(shadow_leaf(root, linear).expect("mapped") & RW, 0, "{linear:#x} maps the table: read-only");
        }
    }

    #[test]
    fn an_entry_of_another_frame_on_the_same_chain_keeps_its_write_right() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        let other = same_bucket(0x20);
        map(&mut mmu, 0x80_0000, 0x21000, other, &page);
        map(&mut mmu, 0x80_1000, 0x21000, 0x20, &page);
        let root = mmu.root_phys().expect("a root");
        let before = shadow_leaf(root, 0x80_0000).expect("mapped");
        assert_ne!(before & RW, 0);
        shadow_table(&mut mmu, 0x20, &page);
        assert_eq!(shadow_leaf(root, 0x80_1000).expect("mapped") & RW, 0);
        let kept = shadow_leaf(root, 0x80_0000);
        assert_eq!(kept, Some(before), "frame {other:#x} holds no table: its entry is left as it was");
    }

    #[test]
    fn a_write_protected_entry_is_the_read_only_entry_set_leaf_writes() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        map(&mut mmu, 0x80_0000, 0x21000, 0x20, &page);
        let root = mmu.root_phys().expect("a root");
        assert_eq!(shadow_leaf(root, 0x80_0000).expect("mapped") & (RW | D), RW | D, "writable, and dirty");
        shadow_table(&mut mmu, 0x20, &page);
        // Mapped again now, the table gets `set_leaf`'s read-only entry.
        map(&mut mmu, 0x80_1000, 0x21000, 0x20, &page);
        let fresh = shadow_leaf(root, 0x80_1000).expect("mapped");
        assert_eq!(fresh & (RW | D), 0);
        assert_eq!(shadow_leaf(root, 0x80_0000), Some(fresh), "no RW, and no D either: D goes with RW");
    }

    #[test]
    fn taking_a_write_right_away_asks_for_a_tlb_flush() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        map(&mut mmu, 0x80_0000, 0x21000, 0x20, &page);
        // The next entry takes the flag: `set_root`'s flush is done.
        mmu.needs_flush = false;
        shadow_table(&mut mmu, 0x20, &page);
        assert!(mmu.needs_flush, "the TLB may hold the writable translation of 0x80_0000");
    }

    #[test]
    fn a_table_mapped_nowhere_writable_asks_for_no_flush() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = mmu_with_root(0x10000);
        // The guest maps its page table read-only only.
        let mut read_only = leaf(&page);
        read_only.writable = false;
        let alias = walk32(0x10000, 0x80_0000, 0x21000, 0x20000);
        mmu.install(0x80_0000, &alias, PagingMode::Bits32, read_only).expect("mapped");
        let root = mmu.root_phys().expect("a root");
        let before = shadow_leaf(root, 0x80_0000).expect("mapped");
        mmu.needs_flush = false;
        shadow_table(&mut mmu, 0x20, &page);
        assert_eq!(shadow_leaf(root, 0x80_0000), Some(before));
        assert!(!mmu.needs_flush, "no entry changed: the TLB holds nothing to forget");
    }
}

mod e9_2 {
    use super::*;

    #[test]
    fn a_32_bit_guest_table_is_shadowed_in_halves_and_quarters() {
        let top = Role { level: 2, guest: PagingMode::Bits32, quadrant: 3, direct: false, access: ACCESS_ALL };
        let t = walk32(0x10000, 0xC060_0000, 0x20000, 0x30000);
        let (gfn, role) = child_of(top, 0xC060_0000, 2, &t, PagingMode::Bits32).expect("a child");
        assert_eq!((gfn, role.level, role.quadrant, role.direct), (0x20, 1, 1, false), "bit 21 picks the half");
        let t = walk32(0x10000, 0xC040_0000, 0x20000, 0x30000);
        assert_eq!(child_of(top, 0xC040_0000, 2, &t, PagingMode::Bits32).map(|(_, r)| r.quadrant), Some(0));
    }

    #[test]
    fn rights_above_are_part_of_the_role() {
        let top = Role { level: 2, guest: PagingMode::Bits32, quadrant: 0, direct: false, access: ACCESS_ALL };
        let mut t = walk32(0x10000, 0x40_0000, 0x20000, 0x30000);
        let (_, rw_user) = child_of(top, 0x40_0000, 2, &t, PagingMode::Bits32).expect("a child");
        if let Some(pde) = t.entries[1].as_mut() {
            pde.value &= !(0x2 | 0x4);
        }
        let (_, read_only) = child_of(top, 0x40_0000, 2, &t, PagingMode::Bits32).expect("a child");
        assert_eq!((rw_user.access, read_only.access), (ACCESS_ALL, ACCESS_X));
        assert_ne!(rw_user, read_only, "two shadow pages for one guest table");
    }

    #[test]
    fn a_large_page_has_a_direct_shadow_page_for_each_2_mib() {
        let top = Role { level: 2, guest: PagingMode::Bits32, quadrant: 0, direct: false, access: ACCESS_ALL };
        let pde = GuestEntry { gpa: 0x10000 + 4, value: 0x80_0000 | 0xE7 };
        let t = Translation {
            gpa: 0xA0_1234,
            writable: true,
            user: true,
            executable: true,
            dirty: true,
            //@ begin 13
            dirtied: false,
            //@ end
            page_size: 0x40_0000,
            leaf_gpa: pde.gpa,
            entries: [None, Some(pde), None, None],
        };
        let (gfn, role) = child_of(top, 0x60_1234, 2, &t, PagingMode::Bits32).expect("a child");
        assert_eq!((gfn, role.direct, role.level), (0xA00, true, 1), "the second 2 MiB of the 4 MiB page");
        assert_eq!(role.access, ACCESS_ALL, "dirty: writable");
        // The walk of a page the guest has not written: D clear in its
        // entry, and so in `dirty`.
        let clean_pde = GuestEntry { value: 0x80_0000 | 0xA7, ..pde };
        let clean = Translation { dirty: false, entries: [None, Some(clean_pde), None, None], ..t };
        let (_, read_only) = child_of(top, 0x60_1234, 2, &clean, PagingMode::Bits32).expect("a child");
        assert_eq!(read_only.access, ACCESS_U | ACCESS_X, "not yet dirty: its first write must fault");
    }

    /// The frames and roles of the shadow pages below a 4-level guest's
    /// root along walk `t` of `linear`: its PDPT, directory and page
    /// table.
    fn below_root(linear: u64, t: &Translation) -> [(u64, Role); 3] {
        let mut role = Role { level: 4, guest: PagingMode::Long, quadrant: 0, direct: false, access: ACCESS_ALL };
        [4, 3, 2].map(|level| {
            let (gfn, child) = child_of(role, linear, level, t, PagingMode::Long).expect("a child");
            role = child;
            (gfn, child)
        })
    }

    #[test]
    fn a_right_taken_away_at_any_level_stays_away_below_it() {
        let open = walk64(0x40_1000, [0x10000, 0x11000, 0x12000, 0x13000], 0x30000);
        let access = |t: &Translation| below_root(0x40_1000, t).map(|(_, role)| role.access);
        assert_eq!(access(&open), [ACCESS_ALL; 3]);
        // A read-only PML4E.
        let mut t = open;
        t.writable = false;
        if let Some(pml4e) = t.entries[3].as_mut() {
            pml4e.value &= !RW;
        }
        assert_eq!(access(&t), [ACCESS_U | ACCESS_X; 3], "no write right anywhere below the PML4E");
        // A supervisor-only PDPTE.
        let mut t = open;
        t.user = false;
        if let Some(pdpte) = t.entries[2].as_mut() {
            pdpte.value &= !US;
        }
        assert_eq!(access(&t), [ACCESS_ALL, ACCESS_W | ACCESS_X, ACCESS_W | ACCESS_X], "no user right below the PDPTE");
        // The open walk and this one go through the same guest page table:
        // a shadow page filled for one must not serve the other.
        let tables = [open, t].map(|t| below_root(0x40_1000, &t)[2]);
        assert_eq!(tables[0].0, tables[1].0);
        assert_ne!(tables[0].1, tables[1].1, "two shadow pages for one guest table");
    }

    #[test]
    fn a_pae_or_4_level_page_table_has_no_quadrant() {
        // Bit 21 set: the second half of a 32-bit guest's page table, but
        // a PAE or 4-level page table has 512 entries, as a shadow page.
        let linear = 0x60_1000;
        // A PAE walk has a 4-level walk's directory and page table entries,
        // and no PDPTE among them (PAE's PDPTEs are registers).
        let mut pae = walk64(linear, [0, 0, 0x10000, 0x20000], 0x30000);
        pae.entries[2] = None;
        pae.entries[3] = None;
        let top = Role { level: 2, guest: PagingMode::Pae, quadrant: 0, direct: false, access: ACCESS_ALL };
        let (gfn, role) = child_of(top, linear, 2, &pae, PagingMode::Pae).expect("a child");
        assert_eq!((gfn, role.level, role.quadrant), (0x20, 1, 0), "PAE");
        let long = walk64(linear, [0x10000, 0x11000, 0x12000, 0x13000], 0x30000);
        let (gfn, role) = below_root(linear, &long)[2];
        assert_eq!((gfn, role.level, role.quadrant), (0x13, 1, 0), "4-level");
        // Reached by a directory entry whose addresses have bit 21 clear,
        // the same table is the same shadow page.
        let other = walk64(0x40_1000, [0x10000, 0x11000, 0x12000, 0x13000], 0x30000);
        assert_eq!(below_root(0x40_1000, &other)[2], (gfn, role));
    }

    #[test]
    fn below_a_1_gib_page_every_shadow_page_is_direct() {
        // A 1 GiB page at guest-physical 0x8000_0000, mapped at 0x4000_0000.
        let pml4e = GuestEntry { gpa: 0x10000, value: 0x11000 | 0x67 };
        let pdpte = GuestEntry { gpa: 0x11000 + 8, value: 0x8000_0000 | 0xE7 };
        let dirty = Translation {
            gpa: 0x8060_1234,
            writable: true,
            user: true,
            executable: true,
            dirty: true,
            //@ begin 13
            dirtied: false,
            //@ end
            page_size: 0x4000_0000,
            leaf_gpa: pdpte.gpa,
            entries: [None, None, Some(pdpte), Some(pml4e)],
        };
        let direct = |level, access| Role { level, guest: PagingMode::Long, quadrant: 0, direct: true, access };
        let [_, pd, pt] = below_root(0x4060_1234, &dirty);
        assert_eq!(pd, (0x8_0000, direct(2, ACCESS_ALL)), "the whole 1 GiB");
        assert_eq!(pt, (0x8_0600, direct(1, ACCESS_ALL)), "the 2 MiB of it that 0x4060_1234 is in");
        // Not yet dirty: no write right in either.
        let clean_pdpte = GuestEntry { value: 0x8000_0000 | 0xA7, ..pdpte };
        let clean = Translation { dirty: false, entries: [None, None, Some(clean_pdpte), Some(pml4e)], ..dirty };
        let [_, pd, pt] = below_root(0x4060_1234, &clean);
        assert_eq!((pd.1, pt.1), (direct(2, ACCESS_U | ACCESS_X), direct(1, ACCESS_U | ACCESS_X)));
    }
}
//@ begin 13

/// Writes the emulator makes to shadowed guest tables (stage 13).
mod table_writes {
    use super::*;

    /// A 32-bit guest with page table 0x20000 under directory 0x10000,
    /// mapping `linears` to frames from 0x30000 on.
    pub(super) fn shadowed(linears: &[u64], page: &Page) -> CachedMmu {
        let mut mmu = mmu_with_root(0x10000);
        for (n, &linear) in linears.iter().enumerate() {
            let t = walk32(0x10000, linear, 0x20000, 0x30000 + 0x1000 * n as u64);
            mmu.install(linear, &t, PagingMode::Bits32, leaf(page)).expect("installed");
        }
        mmu
    }

    #[test]
    fn a_written_entry_loses_only_its_own_translation_and_the_table_stays_protected() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = shadowed(&[0x40_1000, 0x40_2000], &page);
        let root = mmu.root_phys().expect("a root");
        let pages = mmu.in_use();
        mmu.needs_flush = false;
        // The guest's entry for 0x40_1000: entry 1, 4 bytes wide.
        mmu.table_written(0x20000 + 4, 4);
        assert_eq!(shadow_leaf(root, 0x40_1000), None, "the written entry's translation is gone");
        assert!(shadow_leaf(root, 0x40_2000).is_some(), "its neighbour's is not");
        assert!(mmu.is_protected(0x20), "the table is still shadowed and protected");
        assert_eq!(mmu.in_use(), pages, "no shadow page was thrown away");
        assert!(mmu.needs_flush, "the TLB may hold the old translation");
    }

    #[test]
    fn a_32_bit_guest_entry_is_found_in_the_quadrant_that_shadows_it() {
        let page = Page::alloc_zeroed().expect("a page");
        // Entries 1 and 513 of the guest table: the same index, 1, in the
        // two shadow pages of its halves.
        let mut mmu = shadowed(&[0x40_1000, 0x60_1000], &page);
        let root = mmu.root_phys().expect("a root");
        mmu.table_written(0x20000 + 513 * 4, 4);
        assert_eq!(shadow_leaf(root, 0x60_1000), None);
        assert!(shadow_leaf(root, 0x40_1000).is_some(), "the other quadrant's entry 1 is another guest entry");
    }

    #[test]
    fn a_written_directory_entry_unlinks_both_of_its_2_mib_halves_and_keeps_the_tables() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = shadowed(&[0x40_1000, 0x60_1000], &page);
        let root = mmu.root_phys().expect("a root");
        let pages = mmu.in_use();
        // Directory entry 1 covers 0x40_0000 to 0x7F_FFFF.
        mmu.table_written(0x10000 + 4, 4);
        assert_eq!((shadow_leaf(root, 0x40_1000), shadow_leaf(root, 0x60_1000)), (None, None));
        assert_eq!(mmu.in_use(), pages, "the page tables' shadow pages stay cached");
        assert!(mmu.is_protected(0x10) && mmu.is_protected(0x20));
    }

    #[test]
    fn a_write_across_two_entries_drops_both() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = shadowed(&[0x40_1000, 0x40_2000, 0x40_3000], &page);
        let root = mmu.root_phys().expect("a root");
        mmu.table_written(0x20000 + 4 + 2, 4);
        assert_eq!((shadow_leaf(root, 0x40_1000), shadow_leaf(root, 0x40_2000)), (None, None));
        assert!(shadow_leaf(root, 0x40_3000).is_some());
    }

    #[test]
    fn writes_in_a_row_with_no_fault_between_are_a_flood_that_unshadows_the_table() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = shadowed(&[0x40_1000, 0x40_2000], &page);
        for n in 0..FLOOD - 1 {
            mmu.table_written(0x20000 + 0x100 + 4 * u64::from(n), 4);
        }
        assert!(mmu.is_protected(0x20), "not yet a flood");
        // A fault filled in between: the guest uses the table.
        let t = walk32(0x10000, 0x40_3000, 0x20000, 0x33000);
        mmu.install(0x40_3000, &t, PagingMode::Bits32, leaf(&page)).expect("installed");
        for n in 0..FLOOD - 1 {
            mmu.table_written(0x20000 + 0x200 + 4 * u64::from(n), 4);
        }
        assert!(mmu.is_protected(0x20), "the count started again");
        assert!(!mmu.table_written(0x20000 + 0x300, 4), "a flood is left to the caller");
        assert!(mmu.is_protected(0x20));
        mmu.forget_table(0x20000 + 0x300, 4);
        assert!(!mmu.is_protected(0x20), "flooded: its shadow pages are gone");
        let root = mmu.root_phys().expect("a root");
        assert_eq!(shadow_leaf(root, 0x40_2000), None);
    }

    #[test]
    fn a_write_to_memory_that_is_no_shadowed_table_changes_nothing() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = shadowed(&[0x40_1000], &page);
        mmu.needs_flush = false;
        mmu.table_written(0x30000, 8);
        assert!(!mmu.needs_flush);
        assert!(shadow_leaf(mmu.root_phys().expect("a root"), 0x40_1000).is_some());
    }
}

/// Page tables the guest writes freely until it flushes (stage 13).
mod unsync_leaves {
    use super::table_writes::shadowed;
    use super::*;
    use std::collections::HashMap;

    /// Resyncs `mmu` against guest memory that holds `entries` (address,
    /// value) and, elsewhere in the page table, the entries `shadowed`
    /// wrote. Returns the addresses read.
    fn resync(mmu: &mut CachedMmu, linears: &[u64], entries: &[(u64, u64)]) -> Vec<u64> {
        let mut memory: HashMap<u64, u64> = linears
            .iter()
            .enumerate()
            .map(|(n, &linear)| (0x20000 + ((linear >> 12) & 1023) * 4, (0x30000 + 0x1000 * n as u64) | 0x67))
            .collect();
        memory.extend(entries.iter().copied());
        let mut read = Vec::new();
        mmu.resync(&mut |gpa, width| {
            assert_eq!(width, 4, "a 32-bit guest's entries are 4 bytes");
            read.push(gpa);
            memory.get(&gpa).copied()
        });
        read
    }

    #[test]
    fn a_page_table_goes_unsync_and_a_directory_does_not() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = shadowed(&[0x40_1000], &page);
        assert!(!mmu.unsync_leaves(0x10), "the directory is shadowed at level 2");
        assert!(mmu.is_protected(0x10));
        assert!(mmu.unsync_leaves(0x20));
        assert!(!mmu.is_protected(0x20), "the guest may write its page table");
        assert!(!mmu.unsync_leaves(0x30), "frame 0x30 holds no table");
    }

    #[test]
    fn resync_keeps_what_the_guest_still_allows_narrows_what_it_took_away_and_drops_the_rest() {
        let page = Page::alloc_zeroed().expect("a page");
        let linears = [0x40_1000, 0x40_2000, 0x40_3000, 0x40_4000, 0x40_5000, 0x40_6000];
        let mut mmu = shadowed(&linears, &page);
        let root = mmu.root_phys().expect("a root");
        assert!(mmu.unsync_leaves(0x20));
        mmu.needs_flush = false;
        resync(&mut mmu, &linears, &[
            (0x20008, 0x31065), // read-only now
            (0x2000C, 0x40067), // another frame
            (0x20010, 0x33047), // A cleared
            (0x20014, 0x34027), // D cleared: writable no more until D is set again
            (0x20018, 0x35063), // supervisor only now
        ]);
        let unchanged = shadow_leaf(root, 0x40_1000).expect("an unchanged entry stays");
        assert_ne!(unchanged & RW, 0);
        for linear in [0x40_2000, 0x40_5000] {
            let entry = shadow_leaf(root, linear).expect("the same frame, present and accessed: it stays");
            assert_eq!(entry & (RW | D), 0, "{linear:#x}: read-only, as the guest entry now says");
            assert_ne!(entry & US, 0, "{linear:#x}: still a user page");
        }
        let supervisor = shadow_leaf(root, 0x40_6000).expect("it stays");
        assert_eq!(supervisor & US, 0, "the user right is gone");
        assert_ne!(supervisor & RW, 0, "the write right is still granted");
        for linear in [0x40_3000, 0x40_4000] {
            assert_eq!(shadow_leaf(root, linear), None, "{linear:#x}'s guest entry no longer allows it");
        }
        assert!(mmu.is_protected(0x20), "in sync, and protected again");
        assert!(mmu.needs_flush);
    }

    #[test]
    fn an_entry_never_shadowed_is_not_even_read() {
        let page = Page::alloc_zeroed().expect("a page");
        let linears = [0x40_1000];
        let mut mmu = shadowed(&linears, &page);
        let root = mmu.root_phys().expect("a root");
        let before = shadow_leaf(root, 0x40_1000);
        assert!(mmu.unsync_leaves(0x20));
        // Entry 7 was never shadowed, so it is not even read.
        let read = resync(&mut mmu, &linears, &[(0x2001C, 0x99067)]);
        assert_eq!(read, [0x20004]);
        assert_eq!(shadow_leaf(root, 0x40_1000), before);
    }

    #[test]
    fn a_32_bit_table_is_read_at_the_entries_of_each_quadrant() {
        let page = Page::alloc_zeroed().expect("a page");
        // Guest entries 1 and 513: index 1 of each of the two shadow pages.
        let linears = [0x40_1000, 0x60_1000];
        let mut mmu = shadowed(&linears, &page);
        let root = mmu.root_phys().expect("a root");
        assert!(mmu.unsync_leaves(0x20));
        let mut read = resync(&mut mmu, &linears, &[(0x20000 + 513 * 4, 0)]);
        read.sort_unstable();
        assert_eq!(read, [0x20004, 0x20000 + 513 * 4]);
        assert!(shadow_leaf(root, 0x40_1000).is_some());
        assert_eq!(shadow_leaf(root, 0x60_1000), None, "entry 513 is not present any more");
    }

    #[test]
    fn invlpg_of_a_page_drops_its_entry_only_and_keeps_the_table_unsync() {
        let page = Page::alloc_zeroed().expect("a page");
        let linears = [0x40_1000, 0x40_2000];
        let mut mmu = shadowed(&linears, &page);
        let root = mmu.root_phys().expect("a root");
        assert!(mmu.unsync_leaves(0x20));
        mmu.needs_flush = false;
        assert!(mmu.invalidate_page(0x40_1000, PagingMode::Bits32));
        assert_eq!(shadow_leaf(root, 0x40_1000), None, "its own entry is gone");
        assert!(shadow_leaf(root, 0x40_2000).is_some(), "the rest of its table is still linked");
        assert!(!mmu.is_protected(0x20), "and still unsync");
        assert!(mmu.needs_flush);
        assert!(mmu.invalidate_page(0x80_1000, PagingMode::Bits32), "nothing mapped there: nothing to do");
    }

    #[test]
    fn invlpg_through_an_unsync_directory_or_a_large_page_needs_the_whole_invalidation() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = shadowed(&[0x40_1000], &page);
        // The directory, written on the write's own walk: unsync.
        mmu.unprotect(0x10, &walk32(0x10000, 0x40_1000, 0x20000, 0x10000));
        assert!(!mmu.invalidate_page(0x40_1000, PagingMode::Bits32));
        let mut mmu = mmu_with_root(0x10000);
        let mut t = walk32(0x10000, 0x80_0000, 0, 0x40_0000);
        t.entries = [None, Some(GuestEntry { gpa: 0x10008, value: 0x40_00E7 }), None, None];
        t.page_size = 0x40_0000;
        mmu.install(0x80_0000, &t, PagingMode::Bits32, leaf(&page)).expect("installed");
        assert!(!mmu.invalidate_page(0x80_0000, PagingMode::Bits32), "a guest large page: a direct page");
    }

    #[test]
    fn sync_leaves_a_resynced_table_alone() {
        let page = Page::alloc_zeroed().expect("a page");
        let linears = [0x40_1000];
        let mut mmu = shadowed(&linears, &page);
        let pages = mmu.in_use();
        assert!(mmu.unsync_leaves(0x20));
        resync(&mut mmu, &linears, &[]);
        mmu.sync();
        assert_eq!(mmu.in_use(), pages, "no page was thrown away");
        assert!(shadow_leaf(mmu.root_phys().expect("a root"), 0x40_1000).is_some());
    }

    #[test]
    fn a_table_written_since_the_last_resync_stays_unsync_until_a_quiet_one() {
        let page = Page::alloc_zeroed().expect("a page");
        let linears = [0x40_1000];
        let mut mmu = shadowed(&linears, &page);
        let root = mmu.root_phys().expect("a root");
        // The guest's kernel maps its page table at 0x80_0000 (as Linux's
        // direct map does): the write that made it unsync went through
        // there, so that entry is writable, and dirty.
        assert!(mmu.unsync_leaves(0x20));
        let alias = walk32(0x10000, 0x80_0000, 0x21000, 0x20000);
        mmu.install(0x80_0000, &alias, PagingMode::Bits32, leaf(&page)).expect("installed");
        assert_eq!(shadow_leaf(root, 0x80_0000).expect("mapped") & (RW | D), RW | D);
        assert_eq!(resync(&mut mmu, &linears, &[]), [0x20004], "its entries are checked all the same");
        assert!(!mmu.is_protected(0x20), "written since the last resync: it stays unsync");
        assert_eq!(shadow_leaf(root, 0x80_0000).expect("mapped") & (RW | D), RW, "its D bit cleared, to see the next write");
        // Written again (the processor sets D): still unsync.
        let dirty = shadow_leaf(root, 0x80_0000).expect("mapped") | D;
        write_alias_leaf(root, 0x80_0000, dirty);
        resync(&mut mmu, &linears, &[]);
        assert!(!mmu.is_protected(0x20));
        // Not written since: protected again.
        resync(&mut mmu, &linears, &[]);
        assert!(mmu.is_protected(0x20), "quiet since the last resync: protected again");
        assert_eq!(shadow_leaf(root, 0x80_0000).expect("mapped") & RW, 0);
    }

    /// Writes the leaf entry of `linear` in a PAE-shaped shadow, as the
    /// processor does when it sets a D bit.
    fn write_alias_leaf(root: u64, linear: u64, value: u64) {
        let pdpte = entry(root, (linear >> 30) & 3);
        let pde = entry(pdpte, (linear >> 21) & 511);
        let table = (pde & 0x000F_FFFF_FFFF_F000) as *mut u64;
        // SAFETY: in host tests a physical address is the page's address,
        // and the index is below 512.
        unsafe { table.add(((linear >> 12) & 511) as usize).write(value) };
    }

    #[test]
    fn a_cr3_load_leaves_unsync_tables_for_the_next_entry_to_resync() {
        let page = Page::alloc_zeroed().expect("a page");
        let linears = [0x40_1000];
        let mut mmu = shadowed(&linears, &page);
        assert!(mmu.unsync_leaves(0x20));
        mmu.sync_pending = false;
        mmu.sync();
        assert!(mmu.sync_pending, "the next entry must resync");
        assert!(!mmu.is_protected(0x20), "still unsync, and still writable");
        assert!(shadow_leaf(mmu.root_phys().expect("a root"), 0x40_1000).is_some(), "and not thrown away");
    }

    #[test]
    fn a_table_no_root_reaches_stays_unsync_until_one_does() {
        let page = Page::alloc_zeroed().expect("a page");
        let linears = [0x40_1000];
        let mut mmu = shadowed(&linears, &page);
        assert!(mmu.unsync_leaves(0x20));
        // Another address space: its directory at 0x50000 does not reach
        // table 0x20000, so the table is neither read nor protected.
        mmu.set_root(PagingMode::Bits32, 0x50000, &[0; 4]).expect("a root");
        assert!(resync(&mut mmu, &linears, &[]).is_empty(), "the table was read");
        assert!(!mmu.is_protected(0x20), "another process's table stays writable");
        // Back to the first: the root reaches the table again.
        mmu.set_root(PagingMode::Bits32, 0x10000, &[0; 4]).expect("a root");
        let read = resync(&mut mmu, &linears, &[(0x20004, 0)]);
        assert_eq!(read, [0x20004]);
        assert_eq!(shadow_leaf(mmu.root_phys().expect("a root"), 0x40_1000), None, "its emptied entry is gone");
        assert!(mmu.is_protected(0x20), "in sync, and protected again");
    }

    #[test]
    fn linking_an_unsync_table_into_another_address_space_asks_for_a_resync() {
        let page = Page::alloc_zeroed().expect("a page");
        let mut mmu = shadowed(&[0x40_1000], &page);
        assert!(mmu.unsync_leaves(0x20));
        mmu.set_root(PagingMode::Bits32, 0x50000, &[0; 4]).expect("a root");
        mmu.sync_pending = false;
        // The other directory now points at the same table.
        let t = walk32(0x50000, 0x40_2000, 0x20000, 0x31000);
        mmu.install(0x40_2000, &t, PagingMode::Bits32, leaf(&page)).expect("installed");
        assert!(mmu.sync_pending, "the table may be stale for this address space");
        // A table not cached before needs nothing.
        mmu.sync_pending = false;
        let t = walk32(0x50000, 0x80_1000, 0x22000, 0x32000);
        mmu.install(0x80_1000, &t, PagingMode::Bits32, leaf(&page)).expect("installed");
        assert!(!mmu.sync_pending);
    }
}
//@ end
