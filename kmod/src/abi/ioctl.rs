//@ stage 2
//! Ioctl numbers: C's `_IOC` encoding, the fifteen commands of the 2.6.20
//! interface in one table, and the decoding the kernel needs to take a
//! number apart again.

use super::{
    KVMIO, KvmDebugGuest, KvmDirtyLog, KvmInterrupt, KvmMemoryRegion, KvmMsrList, KvmMsrs, KvmRegs, KvmRun, KvmSregs,
    KvmTranslation,
};
use core::mem::size_of;

// ANCHOR: ioc
/// The direction of an ioctl's data, as userspace sees it: `Write` means
/// userspace writes the struct and the kernel reads it. The two bits of
/// `_IOC_NONE`, `_IOC_WRITE` and `_IOC_READ` on x86.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `_IO`: no data, or an integer passed by value.
    None = 0,
    /// `_IOW`: userspace passes a struct in.
    Write = 1,
    /// `_IOR`: the kernel fills a struct.
    Read = 2,
    /// `_IOWR`: both.
    ReadWrite = 3,
}

/// Bits of an ioctl number: `dir:2 | size:14 | type:8 | nr:8`, high to low,
/// as in Linux's `<asm-generic/ioctl.h>`.
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = 8;
const IOC_SIZESHIFT: u32 = 16;
const IOC_DIRSHIFT: u32 = 30;
const IOC_SIZEBITS: u32 = 14;

/// C's `_IOC(dir, type, nr, size)`. Only ever evaluated at compile time;
/// a struct too big for the 14-bit size field fails the build.
pub const fn ioc(dir: Direction, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(size < 1 << IOC_SIZEBITS && ty <= 0xFF && nr <= 0xFF);
    (dir as u32) << IOC_DIRSHIFT | (size as u32) << IOC_SIZESHIFT | ty << IOC_TYPESHIFT | nr << IOC_NRSHIFT
}
// ANCHOR_END: ioc

// ANCHOR: ioctl_table
/// One ioctl: its name, number and the fields the number encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ioctl {
    /// The C name, `KVM_RUN`.
    pub name: &'static str,
    /// The number userspace passes to `ioctl(2)`.
    pub cmd: u32,
    pub dir: Direction,
    /// The command's index within [`KVMIO`].
    pub nr: u8,
    /// The size of the argument's type; 0 for `_IO`.
    pub size: usize,
    /// The argument's Rust type, or `""` for `_IO`.
    pub arg: &'static str,
}

/// Defines each ioctl number as a `pub const` and lists all of them in
/// [`IOCTLS`], from one table written like the C header's.
macro_rules! ioctls {
    ($($(#[$doc:meta])* $name:ident = $kind:ident($nr:literal $(, $arg:ty)?);)+) => {
        $(
            $(#[$doc])*
            pub const $name: u32 = ioc(ioctls!(@dir $kind), KVMIO, $nr, ioctls!(@size $($arg)?));
        )+

        /// Every ioctl of the 2.6.20 ABI, in number order.
        pub const IOCTLS: [Ioctl; [$($nr),+].len()] = [$(Ioctl {
            name: stringify!($name),
            cmd: $name,
            dir: ioctls!(@dir $kind),
            nr: $nr,
            size: ioctls!(@size $($arg)?),
            arg: stringify!($($arg)?),
        }),+];
    };
    (@dir _IO) => { Direction::None };
    (@dir _IOR) => { Direction::Read };
    (@dir _IOW) => { Direction::Write };
    (@dir _IOWR) => { Direction::ReadWrite };
    (@size) => { 0 };
    (@size $arg:ty) => { size_of::<$arg>() };
}

ioctls! {
    /// Returns [`KVM_API_VERSION`](super::KVM_API_VERSION).
    KVM_GET_API_VERSION    = _IO(1);
    /// Runs a vCPU until it exits to userspace.
    KVM_RUN                = _IOWR(2, KvmRun);
    KVM_GET_REGS           = _IOWR(3, KvmRegs);
    KVM_SET_REGS           = _IOW(4, KvmRegs);
    KVM_GET_SREGS          = _IOWR(5, KvmSregs);
    KVM_SET_SREGS          = _IOW(6, KvmSregs);
    /// Translates a guest linear address to a guest-physical one.
    KVM_TRANSLATE          = _IOWR(7, KvmTranslation);
    /// Queues an external interrupt.
    KVM_INTERRUPT          = _IOW(8, KvmInterrupt);
    KVM_DEBUG_GUEST        = _IOW(9, KvmDebugGuest);
    /// Creates, resizes or deletes a slot of guest memory.
    KVM_SET_MEMORY_REGION  = _IOW(10, KvmMemoryRegion);
    /// Creates a vCPU; the argument is its slot number, passed by value
    /// (the `int` in the number is only its size).
    KVM_CREATE_VCPU        = _IOW(11, i32);
    KVM_GET_DIRTY_LOG      = _IOW(12, KvmDirtyLog);
    KVM_GET_MSRS           = _IOWR(13, KvmMsrs);
    KVM_SET_MSRS           = _IOWR(14, KvmMsrs);
    KVM_GET_MSR_INDEX_LIST = _IOWR(15, KvmMsrList);
}
// ANCHOR_END: ioctl_table

// ANCHOR: decode_ioctl
/// The four fields of an ioctl number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoctlFields {
    pub dir: Direction,
    /// `_IOC_TYPE`: which driver; [`KVMIO`] for ours.
    pub ty: u8,
    /// `_IOC_NR`: which command of that driver.
    pub nr: u8,
    /// `_IOC_SIZE`: the size of the argument's type.
    pub size: u16,
}

/// Splits an ioctl number into its fields: `_IOC_DIR`, `_IOC_TYPE`,
/// `_IOC_NR` and `_IOC_SIZE` at once. Every `u32` splits; none is refused.
pub fn decode_ioctl(cmd: u32) -> IoctlFields {
    //@ exercise E2.1
    //@ instruction: Take `cmd` apart into the four fields `ioc` packs
    //@+ (Linux's `<asm-generic/ioctl.h>`, redrawn in the chapter). What
    //@+ must hold: for every `u32`, packing the fields again with `ioc`
    //@+ gives `cmd` back, so every number splits, other drivers' too; and
    //@+ userspace chooses `cmd`, so nothing may panic. The `e2_1` tests
    //@+ decode the table's numbers and random ones.
    //@ hint: `ioc` and the `IOC_*` constants above it say where each field
    //@+ lies: shift each one down, and keep only its width.
    //@ hint: A cast to `u8` keeps 8 bits; the size has 14, so it needs a
    //@+ mask, `(1 << IOC_SIZEBITS) - 1`. The direction has two bits and
    //@+ four values, all of them named: `cmd >> IOC_DIRSHIFT` is 0 to 3.
    //@ hint: `let dir = match cmd >> IOC_DIRSHIFT { 0 => Direction::None,
    //@+ 1 => Direction::Write, 2 => Direction::Read, _ =>
    //@+ Direction::ReadWrite };` then `ty: (cmd >> IOC_TYPESHIFT) as u8`,
    //@+ `nr` alike, and the size masked.
    let dir = match cmd >> IOC_DIRSHIFT {
        0 => Direction::None,
        1 => Direction::Write,
        2 => Direction::Read,
        _ => Direction::ReadWrite,
    };
    IoctlFields {
        dir,
        ty: (cmd >> IOC_TYPESHIFT) as u8,
        nr: (cmd >> IOC_NRSHIFT) as u8,
        size: ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as u16,
    }
    //@ end
}
// ANCHOR_END: decode_ioctl

#[cfg(test)]
mod tests {
    use super::*;

    // ANCHOR: golden_ioctls
    #[test]
    fn ioctl_numbers_match_the_2_6_20_header() {
        assert_eq!(KVM_GET_API_VERSION, 0x0000_AE01);
        assert_eq!(KVM_RUN, 0xC048_AE02);
        assert_eq!(KVM_GET_REGS, 0xC098_AE03);
        assert_eq!(KVM_SET_REGS, 0x4098_AE04);
        assert_eq!(KVM_GET_SREGS, 0xC140_AE05);
        assert_eq!(KVM_SET_SREGS, 0x4140_AE06);
        assert_eq!(KVM_TRANSLATE, 0xC020_AE07);
        assert_eq!(KVM_INTERRUPT, 0x4008_AE08);
        assert_eq!(KVM_DEBUG_GUEST, 0x4050_AE09);
        assert_eq!(KVM_SET_MEMORY_REGION, 0x4018_AE0A);
        assert_eq!(KVM_CREATE_VCPU, 0x4004_AE0B);
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_AE0C);
        assert_eq!(KVM_GET_MSRS, 0xC008_AE0D);
        assert_eq!(KVM_SET_MSRS, 0xC008_AE0E);
        assert_eq!(KVM_GET_MSR_INDEX_LIST, 0xC004_AE0F);
    }
    // ANCHOR_END: golden_ioctls

    #[test]
    fn the_table_lists_all_fifteen_ioctls_in_number_order() {
        assert_eq!(IOCTLS.len(), 15);
        for (i, ioctl) in IOCTLS.iter().enumerate() {
            assert_eq!(usize::from(ioctl.nr), i + 1, "{}", ioctl.name);
            assert!(ioctl.name.starts_with("KVM_"));
        }
    }

    #[test]
    fn each_table_entry_encodes_its_own_fields() {
        for i in IOCTLS {
            assert_eq!(i.cmd, ioc(i.dir, KVMIO, u32::from(i.nr), i.size), "{}", i.name);
        }
    }

    #[test]
    fn ioc_places_each_field() {
        assert_eq!(ioc(Direction::None, 0, 0, 0), 0);
        assert_eq!(ioc(Direction::Read, 0, 0, 0), 0x8000_0000);
        assert_eq!(ioc(Direction::Write, 0, 0, 0), 0x4000_0000);
        assert_eq!(ioc(Direction::None, 0, 0, 0x3FFF), 0x3FFF_0000);
        assert_eq!(ioc(Direction::None, 0xAE, 0, 0), 0xAE00);
        assert_eq!(ioc(Direction::None, 0, 0xFF, 0), 0xFF);
    }

    mod e2_1 {
        use super::super::*;

        #[test]
        fn every_ioctl_decodes_to_its_table_entry() {
            for i in IOCTLS {
                let f = decode_ioctl(i.cmd);
                assert_eq!((f.dir, f.ty, f.nr, usize::from(f.size)), (i.dir, 0xAE, i.nr, i.size), "{}", i.name);
            }
        }

        /// `ioc` of the fields gives the number back, for any number.
        #[test]
        fn random_numbers_encode_again_to_themselves() {
            let mut rng = crate::test_rng::Rng::new(0xE21);
            for _ in 0..10_000 {
                let cmd = rng.next() as u32;
                let f = decode_ioctl(cmd);
                let again = ioc(f.dir, u32::from(f.ty), u32::from(f.nr), usize::from(f.size));
                assert_eq!(again, cmd, "{cmd:#x} decoded as {f:?}");
            }
        }

        #[test]
        fn decoding_handles_every_direction_and_the_widest_size() {
            let f = decode_ioctl(0xFFFF_FFFF);
            assert_eq!((f.dir, f.ty, f.nr, f.size), (Direction::ReadWrite, 0xFF, 0xFF, 0x3FFF));
            assert_eq!(decode_ioctl(0x8004_5401).dir, Direction::Read);
            assert_eq!(decode_ioctl(0x4000_0000).dir, Direction::Write);
            assert_eq!(decode_ioctl(0x5401), IoctlFields { dir: Direction::None, ty: 0x54, nr: 1, size: 0 });
        }
    }
}
