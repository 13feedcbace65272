//! Checks of the vCPU: `KVM_CREATE_VCPU`, the register ioctls, and several
//! threads using one VM.

use crate::sys::{Check, Mapping, PAGE, Vm, errno_name, expect_counter, expect_eq, expect_errno};
use rkvm::abi::{self, KvmDtable, KvmRegs, KvmSegment, KvmSregs};

fn ok<T>(what: &str, r: Result<T, i32>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", errno_name(e)))
}

/// A VM with its vCPU 0.
fn vm_with_vcpu() -> Result<Vm, String> {
    let vm = Vm::open()?;
    ok("KVM_CREATE_VCPU(0)", vm.create_vcpu(0))?;
    Ok(vm)
}

/// One vCPU, index 0, created once; the argument is the index itself.
pub fn create_errors() -> Check {
    let vcpus = crate::sys::counter("vcpus")?;
    let vm = Vm::open()?;
    expect_errno("KVM_CREATE_VCPU(1)", vm.create_vcpu(1), libc::EINVAL)?;
    expect_errno("KVM_CREATE_VCPU(-1)", vm.create_vcpu(usize::MAX), libc::EINVAL)?;
    expect_errno("KVM_CREATE_VCPU(1 << 32)", vm.create_vcpu(1 << 32), libc::EINVAL)?;
    ok("KVM_CREATE_VCPU(0)", vm.create_vcpu(0))?;
    expect_counter("vcpus", vcpus + 1, "after one KVM_CREATE_VCPU")?;
    expect_errno("a second KVM_CREATE_VCPU(0)", vm.create_vcpu(0), libc::EEXIST)?;
    let other = Vm::open()?;
    ok("KVM_CREATE_VCPU(0) in another VM", other.create_vcpu(0))?;
    drop((vm, other));
    expect_counter("vcpus", vcpus, "after closing both VMs")
}

/// A new vCPU holds the processor's reset state; what SET_REGS stores,
/// GET_REGS returns.
pub fn regs_round_trip() -> Check {
    let vm = vm_with_vcpu()?;
    let reset = KvmRegs { rdx: 0x600, rip: 0xFFF0, rflags: 0x2, ..KvmRegs::default() };
    expect_eq("KVM_GET_REGS on a new vCPU", ok("KVM_GET_REGS", vm.get_regs(0))?, reset)?;
    let values: [u64; 18] = std::array::from_fn(|i| 0x0101_0101_0101_0101 * (i as u64 + 1));
    let regs = KvmRegs {
        vcpu: 0,
        padding: 0,
        rax: values[0],
        rbx: values[1],
        rcx: values[2],
        rdx: values[3],
        rsi: values[4],
        rdi: values[5],
        rsp: values[6],
        rbp: values[7],
        r8: values[8],
        r9: values[9],
        r10: values[10],
        r11: values[11],
        r12: values[12],
        r13: values[13],
        r14: values[14],
        r15: values[15],
        rip: values[16],
        rflags: values[17],
    };
    ok("KVM_SET_REGS", vm.set_regs(&regs))?;
    expect_eq("KVM_GET_REGS after KVM_SET_REGS", ok("KVM_GET_REGS", vm.get_regs(0))?, regs)?;
    expect_eq("KVM_GET_SREGS after KVM_SET_REGS", ok("KVM_GET_SREGS", vm.get_sregs(0))?.cr0, 0x6000_0010)
}

/// Register ioctls on no vCPU, another vCPU, and bad pointers.
pub fn regs_errors() -> Check {
    let vm = Vm::open()?;
    expect_errno("KVM_GET_REGS before KVM_CREATE_VCPU", vm.get_regs(0), libc::ENOENT)?;
    expect_errno("KVM_SET_REGS before KVM_CREATE_VCPU", vm.set_regs(&KvmRegs::default()), libc::ENOENT)?;
    ok("KVM_CREATE_VCPU(0)", vm.create_vcpu(0))?;
    expect_errno("KVM_GET_REGS on vCPU 1", vm.get_regs(1), libc::EINVAL)?;
    expect_errno("KVM_SET_REGS on vCPU 0xffffffff", vm.set_regs(&KvmRegs { vcpu: u32::MAX, ..KvmRegs::default() }), libc::EINVAL)?;
    bad_pointers(&vm, abi::KVM_GET_REGS, abi::KVM_SET_REGS)?;
    expect_eq("RIP after the refused calls", ok("KVM_GET_REGS", vm.get_regs(0))?.rip, 0xFFF0)?;
    let read_only = Mapping::anonymous(PAGE, libc::PROT_READ)?;
    ok("KVM_SET_REGS from a read-only buffer of zeroes", vm.ioctl(abi::KVM_SET_REGS, read_only.addr()))?;
    expect_eq("RIP after setting every register to 0", ok("KVM_GET_REGS", vm.get_regs(0))?.rip, 0)
}

/// GET and SET with a null pointer and a kernel address, and GET into a
/// read-only buffer, which the kernel can read (for `vcpu`) but not write.
fn bad_pointers(vm: &Vm, get: u32, set: u32) -> Check {
    for (cmd, name) in [(get, "GET"), (set, "SET")] {
        expect_errno(&format!("{name} with a null pointer"), vm.ioctl(cmd, 0), libc::EFAULT)?;
        expect_errno(&format!("{name} with a kernel address"), vm.ioctl(cmd, 0xFFFF_8000_0000_0000), libc::EFAULT)?;
    }
    let read_only = Mapping::anonymous(PAGE, libc::PROT_READ)?;
    expect_errno("GET into a read-only buffer", vm.ioctl(get, read_only.addr()), libc::EFAULT)
}

/// A new vCPU's special registers are those of a processor after reset;
/// what SET_SREGS stores, GET_SREGS returns.
pub fn sregs_round_trip() -> Check {
    let vm = vm_with_vcpu()?;
    let s = ok("KVM_GET_SREGS", vm.get_sregs(0))?;
    let cs = (s.cs.selector, s.cs.base, s.cs.limit, s.cs.type_, s.cs.present, s.cs.s);
    expect_eq("CS after reset (selector, base, limit, type, P, S)", cs, (0xF000, 0xFFFF_0000, 0xFFFF, 0xB, 1, 1))?;
    for (name, seg) in [("DS", s.ds), ("ES", s.es), ("FS", s.fs), ("GS", s.gs), ("SS", s.ss)] {
        let got = (seg.selector, seg.base, seg.limit, seg.type_, seg.present, seg.s);
        expect_eq(&format!("{name} after reset"), got, (0, 0, 0xFFFF, 0x3, 1, 1))?;
    }
    expect_eq("TR's and LDTR's types after reset", (s.tr.type_, s.ldt.type_), (0xB, 0x2))?;
    expect_eq("GDTR and IDTR limits after reset", (s.gdt.limit, s.idt.limit), (0xFFFF, 0xFFFF))?;
    let crs = (s.cr0, s.cr2, s.cr3, s.cr4, s.cr8, s.efer, s.apic_base);
    expect_eq("CR0, CR2, CR3, CR4, CR8, EFER, APIC base after reset", crs, (0x6000_0010, 0, 0, 0, 0, 0, 0xFEE0_0900))?;

    let flat = |selector, type_| KvmSegment {
        base: 0,
        limit: 0xFFFF_FFFF,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let mut protected = KvmSregs {
        vcpu: 0,
        cs: flat(0x08, 0xB),
        ds: flat(0x10, 0x3),
        ss: flat(0x10, 0x3),
        gdt: KvmDtable { base: 0x1000, limit: 0x17, padding: [0; 3] },
        cr0: 0x11,
        cr3: 0x2000,
        cr4: 0x20,
        efer: 0x500,
        ..s
    };
    protected.interrupt_bitmap[1] = 1 << 3;
    ok("KVM_SET_SREGS", vm.set_sregs(&protected))?;
    expect_eq("KVM_GET_SREGS after KVM_SET_SREGS", ok("KVM_GET_SREGS", vm.get_sregs(0))?, protected)?;
    expect_eq("RIP after KVM_SET_SREGS", ok("KVM_GET_REGS", vm.get_regs(0))?.rip, 0xFFF0)
}

pub fn sregs_errors() -> Check {
    let vm = Vm::open()?;
    expect_errno("KVM_GET_SREGS before KVM_CREATE_VCPU", vm.get_sregs(0), libc::ENOENT)?;
    ok("KVM_CREATE_VCPU(0)", vm.create_vcpu(0))?;
    expect_errno("KVM_GET_SREGS on vCPU 1", vm.get_sregs(1), libc::EINVAL)?;
    expect_errno("KVM_SET_SREGS on vCPU 7", vm.set_sregs(&KvmSregs { vcpu: 7, ..KvmSregs::default() }), libc::EINVAL)?;
    bad_pointers(&vm, abi::KVM_GET_SREGS, abi::KVM_SET_SREGS)
}

/// The ioctls' own argument may sit in the VM's guest memory: the module
/// copies it without holding the lock that the fault handler takes, so the
/// copy faults the page in instead of deadlocking.
pub fn arguments_in_guest_memory() -> Check {
    let vm = vm_with_vcpu()?;
    ok("slot 0", vm.set_region(0, 0, 4 * PAGE as u64))?;
    let guest = vm.map(0, 4 * PAGE)?;
    // Page 2 has not been touched yet: the kernel's copy is its first fault.
    let regs_at = guest.addr() + 2 * PAGE;
    ok("KVM_GET_REGS into guest memory", vm.ioctl(abi::KVM_GET_REGS, regs_at))?;
    expect_eq("RIP's low byte, read from guest memory", guest.read(2 * PAGE + 136), 0xF0)?;
    guest.write(2 * PAGE + 8, 0x77);
    ok("KVM_SET_REGS from guest memory", vm.ioctl(abi::KVM_SET_REGS, regs_at))?;
    expect_eq("RAX", ok("KVM_GET_REGS", vm.get_regs(0))?.rax, 0x77)?;
    ok("KVM_GET_SREGS into guest memory", vm.ioctl(abi::KVM_GET_SREGS, guest.addr() + 3 * PAGE))?;
    // A region, in slot 0's memory, that deletes slot 0 itself.
    let region = rkvm::abi::KvmMemoryRegion { slot: 0, flags: 0, guest_phys_addr: 0, memory_size: 0 };
    let bytes = rkvm::abi::Pod::as_bytes(&region);
    for (i, b) in bytes.iter().enumerate() {
        guest.write(PAGE + i, *b);
    }
    let pages = crate::sys::counter("guest_pages")?;
    ok("KVM_SET_MEMORY_REGION from the memory it deletes", vm.ioctl(abi::KVM_SET_MEMORY_REGION, guest.addr() + PAGE))?;
    expect_counter("guest_pages", pages - 4, "after slot 0 deleted itself")?;
    // The pages this mapping faulted in stay alive, and keep their
    // contents, until it is unmapped.
    expect_eq("RIP's low byte, still in the deleted slot's mapped page", guest.read(2 * PAGE + 136), 0xF0)
}

/// Three threads on one VM: one resizes a slot, one reads and writes the
/// pages that stay, one sets and gets registers. Every call must succeed
/// and every value come back as written.
pub fn threads_share_a_vm() -> Check {
    const ROUNDS: usize = 300;
    let vm = vm_with_vcpu()?;
    ok("slot 0", vm.set_region(0, 0, 16 * PAGE as u64))?;
    std::thread::scope(|scope| {
        let resizer = scope.spawn(|| -> Check {
            for i in 0..ROUNDS {
                let pages = 8 + (i % 9) as u64;
                ok("resizing slot 0", vm.set_region(0, 0, pages * PAGE as u64))?;
            }
            Ok(())
        });
        let toucher = scope.spawn(|| -> Check {
            for i in 0..ROUNDS {
                // The first 8 pages stay through every resize.
                let m = vm.map(0, 8 * PAGE)?;
                let page = i % 8;
                m.write(page * PAGE + 1, i as u8);
                expect_eq("a byte just written", m.read(page * PAGE + 1), i as u8)?;
            }
            Ok(())
        });
        let registers = scope.spawn(|| -> Check {
            for i in 0..ROUNDS as u64 {
                ok("KVM_SET_REGS", vm.set_regs(&KvmRegs { rbx: i, ..KvmRegs::default() }))?;
                expect_eq("RBX", ok("KVM_GET_REGS", vm.get_regs(0))?.rbx, i)?;
            }
            Ok(())
        });
        for (name, t) in [("resizer", resizer), ("toucher", toucher), ("registers", registers)] {
            t.join().map_err(|_| format!("the {name} thread panicked"))??;
        }
        Ok(())
    })
}

/// `KVM_SET_MSRS` then `KVM_GET_MSRS` of the MSRs the backend keeps: each
/// reads back as written (on VMX from the VMCS's SYSENTER fields and the
/// module's copy of the SYSCALL MSRs, on SVM from the VMCB), the TSC just
/// above the value written (the offset follows the host's TSC); a
/// non-canonical LSTAR stops the list, and LSTAR keeps its value.
pub fn msrs_round_trip() -> Check {
    use abi::{KvmMsrEntry, KvmMsrs};
    use rkvm::exit::msr::index::*;
    #[repr(C)]
    struct Msrs<const N: usize> {
        header: KvmMsrs,
        entries: [KvmMsrEntry; N],
    }
    fn msrs<const N: usize>(values: [(u32, u64); N]) -> Msrs<N> {
        let entries = values.map(|(index, data)| KvmMsrEntry { index, reserved: 0, data });
        Msrs { header: KvmMsrs { vcpu: 0, nmsrs: N as u32, entries: [] }, entries }
    }
    const TSC: u64 = 1 << 40;
    let written = [
        (IA32_SYSENTER_CS, 0x10),
        (IA32_SYSENTER_ESP, 0xFFFF_8000_0000_2000),
        (IA32_SYSENTER_EIP, 0xFFFF_FFFF_8100_0000),
        (STAR, 0x0023_0010_0000_0000),
        (LSTAR, 0xFFFF_FFFF_8100_0040),
        (CSTAR, 0xFFFF_FFFF_8100_0080),
        (SFMASK, 0x4_7700),
        (KERNEL_GS_BASE, 0xFFFF_8880_1234_0000),
        (IA32_TSC, TSC),
    ];
    let vm = vm_with_vcpu()?;
    let mut set = msrs(written);
    expect_eq("KVM_SET_MSRS of nine MSRs", vm.ioctl_with(abi::KVM_SET_MSRS, &mut set), Ok(9))?;
    let mut get = msrs(written.map(|(index, _)| (index, 0)));
    expect_eq("KVM_GET_MSRS of them", vm.ioctl_with(abi::KVM_GET_MSRS, &mut get), Ok(9))?;
    let (kept, tsc) = get.entries.split_at(8);
    let read: Vec<(u32, u64)> = kept.iter().map(|e| (e.index, e.data)).collect();
    expect_eq("the MSRs read back", read.as_slice(), &written[..8])?;
    let tsc = tsc.first().map_or(0, |e| e.data);
    if !(TSC..TSC + (1 << 38)).contains(&tsc) {
        return Err(format!("the TSC reads {tsc:#x} after a write of {TSC:#x}"));
    }
    let mut bad = msrs([(LSTAR, 0x0000_8000_0000_0000)]);
    expect_eq("KVM_SET_MSRS of a non-canonical LSTAR", vm.ioctl_with(abi::KVM_SET_MSRS, &mut bad), Ok(0))?;
    let mut lstar = msrs([(LSTAR, 0)]);
    expect_eq("KVM_GET_MSRS of LSTAR", vm.ioctl_with(abi::KVM_GET_MSRS, &mut lstar), Ok(1))?;
    expect_eq("LSTAR after the refused write", lstar.entries[0].data, 0xFFFF_FFFF_8100_0040)
}
