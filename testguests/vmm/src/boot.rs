//! Linux's x86 boot protocol, 32-bit entry: the bzImage's protected-mode
//! kernel at 1 MiB, the "zero page" (`struct boot_params`) with the setup
//! header, the memory map and where the command line and the initramfs
//! are, and the processor in flat 32-bit protected mode with paging off,
//! ESI pointing at the zero page. The kernel's own decompressor then
//! builds page tables and goes to long mode itself.
//!
//! `linux-loader` reads the bzImage and its setup header and writes the
//! zero page; this file chooses where everything goes.
//!
//! See: Documentation/x86/boot.rst, "32-bit BOOT PROTOCOL".
//!
//! Guest-physical layout (no BIOS, so low memory is ours):
//!
//! ```text
//! 0x0000_0500  boot GDT (null, null, code 0x10, data 0x18)
//! 0x0000_7000  zero page
//! 0x0002_0000  command line
//! 0x0009_FC00  end of low RAM (an EBDA would start here)
//! 0x0010_0000  protected-mode kernel (the bzImage's payload)
//! ...          free for the kernel
//! top - N      the initramfs, page-aligned, as high as allowed
//! ```

use anyhow::{Context, Result, bail};
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{KernelLoader, bzimage::BzImage, load_cmdline};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

pub const BOOT_GDT: u64 = 0x500;
pub const ZERO_PAGE: u64 = 0x7000;
pub const CMDLINE: u64 = 0x2_0000;
/// Linux 6.1's COMMAND_LINE_SIZE on x86.
pub const CMDLINE_MAX: usize = 2048;
pub const LOW_RAM_END: u64 = 0x9_FC00;
pub const HIGH_RAM_START: u64 = 0x10_0000;

/// e820 memory types.
pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// The boot GDT's selectors, which the protocol requires.
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;

/// `setup_header.loadflags`: the kernel is loaded high (bzImage).
const LOADED_HIGH: u8 = 0x01;
/// `type_of_loader`: "undefined" loader.
const LOADER_UNDEFINED: u8 = 0xFF;

/// A segment register as the hypervisors take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub base: u64,
    /// Byte-granular: already scaled by G.
    pub limit: u32,
    pub type_: u8,
    pub db: u8,
    pub g: u8,
}

/// The processor state the 32-bit boot protocol asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub code: Segment,
    /// DS, ES, FS, GS and SS.
    pub data: Segment,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub cr0: u64,
    pub rip: u64,
    pub rsi: u64,
    pub rflags: u64,
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820 {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The memory map of a guest with `memory_size` bytes: low RAM below the
/// EBDA, the legacy hole reserved, RAM from 1 MiB to the end.
pub fn e820_map(memory_size: u64) -> Result<Vec<E820>> {
    if memory_size <= HIGH_RAM_START {
        bail!("{memory_size:#x} bytes of memory: a Linux guest needs more than 1 MiB");
    }
    Ok(vec![
        E820 { addr: 0, size: LOW_RAM_END, kind: E820_RAM },
        E820 { addr: LOW_RAM_END, size: HIGH_RAM_START - LOW_RAM_END, kind: E820_RESERVED },
        E820 { addr: HIGH_RAM_START, size: memory_size - HIGH_RAM_START, kind: E820_RAM },
    ])
}

/// Where the initramfs goes: as high as memory and the kernel's
/// `initrd_addr_max` allow, page-aligned, above the kernel's `reserved_end`.
pub fn initrd_address(memory_size: u64, initrd_size: u64, addr_max: u32, reserved_end: u64) -> Result<u64> {
    let top = memory_size.min(u64::from(addr_max) + 1);
    let start = top.checked_sub(initrd_size).map(|a| a & !0xFFF);
    match start {
        Some(start) if start >= reserved_end => Ok(start),
        _ => bail!(
            "an initramfs of {initrd_size} bytes does not fit between the kernel (up to {reserved_end:#x}) \
             and {top:#x}: give the guest more memory"
        ),
    }
}

/// The boot GDT: two null entries, then flat 4 GiB code and data.
pub fn boot_gdt() -> [u64; 4] {
    [0, 0, 0x00CF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF]
}

/// What to boot.
pub struct BootImage<'a> {
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    pub cmdline: &'a str,
}

/// Loads `image` into `memory` (which this process maps with `flags`) and
/// returns the processor state to start from.
pub fn load(memory: &mut [u8], flags: i32, image: &BootImage) -> Result<BootState> {
    let memory_size = memory.len() as u64;
    let guest = guest_memory(memory, flags)?;
    let loaded = BzImage::load(&guest, None, &mut std::io::Cursor::new(image.kernel), Some(GuestAddress(HIGH_RAM_START)))
        .context("loading the bzImage")?;
    let Some(mut header) = loaded.setup_header else { bail!("the bzImage has no setup header") };
    let version = header.version;
    if version < 0x0206 {
        bail!("boot protocol {version:#x}: this VMM needs 2.06 or later (Linux 2.6.22+)");
    }
    let mut cmdline = Cmdline::new(CMDLINE_MAX).context("command line")?;
    cmdline.insert_str(image.cmdline).context("command line")?;
    load_cmdline(&guest, GuestAddress(CMDLINE), &cmdline).context("writing the command line")?;
    // The kernel decompresses itself in place: it needs `init_size` bytes from 1 MiB.
    let reserved_end = HIGH_RAM_START + u64::from(header.init_size).max(loaded.kernel_end - HIGH_RAM_START);
    let initrd = initrd_address(memory_size, image.initrd.len() as u64, header.initrd_addr_max, reserved_end)?;
    guest.write_slice(image.initrd, GuestAddress(initrd)).context("writing the initramfs")?;

    header.type_of_loader = LOADER_UNDEFINED;
    header.loadflags |= LOADED_HIGH;
    header.cmd_line_ptr = CMDLINE as u32;
    header.cmdline_size = image.cmdline.len() as u32;
    header.ramdisk_image = initrd as u32;
    header.ramdisk_size = image.initrd.len() as u32;
    let mut params = boot_params { hdr: header, ..Default::default() };
    let map = e820_map(memory_size)?;
    for (slot, entry) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry { addr: entry.addr, size: entry.size, r#type: entry.kind };
    }
    params.e820_entries = map.len() as u8;
    LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&BootParams::new(&params, GuestAddress(ZERO_PAGE)), &guest)
        .context("writing the zero page")?;
    let gdt: Vec<u8> = boot_gdt().iter().flat_map(|d| d.to_le_bytes()).collect();
    guest.write_slice(&gdt, GuestAddress(BOOT_GDT)).context("writing the boot GDT")?;
    Ok(boot_state(u64::from(header.code32_start)))
}

/// Flat 32-bit protected mode at `entry`, interrupts off, ESI at the zero page.
pub fn boot_state(entry: u64) -> BootState {
    let flat = |selector, type_| Segment { selector, base: 0, limit: 0xFFFF_FFFF, type_, db: 1, g: 1 };
    BootState {
        code: flat(BOOT_CS, 0xB), // execute/read, accessed
        data: flat(BOOT_DS, 0x3), // read/write, accessed
        gdt_base: BOOT_GDT,
        gdt_limit: (boot_gdt().len() * 8 - 1) as u16,
        cr0: 0x11, // PE, and ET as on every processor since the 486
        rip: entry,
        rsi: ZERO_PAGE,
        rflags: 0x2,
    }
}

/// A `vm-memory` view of the backend's mapping, for `linux-loader`.
fn guest_memory(memory: &mut [u8], flags: i32) -> Result<GuestMemoryMmap> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: `memory` is a live mapping of exactly this size with these
    // protections and flags; the view does not unmap it (it was built
    // raw), and it lives only within this function's caller, while
    // `memory` is mutably borrowed.
    let region = unsafe { MmapRegion::<()>::build_raw(memory.as_mut_ptr(), memory.len(), prot, flags) }
        .context("viewing guest memory")?;
    let Some(region) = GuestRegionMmap::new(region, GuestAddress(0)) else { bail!("guest memory overflows") };
    GuestMemoryMmap::from_regions(vec![region]).context("viewing guest memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_map_leaves_the_legacy_hole_out_of_ram() {
        let map = e820_map(128 << 20).unwrap();
        assert_eq!(map[0], E820 { addr: 0, size: 0x9_FC00, kind: E820_RAM });
        assert_eq!(map[1], E820 { addr: 0x9_FC00, size: 0x6_0400, kind: E820_RESERVED });
        assert_eq!(map[2], E820 { addr: 0x10_0000, size: (128 << 20) - 0x10_0000, kind: E820_RAM });
        let total: u64 = map.iter().map(|e| e.size).sum();
        assert_eq!(total, 128 << 20, "the entries tile memory without gaps or overlaps");
        assert!(e820_map(0x10_0000).is_err());
    }

    #[test]
    fn the_initramfs_goes_high_and_page_aligned() {
        assert_eq!(initrd_address(128 << 20, 0x1801, 0x7FFF_FFFF, 0x100_0000).unwrap(), (128 << 20) - 0x2000);
        // The kernel's limit wins over a bigger memory.
        assert_eq!(initrd_address(4 << 30, 0x1000, 0x3FFF_FFFF, 0x100_0000).unwrap(), 0x4000_0000 - 0x1000);
        let error = initrd_address(16 << 20, 15 << 20, 0x7FFF_FFFF, 0x80_0000).unwrap_err().to_string();
        assert!(error.contains("does not fit"), "{error}");
    }

    #[test]
    fn the_boot_gdt_holds_flat_code_and_data_at_the_protocols_selectors() {
        let gdt = boot_gdt();
        let state = boot_state(0x10_0000);
        let descriptor = |selector: u16| gdt[usize::from(selector) / 8];
        // Type in bits 40..44, S at 44, P at 47, G at 55, D/B at 54.
        assert_eq!((descriptor(state.code.selector) >> 40) & 0xF, u64::from(state.code.type_));
        assert_eq!((descriptor(state.data.selector) >> 40) & 0xF, u64::from(state.data.type_));
        for d in [descriptor(0x10), descriptor(0x18)] {
            assert_eq!(d & 0xFFFF, 0xFFFF, "limit 0xFFFFF pages: 4 GiB");
            assert_eq!((d >> 44) & 1, 1);
            assert_eq!((d >> 47) & 1, 1);
            assert_eq!((d >> 54) & 3, 3);
        }
        assert_eq!(usize::from(state.gdt_limit) + 1, gdt.len() * 8);
        assert_eq!((state.rip, state.rsi, state.cr0 & 1), (0x10_0000, ZERO_PAGE, 1));
    }

    /// A bzImage's first sectors: boot sector, then the setup header at 0x1F1.
    fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut image = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        image[0x1F1] = setup_sects;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        image[0x211] = LOADED_HIGH;
        image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        image[0x22C..0x230].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        image[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes()); // init_size
        image.extend_from_slice(payload);
        image
    }

    #[test]
    fn a_bzimage_loads_with_its_zero_page_command_line_and_initramfs() {
        let mut mapping = crate::backend::mapping::Mapping::anonymous(16 << 20).unwrap();
        let flags = mapping.flags();
        let memory = mapping.as_mut_slice();
        let kernel = fake_bzimage(b"KERNEL");
        let image = BootImage { kernel: &kernel, initrd: b"INITRD", cmdline: "console=ttyS0" };
        let state = load(memory, flags, &image).unwrap();
        assert_eq!(state.rip, 0x10_0000);
        assert_eq!(&memory[0x10_0000..0x10_0006], b"KERNEL");
        assert_eq!(&memory[0x2_0000..0x2_000E], b"console=ttyS0\0");
        let initrd = (16 << 20) - 0x1000;
        assert_eq!(&memory[initrd..initrd + 6], b"INITRD");
        let zero_page = &memory[0x7000..0x8000];
        let u32_at = |offset: usize| u32::from_le_bytes(zero_page[offset..offset + 4].try_into().unwrap());
        assert_eq!(zero_page[0x210], LOADER_UNDEFINED, "type_of_loader");
        assert_eq!(u32_at(0x218), initrd as u32, "ramdisk_image");
        assert_eq!(u32_at(0x21C), 6, "ramdisk_size");
        assert_eq!(u32_at(0x228), 0x2_0000, "cmd_line_ptr");
        assert_eq!(zero_page[0x1E8], 3, "e820_entries");
        assert_eq!(u32_at(0x2D0 + 20 * 2 + 16), E820_RAM, "the third entry is RAM");
        assert_eq!(&memory[0x510..0x518], &0x00CF_9B00_0000_FFFFu64.to_le_bytes());
    }
}
