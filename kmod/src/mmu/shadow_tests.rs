//@ stage 8
//! Host tests of the shadow tree: the tables are read back as the
//! processor would walk them.

use super::*;
use crate::kernel::fake;

/// Entry `index` of the table at host "physical" address `phys` (on the
/// host, physical addresses are the fake pages' addresses).
fn entry(phys: u64, index: u64) -> u64 {
    // SAFETY: in host tests a physical address is the page's address.
    unsafe { ((phys & !0xFFF & ((1 << 52) - 1)) as *const u64).add(index as usize).read() }
}

/// The processor's walk of the shadow: the leaf entry of `linear`, with
/// the rights of all levels combined (RW and US ANDed, XD ORed).
fn walk(root: u64, linear: u64, long_mode: bool) -> Option<(u64, bool, bool, bool)> {
    let mut table = root;
    let (mut rw, mut us, mut xd) = (true, true, false);
    let top = if long_mode { 4 } else { 3 };
    for level in (1..=top).rev() {
        let e = entry(table, index(linear, level, long_mode) as u64);
        if e & P == 0 {
            return None;
        }
        let pdpte = level == 3 && !long_mode;
        if !pdpte {
            rw &= e & RW != 0;
            us &= e & US != 0;
            xd |= e & XD != 0;
        } else {
            assert_eq!(e & 0xFFF & !P, 0, "a PAE PDPTE has no rights bits");
        }
        table = e;
    }
    Some((table & !0xFFF & !XD, rw, us, xd))
}

fn guest_page() -> (Page, u64) {
    let page = Page::alloc_zeroed().expect("a page");
    let phys = page.phys();
    (page, phys)
}

fn leaf(page: &Page, writable: bool, user: bool, no_execute: bool) -> Leaf {
    Leaf { page: page.get(), writable, user, no_execute }
}

#[test]
fn the_root_of_a_pae_tree_has_its_four_directories_from_the_start() {
    let mut mmu = ShadowMmu::new().expect("an MMU");
    let root = mmu.root(false).expect("a root");
    for i in 0..4 {
        assert_eq!(entry(root, i) & 0xFFF, P);
    }
    assert_eq!(mmu.in_use(), 5);
    assert_eq!(mmu.root(false), Some(root), "the same root until a zap");
}

mod e8_2 {
    use super::*;

    #[test]
    fn an_installed_page_is_walked_with_the_guests_rights() {
        for long_mode in [false, true] {
            let mut mmu = ShadowMmu::new().expect("an MMU");
            let root = mmu.root(long_mode).expect("a root");
            let (page, phys) = guest_page();
            let linear = if long_mode { 0x7FFF_1234_5000 } else { 0xC012_3000 };
            mmu.install(linear | 0x123, leaf(&page, false, true, true)).expect("installed");
            assert_eq!(walk(root, linear, long_mode), Some((phys, false, true, true)), "long mode {long_mode}");
            assert_eq!(walk(root, linear + 0x1000, long_mode), None, "only that page");
            assert_eq!(mmu.mapped(linear).map(|p| p.phys()), Some(phys));
        }
    }

    #[test]
    fn writable_pages_are_dirty_and_the_tree_is_shared_by_neighbours() {
        let mut mmu = ShadowMmu::new().expect("an MMU");
        let root = mmu.root(false).expect("a root");
        let (a, pa) = guest_page();
        let (b, pb) = guest_page();
        mmu.install(0x40_0000, leaf(&a, true, false, false)).expect("a");
        let tables = mmu.in_use();
        mmu.install(0x40_1000, leaf(&b, true, true, false)).expect("b");
        assert_eq!(mmu.in_use(), tables, "the same page table");
        assert_eq!(walk(root, 0x40_0000, false), Some((pa, true, false, false)));
        assert_eq!(walk(root, 0x40_1000, false), Some((pb, true, true, false)));
        let pde = entry(entry(root, 0), 2);
        let pte = entry(pde, 0);
        assert_eq!(pte & (A | D), A | D, "the processor never writes the shadow's A and D");
    }

    #[test]
    fn a_mapped_page_stays_alive_until_it_is_unmapped() {
        let before = fake::live_pages();
        let mut mmu = ShadowMmu::new().expect("an MMU");
        mmu.root(true).expect("a root");
        let (page, _) = guest_page();
        mmu.install(0x1000, leaf(&page, true, true, false)).expect("installed");
        drop(page);
        assert!(mmu.mapped(0x1000).is_some());
        let with = fake::live_pages();
        mmu.invalidate(0x1000, 1 << 21);
        assert_eq!(fake::live_pages(), with - 2, "invlpg dropped the guest page and its page table");
        assert!(mmu.mapped(0x1000).is_none());
        mmu.zap_all();
        assert_eq!(fake::live_pages(), before, "every table freed");
    }

    #[test]
    fn invlpg_forgets_the_large_page_the_address_may_have_been_in() {
        let mut mmu = ShadowMmu::new().expect("an MMU");
        let root = mmu.root(false).expect("a root");
        let (a, _) = guest_page();
        for linear in [0x1000, 0x1F_F000, 0x20_0000, 0x40_0000] {
            mmu.install(linear, leaf(&a, true, true, false)).expect("installed");
        }
        mmu.invalidate(0x1000, 1 << 22);
        assert_eq!(walk(root, 0x1000, false), None);
        assert_eq!(walk(root, 0x1F_F000, false), None, "the same 2 MiB");
        assert_eq!(walk(root, 0x20_0000, false), None, "the same 4 MiB, for a 32-bit guest");
        assert!(walk(root, 0x40_0000, false).is_some(), "another 4 MiB");
        mmu.invalidate(0xDEAD_B000, 1 << 21);
    }

    #[test]
    fn the_tree_never_grows_past_its_bound_and_recycles_the_oldest() {
        let mut mmu = ShadowMmu::new().expect("an MMU");
        let root = mmu.root(true).expect("a root");
        let (page, _) = guest_page();
        // Each 1 GiB region needs a PDPT? No: one PDPT per 512 GiB, one page
        // directory per GiB and one page table per 2 MiB: 2 MiB apart, every
        // install needs a page table; 1 GiB apart, a directory too.
        for i in 0..600u64 {
            mmu.install(i << 30, leaf(&page, false, false, false)).expect("installed");
            assert!(mmu.in_use() <= MAX_SHADOW_PAGES);
        }
        assert!(walk(root, 599 << 30, true).is_some(), "the newest is mapped");
        assert!(walk(root, 0, true).is_none(), "the oldest was recycled");
        let (made, zapped) = mmu.take_counts();
        assert_eq!(made - zapped, mmu.in_use() as u64);
    }

    #[test]
    fn making_room_never_frees_a_table_the_walk_stands_on() {
        let mut mmu = ShadowMmu::new().expect("an MMU");
        let root = mmu.root(true).expect("a root");
        let (page, _) = guest_page();
        // One page more than in the test above: the PDPT of the first 512
        // GiB is the oldest page, and at some point exactly one page is
        // free when a page needs both a directory and a page table. Making
        // room after the first step down would then recycle that PDPT
        // under the walk's feet.
        mmu.install(0x20_0000, leaf(&page, false, false, false)).expect("installed");
        let mut one_free = false;
        for i in 0..600u64 {
            one_free |= mmu.in_use() == MAX_SHADOW_PAGES - 1;
            mmu.install(i << 30, leaf(&page, false, false, false)).unwrap_or_else(|e| panic!("install {i}: {e:?}"));
            assert!(mmu.in_use() <= MAX_SHADOW_PAGES);
            assert!(walk(root, i << 30, true).is_some(), "install {i} is mapped");
        }
        assert!(one_free, "the case this test is about never came up");
    }

    #[test]
    fn a_page_whose_tables_exist_recycles_nothing() {
        let mut mmu = ShadowMmu::new().expect("an MMU");
        let root = mmu.root(true).expect("a root");
        let (page, _) = guest_page();
        // The root, a PDPT, a directory and 250 page tables; then a second
        // PDPT with its directory and page table fills the tree exactly.
        for i in 0..250u64 {
            mmu.install(i << 21, leaf(&page, false, false, false)).expect("installed");
        }
        mmu.install(1 << 39, leaf(&page, false, false, false)).expect("installed");
        assert_eq!(mmu.in_use(), MAX_SHADOW_PAGES, "the tree is full");
        mmu.take_counts();
        mmu.install((1 << 39) + 0x1000, leaf(&page, true, false, false)).expect("a neighbour");
        assert_eq!(mmu.take_counts(), (0, 0), "no page made or recycled for a page whose tables exist");
        assert!(walk(root, 0, true).is_some(), "the oldest page is still mapped");
        assert!(walk(root, (1 << 39) + 0x1000, true).is_some(), "the neighbour is mapped");
    }

    #[test]
    fn a_full_tree_makes_room_for_the_tables_of_the_path_it_recycles() {
        let mut mmu = ShadowMmu::new().expect("an MMU");
        let root = mmu.root(true).expect("a root");
        let (page, _) = guest_page();
        // The oldest PDPT keeps a directory but loses its only page table;
        // other PDPTs, each with a directory and a page table, and one more
        // page table fill the tree.
        mmu.install(0, leaf(&page, false, false, false)).expect("installed");
        mmu.invalidate(0, 1 << 21);
        mmu.install(1 << 39 | 1 << 21, leaf(&page, false, false, false)).expect("installed");
        for i in 1..=84u64 {
            mmu.install(i << 39, leaf(&page, false, false, false)).expect("installed");
        }
        assert_eq!(mmu.in_use(), MAX_SHADOW_PAGES, "the tree is full");
        // The path of 0x1000 lacks only its page table, but the oldest
        // subtree, which room is made from first, holds the rest of it.
        mmu.install(0x1000, leaf(&page, false, false, false)).expect("installed in a full tree");
        assert!(walk(root, 0x1000, true).is_some(), "mapped");
        assert!(mmu.in_use() <= MAX_SHADOW_PAGES);
    }

    #[test]
    fn a_new_paging_mode_throws_the_tree_away() {
        let mut mmu = ShadowMmu::new().expect("an MMU");
        let pae = mmu.root(false).expect("a root");
        let (page, _) = guest_page();
        mmu.install(0x1000, leaf(&page, true, true, false)).expect("installed");
        let long = mmu.root(true).expect("a long-mode root");
        assert_ne!(long, 0);
        assert_eq!(walk(long, 0x1000, true), None);
        assert!(mmu.root(false).is_some_and(|r| r != pae || walk(r, 0x1000, false).is_none()));
    }

    #[test]
    fn fetch_reads_across_pages_and_stops_at_an_unmapped_one() {
        let mut mmu = ShadowMmu::new().expect("an MMU");
        mmu.root(false).expect("a root");
        let (a, _) = guest_page();
        let (b, _) = guest_page();
        // SAFETY: both pages are alive and 4 KiB long.
        unsafe {
            a.addr().add(0xFFF).write(0xAA);
            b.addr().write(0xBB);
        }
        mmu.install(0x7000, leaf(&a, false, false, false)).expect("a");
        mmu.install(0x8000, leaf(&b, false, false, false)).expect("b");
        let mut buf = [0; 2];
        let mapped = |l| mmu.mapped(l).map(|p| p.addr() as *const u8);
        assert!(read_through(mapped, 0x7FFF, &mut buf));
        assert_eq!(buf, [0xAA, 0xBB]);
        assert!(!read_through(mapped, 0x8FFF, &mut buf));
    }
}
