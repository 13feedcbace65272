//@ stage 3
//! `/dev/rkvm`'s file operations: `open` makes a VM, `ioctl` decodes the
//! command, a fault in a mapping of the file finds a page of guest memory,
//! the last `close` frees the VM.
//!
//! The glue keeps each VM behind `file->private_data` as an opaque handle:
//! a `Box<Vm>` turned into a raw pointer by [`open`] and back by [`release`].
//! Each ioctl copies its argument in, works on the VM under the VM's locks,
//! and copies its result out; a bad user pointer is `EFAULT`.

use crate::abi::{self, KvmMemoryRegion, KvmRegs, KvmSregs, Pod};
//@ begin 5
use crate::abi::KvmRun;
//@ end
use crate::kernel::{self, Errno, KResult};
use crate::log;
use crate::vm::Vm;
use alloc::boxed::Box;
use core::ffi::c_void;

/// Module load. From stage 04 on, hardware virtualization is turned on,
/// on every CPU, or the module refuses to load.
pub fn init() -> KResult<()> {
    //@ begin 4
    crate::hardware::enable()?;
    //@ end
    log!(Info, "loaded, API version {}", abi::KVM_API_VERSION);
    Ok(())
}

/// Module unload: every file is closed, so no vCPU runs. From stage 04
/// on, hardware virtualization is turned off on every CPU.
pub fn exit() {
    //@ begin 4
    crate::hardware::disable();
    //@ end
    log!(Info, "unloaded");
}

/// Creates the VM of a newly opened file and returns its handle.
pub fn open() -> KResult<*mut c_void> {
    let vm = Vm::new()?;
    Ok(Box::into_raw(vm).cast())
}

/// Frees the VM of a file being released.
///
/// # Safety
/// `handle` must come from [`open`] and must not be used again.
pub unsafe fn release(handle: *mut c_void) {
    if handle.is_null() {
        return;
    }
    // SAFETY: `handle` came from `Box::into_raw` in `open` and is released once.
    drop(unsafe { Box::from_raw(handle.cast::<Vm>()) });
}

/// Decodes and runs one ioctl on the VM behind `handle`.
///
/// # Safety
/// `handle` must come from [`open`] and not yet be released.
pub unsafe fn ioctl(handle: *mut c_void, cmd: u32, arg: usize) -> KResult<isize> {
    // SAFETY: the glue passes the live handle of the file being operated on.
    let Some(vm) = (unsafe { handle.cast::<Vm>().as_ref() }) else {
        return Err(Errno::EINVAL);
    };
    dispatch(vm, cmd, arg)
}

/// A page fault in a mapping of the file: the page at file page offset
/// `pgoff` (a guest frame number), with a reference the caller must hand to
/// the kernel's page table; null if no memory slot backs it.
///
/// # Safety
/// `handle` must come from [`open`] and not yet be released (a mapping
/// holds its file open, so a fault always finds its VM alive).
pub unsafe fn fault(handle: *mut c_void, pgoff: u64) -> *mut c_void {
    // SAFETY: the glue passes the live handle of the mapped file.
    let Some(vm) = (unsafe { handle.cast::<Vm>().as_ref() }) else {
        return core::ptr::null_mut();
    };
    vm.fault(pgoff).map_or(core::ptr::null_mut(), kernel::PageRef::into_raw)
}

// ANCHOR: dispatch
/// The ioctl table: one arm per command this stage knows. The others,
/// including the 2006 commands whose stage has not come yet, are `ENOTTY`:
/// "no such ioctl for this device".
fn dispatch(vm: &Vm, cmd: u32, arg: usize) -> KResult<isize> {
    match cmd {
        abi::KVM_GET_API_VERSION => Ok(abi::KVM_API_VERSION as isize),
        abi::KVM_SET_MEMORY_REGION => set_memory_region(vm, arg),
        abi::KVM_CREATE_VCPU => create_vcpu(vm, arg),
        abi::KVM_GET_REGS => get_regs(vm, arg),
        abi::KVM_SET_REGS => set_regs(vm, arg),
        abi::KVM_GET_SREGS => get_sregs(vm, arg),
        abi::KVM_SET_SREGS => set_sregs(vm, arg),
        //@ begin 5
        abi::KVM_RUN => run(vm, arg),
        //@ end
        //@ begin 8
        abi::KVM_TRANSLATE => translate(vm, arg),
        //@ end
        //@ begin 11
        abi::KVM_GET_DIRTY_LOG => get_dirty_log(vm, arg),
        //@ end
        //@ begin 12
        abi::KVM_INTERRUPT => interrupt(vm, arg),
        abi::KVM_DEBUG_GUEST => debug_guest(vm, arg),
        abi::KVM_GET_MSRS => msr_io(vm, arg, false),
        abi::KVM_SET_MSRS => msr_io(vm, arg, true),
        abi::KVM_GET_MSR_INDEX_LIST => msr_index_list(arg),
        //@ end
        _ => Err(Errno::ENOTTY),
    }
}
// ANCHOR_END: dispatch

// ANCHOR: user_copies
/// Copies a `T` in from user address `arg`.
fn read_user<T: Pod + Default>(arg: usize) -> KResult<T> {
    let mut value = T::default();
    kernel::copy_from_user(value.as_bytes_mut(), arg)?;
    Ok(value)
}

/// Copies `value` out to user address `arg`.
fn write_user<T: Pod>(arg: usize, value: &T) -> KResult<()> {
    kernel::copy_to_user(arg, value.as_bytes())
}
// ANCHOR_END: user_copies

// ANCHOR: handlers
fn set_memory_region(vm: &Vm, arg: usize) -> KResult<isize> {
    let region: KvmMemoryRegion = read_user(arg)?;
    vm.set_memory_region(&region)?;
    Ok(0)
}

/// The argument is the vCPU's index itself, not a pointer. 2006 truncated
/// it to an `int`; rkvm refuses any value that is not a valid index.
fn create_vcpu(vm: &Vm, arg: usize) -> KResult<isize> {
    vm.create_vcpu(arg)?;
    Ok(0)
}

/// Every register ioctl copies the whole struct in, for its `vcpu` field,
/// and (for GET) the whole struct out, with `vcpu` as it came in. No lock is
/// held during a copy: the user buffer may lie in this VM's guest memory.
fn get_regs(vm: &Vm, arg: usize) -> KResult<isize> {
    let request: KvmRegs = read_user(arg)?;
    let regs = vm.with_vcpu(request.vcpu, |vcpu| vcpu.get_regs())?;
    write_user(arg, &KvmRegs { vcpu: request.vcpu, ..regs })?;
    Ok(0)
}

fn set_regs(vm: &Vm, arg: usize) -> KResult<isize> {
    let regs: KvmRegs = read_user(arg)?;
    vm.with_vcpu(regs.vcpu, |vcpu| vcpu.set_regs(&regs))?;
    Ok(0)
}

fn get_sregs(vm: &Vm, arg: usize) -> KResult<isize> {
    let request: KvmSregs = read_user(arg)?;
    let sregs = vm.with_vcpu(request.vcpu, |vcpu| vcpu.get_sregs())?;
    write_user(arg, &KvmSregs { vcpu: request.vcpu, ..sregs })?;
    Ok(0)
}

fn set_sregs(vm: &Vm, arg: usize) -> KResult<isize> {
    let sregs: KvmSregs = read_user(arg)?;
    vm.with_vcpu(sregs.vcpu, |vcpu| vcpu.set_sregs(&sregs))?;
    Ok(0)
}
// ANCHOR_END: handlers

//@ begin 5
// ANCHOR: kvm_run
/// `KVM_RUN`: `struct kvm_run` is copied in, the guest runs until an exit
/// for userspace, and the struct is copied out with the exit's details.
/// Interrupted by a signal, the call fails with `EINTR`, and the struct is
/// copied out as well (as in 2006), so userspace sees the last state.
fn run(vm: &Vm, arg: usize) -> KResult<isize> {
    let mut run: KvmRun = read_user(arg)?;
    let result = vm.run(&mut run);
    if result.is_ok() || result == Err(Errno::EINTR) {
        write_user(arg, &run)?;
    }
    result.map(|()| 0)
}
// ANCHOR_END: kvm_run
//@ end

//@ begin 8
// ANCHOR: kvm_translate
/// `KVM_TRANSLATE`: the struct in, the walk, the struct out.
fn translate(vm: &Vm, arg: usize) -> KResult<isize> {
    let request: abi::KvmTranslation = read_user(arg)?;
    let answer = vm.translate(&request)?;
    write_user(arg, &answer)?;
    Ok(0)
}
// ANCHOR_END: kvm_translate
//@ end

//@ begin 12
// ANCHOR: kvm_interrupt
/// `KVM_INTERRUPT`: `EINVAL` for a vector beyond 255 or a vCPU beyond the
/// VM's, `ENOENT` for a vCPU not made.
fn interrupt(vm: &Vm, arg: usize) -> KResult<isize> {
    let irq: abi::KvmInterrupt = read_user(arg)?;
    vm.with_vcpu(irq.vcpu, |v| v.queue_interrupt(irq.irq))??;
    Ok(0)
}
// ANCHOR_END: kvm_interrupt

// ANCHOR: kvm_debug_guest
/// `KVM_DEBUG_GUEST`: the debugger's breakpoints and single-stepping for
/// the vCPU, from its next entry on (`EINVAL` or `ENOENT` for a vCPU, as
/// `KVM_INTERRUPT`). A breakpoint's address is not checked: one the guest
/// never reaches is never hit.
fn debug_guest(vm: &Vm, arg: usize) -> KResult<isize> {
    let dbg: abi::KvmDebugGuest = read_user(arg)?;
    vm.with_vcpu(dbg.vcpu, |v| v.set_debugger(&dbg))??;
    Ok(0)
}
// ANCHOR_END: kvm_debug_guest

// ANCHOR: msr_io
/// The most entries one `KVM_GET_MSRS` or `KVM_SET_MSRS` takes: 2006's
/// `MAX_IO_MSRS`.
const MAX_IO_MSRS: u32 = 256;

/// `KVM_GET_MSRS` and `KVM_SET_MSRS`, as 2006's `msr_io`: `E2BIG` for 256
/// entries or more; the entries in, each read or written in order until
/// the first MSR the module does not keep; the entries back out (for a
/// read); and the number done as the ioctl's value.
fn msr_io(vm: &Vm, arg: usize, write: bool) -> KResult<isize> {
    let header: abi::KvmMsrs = read_user(arg)?;
    if header.nmsrs >= MAX_IO_MSRS {
        return Err(Errno::E2BIG);
    }
    let mut entries = alloc::vec::Vec::new();
    entries.try_reserve_exact(header.nmsrs as usize).map_err(|_| Errno::ENOMEM)?;
    let first = arg.checked_add(core::mem::size_of::<abi::KvmMsrs>()).ok_or(Errno::EFAULT)?;
    let entry_size = core::mem::size_of::<abi::KvmMsrEntry>();
    for i in 0..header.nmsrs as usize {
        entries.push(read_user::<abi::KvmMsrEntry>(first.checked_add(i * entry_size).ok_or(Errno::EFAULT)?)?);
    }
    let done = vm.with_vcpu(header.vcpu, |v| if write { v.set_msrs(&entries) } else { v.get_msrs(&mut entries) })?;
    if !write {
        for (i, entry) in entries.iter().enumerate() {
            write_user(first.checked_add(i * entry_size).ok_or(Errno::EFAULT)?, entry)?;
        }
    }
    Ok(done as isize)
}

/// `KVM_GET_MSR_INDEX_LIST`: the number of MSRs always; their indices if
/// userspace made room for them, else `E2BIG`, as 2006.
fn msr_index_list(arg: usize) -> KResult<isize> {
    let list = crate::exit::msr::MSR_INDEX_LIST;
    let header: abi::KvmMsrList = read_user(arg)?;
    let room = header.nmsrs;
    write_user(arg, &abi::KvmMsrList { nmsrs: list.len() as u32, ..header })?;
    if (room as usize) < list.len() {
        return Err(Errno::E2BIG);
    }
    let first = arg.checked_add(core::mem::size_of::<abi::KvmMsrList>()).ok_or(Errno::EFAULT)?;
    for (i, index) in list.iter().enumerate() {
        write_user(first.checked_add(i * 4).ok_or(Errno::EFAULT)?, index)?;
    }
    Ok(0)
}
// ANCHOR_END: msr_io
//@ end

//@ begin 11
// ANCHOR: kvm_get_dirty_log
/// `KVM_GET_DIRTY_LOG`: the struct in, the log taken (and its pages
/// write-protected), then the bitmap out, with no lock held. If the copy
/// fails (`EFAULT`), the bits go back into the log.
fn get_dirty_log(vm: &Vm, arg: usize) -> KResult<isize> {
    let request: abi::KvmDirtyLog = read_user(arg)?;
    let log = vm.get_dirty_log(request.slot)?;
    let to = usize::try_from(request.dirty_bitmap).map_err(|_| Errno::EFAULT)?;
    if let Err(e) = kernel::copy_to_user(to, &log.bytes) {
        vm.put_back_dirty_log(&log);
        return Err(e);
    }
    Ok(0)
}
// ANCHOR_END: kvm_get_dirty_log
//@ end

#[cfg(test)]
mod tests {
    use super::*;

    fn with_vm(f: impl FnOnce(*mut c_void)) {
        let handle = open().expect("open");
        f(handle);
        // SAFETY: `handle` came from `open` and is released once.
        unsafe { release(handle) };
    }

    #[test]
    fn api_version_is_2() {
        // SAFETY: the handle is live inside `with_vm`.
        with_vm(|h| assert_eq!(unsafe { ioctl(h, 0xAE01, 0) }, Ok(2)));
    }

    #[test]
    fn unknown_ioctls_are_enotty() {
        for cmd in [0, 0xAE00, 0xAEFF, 0xAF01, 0x8090_AE03, u32::MAX] {
            // SAFETY: the handle is live inside `with_vm`.
            with_vm(|h| assert_eq!(unsafe { ioctl(h, cmd, 0) }, Err(Errno::ENOTTY), "cmd {cmd:#x}"));
        }
    }

    #[test]
    fn a_null_handle_is_einval_not_a_crash() {
        // SAFETY: a null handle is checked before use.
        assert_eq!(unsafe { ioctl(core::ptr::null_mut(), 0xAE01, 0) }, Err(Errno::EINVAL));
        // SAFETY: as above.
        assert!(unsafe { fault(core::ptr::null_mut(), 0) }.is_null());
    }

    /// `ioctl` with a pointer to `value` as its argument.
    fn ioctl_ptr<T>(h: *mut c_void, cmd: u32, value: &mut T) -> KResult<isize> {
        // SAFETY: the handle is live; the pointer is to a live `T`.
        unsafe { ioctl(h, cmd, value as *mut T as usize) }
    }

    fn region(slot: u32, guest_phys_addr: u64, memory_size: u64) -> KvmMemoryRegion {
        KvmMemoryRegion { slot, flags: 0, guest_phys_addr, memory_size }
    }

    #[test]
    fn set_memory_region_copies_its_argument_in() {
        with_vm(|h| {
            let mut r = region(0, 0x10_0000, 0x4000);
            assert_eq!(ioctl_ptr(h, abi::KVM_SET_MEMORY_REGION, &mut r), Ok(0));
            // SAFETY: the handle is live inside `with_vm`.
            let vm = unsafe { &*h.cast::<Vm>() };
            assert_eq!(vm.with_memory(|m| m.slot(0).map(|s| (s.base_gfn(), s.npages()))), Some((0x100, 4)));
            let mut bad = region(9, 0, 0x1000);
            assert_eq!(ioctl_ptr(h, abi::KVM_SET_MEMORY_REGION, &mut bad), Err(Errno::EINVAL));
        });
    }

    #[test]
    fn bad_pointers_are_efault() {
        with_vm(|h| {
            // SAFETY: the handle is live; the module must not touch address 16.
            let call = |cmd| unsafe { ioctl(h, cmd, 16) };
            assert_eq!(call(abi::KVM_CREATE_VCPU), Err(Errno::EINVAL), "CREATE_VCPU takes no pointer: 16 is an index");
            for cmd in [abi::KVM_SET_MEMORY_REGION, abi::KVM_GET_REGS, abi::KVM_SET_REGS, abi::KVM_GET_SREGS, abi::KVM_SET_SREGS] {
                assert_eq!(call(cmd), Err(Errno::EFAULT), "cmd {cmd:#x}");
            }
        });
    }

    #[test]
    fn create_vcpu_takes_its_index_by_value() {
        with_vm(|h| {
            // SAFETY: the handle is live inside `with_vm`.
            let create = |index| unsafe { ioctl(h, abi::KVM_CREATE_VCPU, index) };
            assert_eq!(create(1), Err(Errno::EINVAL));
            assert_eq!(create(1 << 32), Err(Errno::EINVAL), "no truncation to an int");
            assert_eq!(create(0), Ok(0));
            assert_eq!(create(0), Err(Errno::EEXIST));
        });
    }

    #[test]
    fn register_ioctls_name_their_vcpu() {
        with_vm(|h| {
            let mut sregs = KvmSregs::default();
            assert_eq!(ioctl_ptr(h, abi::KVM_GET_SREGS, &mut sregs), Err(Errno::ENOENT), "no vCPU yet");
            // SAFETY: the handle is live inside `with_vm`.
            assert_eq!(unsafe { ioctl(h, abi::KVM_CREATE_VCPU, 0) }, Ok(0));
            sregs.vcpu = 1;
            assert_eq!(ioctl_ptr(h, abi::KVM_GET_SREGS, &mut sregs), Err(Errno::EINVAL));
            assert_eq!(ioctl_ptr(h, abi::KVM_SET_SREGS, &mut sregs), Err(Errno::EINVAL));
            let mut regs = KvmRegs { vcpu: u32::MAX, ..KvmRegs::default() };
            assert_eq!(ioctl_ptr(h, abi::KVM_SET_REGS, &mut regs), Err(Errno::EINVAL));
            assert_eq!(ioctl_ptr(h, abi::KVM_GET_REGS, &mut regs), Err(Errno::EINVAL));
        });
    }

    #[test]
    fn sregs_round_trip_through_the_ioctls() {
        with_vm(|h| {
            // SAFETY: the handle is live inside `with_vm`.
            assert_eq!(unsafe { ioctl(h, abi::KVM_CREATE_VCPU, 0) }, Ok(0));
            let mut sregs = KvmSregs::default();
            assert_eq!(ioctl_ptr(h, abi::KVM_GET_SREGS, &mut sregs), Ok(0));
            assert_eq!((sregs.cs.selector, sregs.cs.base, sregs.cr0), (0xF000, 0xFFFF_0000, 0x6000_0010));
            sregs.cr0 |= 1;
            sregs.gdt = abi::KvmDtable { base: 0x5000, limit: 0x17, padding: [0; 3] };
            let sent = sregs;
            assert_eq!(ioctl_ptr(h, abi::KVM_SET_SREGS, &mut sregs), Ok(0));
            let mut back = KvmSregs::default();
            assert_eq!(ioctl_ptr(h, abi::KVM_GET_SREGS, &mut back), Ok(0));
            assert_eq!(back, sent);
        });
    }

    mod e3_3 {
        use super::super::*;
        use super::{ioctl_ptr, with_vm};

        #[test]
        fn get_regs_returns_the_reset_state_with_the_vcpu_field_kept() {
            with_vm(|h| {
                // SAFETY: the handle is live inside `with_vm`.
                assert_eq!(unsafe { ioctl(h, abi::KVM_CREATE_VCPU, 0) }, Ok(0));
                let mut regs = KvmRegs { rax: 0xDEAD, ..KvmRegs::default() };
                assert_eq!(ioctl_ptr(h, abi::KVM_GET_REGS, &mut regs), Ok(0));
                assert_eq!(regs, KvmRegs { rdx: 0x600, rip: 0xFFF0, rflags: 2, ..KvmRegs::default() });
            });
        }
    }

    mod e3_4 {
        use super::super::*;
        use super::{ioctl_ptr, with_vm};

        #[test]
        fn set_regs_reaches_the_vcpu() {
            with_vm(|h| {
                // SAFETY: the handle is live inside `with_vm`.
                assert_eq!(unsafe { ioctl(h, abi::KVM_CREATE_VCPU, 0) }, Ok(0));
                let mut regs = KvmRegs { rbx: 0xB, r9: 0x9, rip: 0x7C00, rflags: 0x202, ..KvmRegs::default() };
                assert_eq!(ioctl_ptr(h, abi::KVM_SET_REGS, &mut regs), Ok(0));
                // SAFETY: the handle is live inside `with_vm`.
                let vm = unsafe { &*h.cast::<Vm>() };
                let seen = vm.with_vcpu(0, |v| (v.regs[3], v.regs[9], v.rip, v.rflags));
                assert_eq!(seen, Ok((0xB, 0x9, 0x7C00, 0x202)));
            });
        }
    }

    //@ begin 11
    mod dirty_log {
        use super::super::*;
        use super::{ioctl_ptr, with_vm};
        use crate::abi::{KVM_MEM_LOG_DIRTY_PAGES, KvmDirtyLog, KvmMemoryRegion};

        #[test]
        fn get_dirty_log_gives_2006s_errors_and_loses_no_bit_on_efault() {
            with_vm(|h| {
                let mut logged =
                    KvmMemoryRegion { slot: 1, flags: KVM_MEM_LOG_DIRTY_PAGES, guest_phys_addr: 0x10_0000, memory_size: 20 << 12 };
                assert_eq!(ioctl_ptr(h, abi::KVM_SET_MEMORY_REGION, &mut logged), Ok(0));
                let mut plain = KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 4 << 12 };
                assert_eq!(ioctl_ptr(h, abi::KVM_SET_MEMORY_REGION, &mut plain), Ok(0));
                // SAFETY: the handle is live inside `with_vm`.
                let vm = unsafe { &*h.cast::<Vm>() };
                vm.with_memory(|m| [0x100, 0x109, 0x113].iter().for_each(|&g| m.mark_page_dirty(g)));
                let mut bitmap = [0xFFu8; 4];
                let mut log = KvmDirtyLog { slot: 1, padding: 0, dirty_bitmap: bitmap.as_mut_ptr() as u64 };
                for (slot, errno) in [(0, Errno::ENOENT), (2, Errno::ENOENT), (4, Errno::EINVAL), (u32::MAX, Errno::EINVAL)] {
                    let mut bad = KvmDirtyLog { slot, ..log };
                    assert_eq!(ioctl_ptr(h, abi::KVM_GET_DIRTY_LOG, &mut bad), Err(errno), "slot {slot}");
                }
                let mut unwritable = KvmDirtyLog { dirty_bitmap: 8, ..log };
                assert_eq!(ioctl_ptr(h, abi::KVM_GET_DIRTY_LOG, &mut unwritable), Err(Errno::EFAULT));
                assert_eq!(ioctl_ptr(h, abi::KVM_GET_DIRTY_LOG, &mut log), Ok(0));
                // 20 pages: three bytes, the fourth untouched.
                assert_eq!(bitmap, [0x01, 0x02, 0x08, 0xFF], "the bits survived the EFAULT");
                assert_eq!(ioctl_ptr(h, abi::KVM_GET_DIRTY_LOG, &mut log), Ok(0));
                assert_eq!(bitmap, [0, 0, 0, 0xFF], "and were cleared by the read");
            });
        }
    }
    //@ end

    //@ begin 12
    mod msrs {
        use super::super::*;
        use super::{ioctl_ptr, with_vm};
        use crate::abi::{KvmMsrEntry, KvmMsrList, KvmMsrs};
        use crate::exit::msr::index as msr;

        /// `struct kvm_msrs` with its entries after it, as userspace lays it out.
        #[repr(C)]
        struct Msrs<const N: usize> {
            header: KvmMsrs,
            entries: [KvmMsrEntry; N],
        }

        fn entry(index: u32, data: u64) -> KvmMsrEntry {
            KvmMsrEntry { index, reserved: 0, data }
        }

        #[test]
        fn msrs_round_trip_through_the_ioctls_and_stop_at_the_first_unknown() {
            with_vm(|h| {
                // SAFETY: the handle is live inside `with_vm`.
                assert_eq!(unsafe { ioctl(h, abi::KVM_CREATE_VCPU, 0) }, Ok(0));
                let mut set = Msrs::<3> {
                    header: KvmMsrs { vcpu: 0, nmsrs: 3, entries: [] },
                    entries: [entry(msr::IA32_MISC_ENABLE, 0x81), entry(0xDEAD, 1), entry(msr::IA32_APIC_BASE, 0)],
                };
                // SAFETY: `set` is a live header followed by its three entries.
                let done = unsafe { ioctl(h, abi::KVM_SET_MSRS, &mut set as *mut _ as usize) };
                assert_eq!(done, Ok(1), "the unknown MSR stops the list");
                let mut get = Msrs::<2> {
                    header: KvmMsrs { vcpu: 0, nmsrs: 2, entries: [] },
                    entries: [entry(msr::IA32_MISC_ENABLE, 0), entry(msr::IA32_UCODE_REV, 0)],
                };
                // SAFETY: as above.
                assert_eq!(unsafe { ioctl(h, abi::KVM_GET_MSRS, &mut get as *mut _ as usize) }, Ok(2));
                assert_eq!((get.entries[0].data, get.entries[1].data), (0x81, 0x1_0000_0000));
                let mut many = KvmMsrs { vcpu: 0, nmsrs: 256, entries: [] };
                assert_eq!(ioctl_ptr(h, abi::KVM_GET_MSRS, &mut many), Err(Errno::E2BIG));
                let mut no_vcpu = KvmMsrs { vcpu: 1, nmsrs: 0, entries: [] };
                assert_eq!(ioctl_ptr(h, abi::KVM_GET_MSRS, &mut no_vcpu), Err(Errno::EINVAL));
            });
        }

        #[test]
        fn the_index_list_says_its_size_and_wants_room() {
            with_vm(|h| {
                let mut small = KvmMsrList { nmsrs: 2, indices: [] };
                assert_eq!(ioctl_ptr(h, abi::KVM_GET_MSR_INDEX_LIST, &mut small), Err(Errno::E2BIG));
                assert_eq!(small.nmsrs, 10);
                #[repr(C)]
                struct List {
                    header: KvmMsrList,
                    indices: [u32; 16],
                }
                let mut list = List { header: KvmMsrList { nmsrs: 16, indices: [] }, indices: [0; 16] };
                // SAFETY: a header followed by room for 16 indices.
                assert_eq!(unsafe { ioctl(h, abi::KVM_GET_MSR_INDEX_LIST, &mut list as *mut List as usize) }, Ok(0));
                assert_eq!(list.header.nmsrs, 10);
                assert_eq!(&list.indices[..3], &[0x174, 0x175, 0x176]);
                assert!(list.indices.contains(&msr::LSTAR) && list.indices.contains(&msr::IA32_TSC));
            });
        }
    }
    //@ end
}
