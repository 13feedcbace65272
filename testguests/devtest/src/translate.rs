//! `KVM_TRANSLATE` (stage 08): the guest's own page tables, walked for a
//! debugger, with the answers and errnos of 2006.

use crate::sys::{Check, Mapping, Vm, errno_name, expect_eq, expect_errno};
use rkvm::abi::{self, KvmTranslation};

fn translate(vm: &Vm, vcpu: u32, linear: u64) -> Result<KvmTranslation, i32> {
    let mut tr = KvmTranslation { linear_address: linear, vcpu, ..KvmTranslation::default() };
    vm.ioctl_with(abi::KVM_TRANSLATE, &mut tr).map(|_| tr)
}

fn ok<T>(what: &str, r: Result<T, i32>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {}", errno_name(e)))
}

fn write_u32(memory: &Mapping, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        memory.write(offset + i, b);
    }
}

fn read_u32(memory: &Mapping, offset: usize) -> u32 {
    u32::from_le_bytes(std::array::from_fn(|i| memory.read(offset + i)))
}

/// (physical address, valid) of a translation.
fn answer(tr: KvmTranslation) -> (u64, u8) {
    (tr.physical_address, tr.valid)
}

/// With paging off a linear address is physical; with 32-bit paging on,
/// the guest's page directory and page table decide, and the walk leaves
/// their accessed bits alone.
pub fn walks_the_guests_tables() -> Check {
    let vm = Vm::open()?;
    ok("KVM_CREATE_VCPU(0)", vm.create_vcpu(0))?;
    ok("slot 0", vm.set_region(0, 0, 0x10_0000))?;
    expect_eq("paging off", answer(ok("KVM_TRANSLATE", translate(&vm, 0, 0x1234))?), (0x1234, 1))?;
    let memory = vm.map(0, 0x10_0000)?;
    // PD at 0x10000: entry 0 -> page table at 0x11000; entry 0x100
    // (linear 0x4000_0000) not present. PT entry 5 -> frame 0x23000.
    write_u32(&memory, 0x10000, 0x11000 | 3);
    write_u32(&memory, 0x11000 + 5 * 4, 0x23000 | 3);
    let mut sregs = ok("KVM_GET_SREGS", vm.get_sregs(0))?;
    (sregs.cr0, sregs.cr3, sregs.cr4) = (0x8000_0011, 0x10000, 0);
    ok("KVM_SET_SREGS", vm.set_sregs(&sregs))?;
    let mapped = ok("KVM_TRANSLATE", translate(&vm, 0, 0x5123))?;
    expect_eq("a mapped page", (answer(mapped), mapped.writeable, mapped.usermode), ((0x23123, 1), 1, 0))?;
    expect_eq("a page whose PTE is not present", answer(ok("KVM_TRANSLATE", translate(&vm, 0, 0x6000))?).1, 0)?;
    expect_eq("a page whose PDE is not present", answer(ok("KVM_TRANSLATE", translate(&vm, 0, 0x4000_0000))?).1, 0)?;
    expect_eq("the PTE's accessed bit after the walks", read_u32(&memory, 0x11000 + 5 * 4), 0x23003)?;
    expect_eq("the PDE's accessed bit after the walks", read_u32(&memory, 0x10000), 0x11003)
}

/// The errnos of the register ioctls: no vCPU yet, another index, a bad
/// pointer.
pub fn errors() -> Check {
    let vm = Vm::open()?;
    expect_errno("KVM_TRANSLATE before KVM_CREATE_VCPU", translate(&vm, 0, 0), libc::ENOENT)?;
    ok("KVM_CREATE_VCPU(0)", vm.create_vcpu(0))?;
    expect_errno("KVM_TRANSLATE on vCPU 1", translate(&vm, 1, 0), libc::EINVAL)?;
    expect_errno("KVM_TRANSLATE with a null pointer", vm.ioctl(abi::KVM_TRANSLATE, 0), libc::EFAULT)
}
