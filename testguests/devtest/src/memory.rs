//! Checks of guest memory: `KVM_SET_MEMORY_REGION` and `mmap` of the device.

use crate::sys::{
    Check, Ended, Mapping, PAGE, Vm, counter, errno_name, expect_counter, expect_eq, expect_errno, meminfo,
    touch_in_child,
};
use rkvm::abi::KVM_MEM_LOG_DIRTY_PAGES;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

fn ok<T>(what: &str, r: Result<T, i32>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", errno_name(e)))
}

/// A new slot is zeroed memory, counted in debugfs, mapped at file offset =
/// guest-physical address.
pub fn zeroed_at_its_offset() -> Check {
    let pages_before = counter("guest_pages")?;
    let vm = Vm::open()?;
    ok("a 64 KiB slot at 1 MiB", vm.set_region(0, MIB, 64 * KIB))?;
    expect_counter("guest_pages", pages_before + 16, "after a 64 KiB slot")?;
    let m = vm.map(MIB, 64 * 1024)?;
    if !m.all_zero() {
        return Err("new guest memory is not zeroed".into());
    }
    for page in 0..16 {
        m.write(page * PAGE + 7, page as u8 + 1);
    }
    let again = vm.map(MIB, 64 * 1024)?;
    for page in 0..16 {
        expect_eq(&format!("page {page} read through a second mapping"), again.read(page * PAGE + 7), page as u8 + 1)?;
    }
    drop(vm);
    // The mappings hold the file, so the VM lives until they go.
    expect_counter("guest_pages", pages_before + 16, "with the file closed but still mapped")?;
    drop((m, again));
    expect_counter("guest_pages", pages_before, "after the last mapping went")
}

/// Mappings of one VM at different offsets see the same pages; another VM
/// has memory of its own.
pub fn mappings_share_memory() -> Check {
    let (a, b) = (Vm::open()?, Vm::open()?);
    ok("VM a's slot", a.set_region(2, 0x20_0000, 4 * PAGE as u64))?;
    ok("VM b's slot", b.set_region(2, 0x20_0000, 4 * PAGE as u64))?;
    let whole = a.map(0x20_0000, 4 * PAGE)?;
    let third_page = a.map(0x20_2000, PAGE)?;
    whole.write(2 * PAGE + 100, 0x5C);
    expect_eq("a byte written through one mapping, read through another", third_page.read(100), 0x5C)?;
    third_page.write(4095, 0xC5);
    expect_eq("and back", whole.read(3 * PAGE - 1), 0xC5)?;
    let other = b.map(0x20_0000, 4 * PAGE)?;
    if !other.all_zero() {
        return Err("another VM sees the first VM's memory".into());
    }
    Ok(())
}

/// Growing keeps the pages and adds zeroed ones; shrinking keeps the first
/// pages; moving keeps them all; what is gone faults.
pub fn resizing_keeps_contents() -> Check {
    let vm = Vm::open()?;
    let base = 0x20_0000u64;
    let pages_before = counter("guest_pages")?;
    ok("a 4-page slot", vm.set_region(1, base, 4 * PAGE as u64))?;
    let first = vm.map(base, 4 * PAGE)?;
    for i in 0..4 {
        first.write(i * PAGE, i as u8 + 1);
        first.write(i * PAGE + PAGE - 1, 0xF0 + i as u8);
    }
    let marked = |m: &Mapping, i: usize| m.read(i * PAGE) == i as u8 + 1 && m.read(i * PAGE + PAGE - 1) == 0xF0 + i as u8;

    ok("growing to 8 pages", vm.set_region(1, base, 8 * PAGE as u64))?;
    expect_counter("guest_pages", pages_before + 8, "after growing to 8 pages")?;
    let grown = vm.map(base, 8 * PAGE)?;
    for i in 0..4 {
        if !marked(&grown, i) || !marked(&first, i) {
            return Err(format!("page {i} lost its contents when the slot grew"));
        }
    }
    if (4 * PAGE..8 * PAGE).any(|off| grown.read(off) != 0) {
        return Err("the pages added by growing are not zeroed".into());
    }

    ok("shrinking to 2 pages", vm.set_region(1, base, 2 * PAGE as u64))?;
    expect_counter("guest_pages", pages_before + 2, "after shrinking to 2 pages")?;
    let shrunk = vm.map(base, 8 * PAGE)?;
    if !marked(&shrunk, 0) || !marked(&shrunk, 1) {
        return Err("the pages kept by shrinking lost their contents".into());
    }
    expect_eq("touching page 2 after the slot shrank to 2 pages", touch_in_child(shrunk.addr() + 2 * PAGE, false), Ended::Signal(libc::SIGBUS))?;

    ok("moving the slot to 8 MiB", vm.set_region(1, 8 * MIB, 2 * PAGE as u64))?;
    let moved = vm.map(8 * MIB, 2 * PAGE)?;
    if !marked(&moved, 0) || !marked(&moved, 1) {
        return Err("the pages lost their contents when the slot moved".into());
    }
    let old_place = vm.map(base, PAGE)?;
    expect_eq("touching the slot's old address", touch_in_child(old_place.addr(), false), Ended::Signal(libc::SIGBUS))
}

/// An offset that no slot backs maps, but faults with SIGBUS when touched:
/// holes between slots, offsets past every slot, removed slots.
pub fn outside_is_sigbus() -> Check {
    let vm = Vm::open()?;
    ok("slot 0: pages 0-1", vm.set_region(0, 0, 2 * PAGE as u64))?;
    ok("slot 1: pages 4-5", vm.set_region(1, 4 * PAGE as u64, 2 * PAGE as u64))?;
    let m = vm.map(0, 6 * PAGE)?;
    let want = [Ended::Exited(0), Ended::Exited(0), Ended::Signal(libc::SIGBUS), Ended::Signal(libc::SIGBUS)];
    let want = want.into_iter().chain([Ended::Exited(0), Ended::Exited(0)]);
    for (page, want) in want.enumerate() {
        expect_eq(&format!("reading page {page}"), touch_in_child(m.addr() + page * PAGE, false), want)?;
    }
    expect_eq("writing the hole", touch_in_child(m.addr() + 3 * PAGE, true), Ended::Signal(libc::SIGBUS))?;
    let far = vm.map(GIB, PAGE)?;
    expect_eq("reading 1 GiB, past every slot", touch_in_child(far.addr(), false), Ended::Signal(libc::SIGBUS))?;
    ok("removing slot 1", vm.set_region(1, 4 * PAGE as u64, 0))?;
    let after = vm.map(4 * PAGE as u64, PAGE)?;
    expect_eq("reading a removed slot", touch_in_child(after.addr(), false), Ended::Signal(libc::SIGBUS))?;
    let empty = Vm::open()?;
    let nothing = empty.map(0, PAGE)?;
    expect_eq("reading a VM without memory", touch_in_child(nothing.addr(), true), Ended::Signal(libc::SIGBUS))
}

/// Each way `KVM_SET_MEMORY_REGION` can refuse, with its errno; a refusal
/// allocates nothing and changes nothing.
pub fn region_errors() -> Check {
    let vm = Vm::open()?;
    let pages_before = counter("guest_pages")?;
    let einval = [
        (4, 0, 0, PAGE as u64, "slot 4"),
        (u32::MAX, 0, 0, PAGE as u64, "slot 0xffffffff"),
        (0, 0, 0, 4095, "a size that is not a multiple of 4096"),
        (0, 0, 0, 4097, "a size that is not a multiple of 4096"),
        (0, 0, 0x800, PAGE as u64, "an address that is not page aligned"),
        (0, 0, u64::MAX - 4095, 2 * PAGE as u64, "a range that wraps around"),
        (0, 0, 1 << 52, PAGE as u64, "a range above 2^52"),
        (0, 2, 0, PAGE as u64, "flag 2"),
        (0, 0x8000_0000, 0, PAGE as u64, "flag 0x80000000"),
    ];
    for (slot, flags, gpa, size, what) in einval {
        expect_errno(what, vm.set_region_flags(slot, flags, gpa, size), libc::EINVAL)?;
    }
    expect_errno("a slot over 4 GiB", vm.set_region(0, 0, 4 * GIB + PAGE as u64), libc::ENOMEM)?;
    let available = meminfo("MemAvailable")? * KIB;
    let too_much = (available + 64 * MIB).next_multiple_of(PAGE as u64);
    expect_errno("a slot larger than the memory available", vm.set_region(0, 0, too_much), libc::ENOMEM)?;
    expect_errno("a null pointer", vm.ioctl(rkvm::abi::KVM_SET_MEMORY_REGION, 0), libc::EFAULT)?;
    let no_access = Mapping::anonymous(PAGE, libc::PROT_NONE)?;
    expect_errno("an inaccessible pointer", vm.ioctl(rkvm::abi::KVM_SET_MEMORY_REGION, no_access.addr()), libc::EFAULT)?;
    expect_counter("guest_pages", pages_before, "after refused regions")?;
    ok("the dirty-log flag", vm.set_region_flags(0, KVM_MEM_LOG_DIRTY_PAGES, 0, PAGE as u64))?;
    ok("a slot ending at 2^52", vm.set_region(3, (1 << 52) - PAGE as u64, PAGE as u64))?;
    ok("deleting an empty slot", vm.set_region(2, 0x1234_5000, 0))?;
    expect_counter("guest_pages", pages_before + 2, "after two one-page slots")
}

/// Slots may touch but not overlap (`EEXIST`); a refused change keeps the
/// slot and its contents.
pub fn overlaps() -> Check {
    let vm = Vm::open()?;
    ok("slot 0 at 1 MiB, 1 MiB long", vm.set_region(0, MIB, MIB))?;
    let cases = [
        (1, MIB, MIB, "the same range"),
        (1, MIB - PAGE as u64, 2 * PAGE as u64, "across its start"),
        (1, 2 * MIB - PAGE as u64, 2 * PAGE as u64, "across its end"),
        (2, MIB + 64 * KIB, PAGE as u64, "inside it"),
        (3, 0, 4 * MIB, "around it"),
    ];
    for (slot, gpa, size, what) in cases {
        expect_errno(&format!("slot {slot} {what}"), vm.set_region(slot, gpa, size), libc::EEXIST)?;
    }
    ok("slot 1 right after slot 0", vm.set_region(1, 2 * MIB, MIB))?;
    ok("slot 2 right before slot 0", vm.set_region(2, MIB - PAGE as u64, PAGE as u64))?;
    ok("slot 0 moving over itself", vm.set_region(0, MIB + MIB / 2, MIB / 2))?;
    let m = vm.map(MIB + MIB / 2, PAGE)?;
    m.write(0, 0x99);
    expect_errno("slot 0 growing into slot 1", vm.set_region(0, MIB + MIB / 2, MIB), libc::EEXIST)?;
    let again = vm.map(MIB + MIB / 2, PAGE)?;
    expect_eq("slot 0's first byte after the refused growth", again.read(0), 0x99)
}

/// How many VMs a round of the leak check opens and closes: 1,000 unless
/// `--leak-vms` says otherwise (the harness asks for 250 under Bochs,
/// where each VM takes tens of milliseconds).
pub static LEAK_VMS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// 1,000 VMs, each with two slots, touched memory, a vCPU and refused
/// calls, opened and closed: afterwards no VM, vCPU or page is left, what
/// the module holds from the kernel's allocators (debugfs `allocations`)
/// is back where it was, exactly, and MemFree is back where it was, within
/// `TOLERANCE_KB`.
pub fn leak_check() -> Check {
    /// Pages freed by one CPU sit on its per-CPU free lists before they
    /// count in MemFree again, and slab caches grow and shrink; 2 MiB covers
    /// that noise. A leak of one page per VM (4,000 kB over 1,000 VMs)
    /// exceeds it; a leak of one block of the module's own, whatever its
    /// size, shows in `allocations`.
    const TOLERANCE_KB: u64 = 2048;
    let vms = LEAK_VMS.get().copied().unwrap_or(1000);
    const SLOT0_PAGES: usize = 32;
    const SLOT1_PAGES: usize = 8;
    for i in 0..50 {
        one_vm(i, SLOT0_PAGES, SLOT1_PAGES).map_err(|e| format!("warm-up VM {i}: {e}"))?;
    }
    // After an earlier check pressed memory hard, caches grow back for a
    // while and MemFree falls with no leak: a fall beyond the tolerance
    // is only called a leak if a second round of VMs falls again. The
    // module's allocations get the same second chance, for state it sets
    // up once, on first use (on a CPU the process had not run on yet).
    let mut leaks = Vec::new();
    for round in 1..=2 {
        drop_caches();
        let held = counter("allocations")?;
        let before = meminfo("MemFree")?;
        for i in 0..vms {
            one_vm(i, SLOT0_PAGES, SLOT1_PAGES).map_err(|e| format!("VM {i}: {e}"))?;
        }
        drop_caches();
        let after = meminfo("MemFree")?;
        let now_held = counter("allocations")?;
        let per_vm_kb = (SLOT0_PAGES + SLOT1_PAGES) * PAGE / 1024;
        println!(
            "RKVM-INFO leak check, round {round}: MemFree {before} kB before, {after} kB after {vms} VMs of \
             {per_vm_kb} KiB guest memory each (difference {} kB, tolerance {TOLERANCE_KB} kB); \
             the module's allocations {held} before, {now_held} after",
            after as i64 - before as i64,
        );
        expect_counter("vms", 0, "after the leak check")?;
        expect_counter("vcpus", 0, "after the leak check")?;
        expect_counter("guest_pages", 0, "after the leak check")?;
        let mut leak = Vec::new();
        if now_held != held {
            leak.push(format!("the module's allocations (blocks, pages and locks) went from {held} to {now_held}"));
        }
        if after + TOLERANCE_KB < before {
            leak.push(format!("MemFree fell by {} kB", before - after));
        }
        if leak.is_empty() {
            return Ok(());
        }
        leaks.push(format!("round {round}: {}", leak.join(" and ")));
    }
    Err(format!("two rounds of {vms} VMs each left something behind: {}", leaks.join("; ")))
}

/// Drops the page cache and the slab objects the kernel can free, so that
/// MemFree counts what is really in use (best effort: ignored if the file
/// is missing).
fn drop_caches() {
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn one_vm(i: usize, slot0_pages: usize, slot1_pages: usize) -> Check {
    let vm = Vm::open()?;
    ok("slot 0", vm.set_region(0, 0, (slot0_pages * PAGE) as u64))?;
    ok("slot 1", vm.set_region(1, 16 * MIB, (slot1_pages * PAGE) as u64))?;
    expect_errno("an overlapping slot", vm.set_region(2, 0, PAGE as u64), libc::EEXIST)?;
    expect_errno("a slot over 4 GiB", vm.set_region(3, GIB, 8 * GIB), libc::ENOMEM)?;
    ok("KVM_CREATE_VCPU", vm.create_vcpu(0))?;
    let m = vm.map(0, slot0_pages * PAGE)?;
    for page in 0..slot0_pages {
        m.write(page * PAGE, i as u8);
    }
    // Every other VM keeps its mapping past the close: the pages must then
    // be freed at munmap instead.
    if i.is_multiple_of(2) {
        drop(m);
        drop(vm);
    } else {
        drop(vm);
        drop(m);
    }
    Ok(())
}
