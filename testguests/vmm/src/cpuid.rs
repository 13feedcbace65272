//! The CPUID table the guest sees.
//!
//! On Linux's KVM the table starts from `KVM_GET_SUPPORTED_CPUID` and goes
//! to the kernel with `KVM_SET_CPUID2`; on rkvm (2006's ABI, where `cpuid`
//! exits to userspace) it starts from the host's own `cpuid` and the VMM
//! answers each exit from it. Either way it is filtered to the machine
//! this VMM builds, the same on both backends:
//!
//! - No local APIC and no I/O APIC, only the 8259 pair: the APIC, x2APIC
//!   and TSC-deadline bits go, or the guest would program a local APIC
//!   that is not there.
//! - No hypervisor leaves (0x4000_0000 and up): they would offer the guest
//!   kvmclock and other paravirtual features that live in MSRs 2006's KVM
//!   never had.
//! - No XSAVE: 2006's ABI knows nothing of XSAVE state (no XSETBV exit, no
//!   `KVM_GET_XSAVE`). On Linux's KVM in L1 under QEMU TCG, a guest that
//!   saw XSAVE also warned "XSAVE consistency problem: size 832 !=
//!   kernel_size 576": leaf 0xD's EBX did not follow the XCR0 it had set.
//!   Without XSAVE the kernel uses FXSAVE, as every x86-64 can.
//! - What rkvm's vCPU does not have ([`filter_for_rkvm`]): leaf 7, PCID,
//!   RDTSCP and 1 GiB pages. Linux's KVM has them, but a machine that
//!   differed by backend would boot differently ("Using GB pages for
//!   direct mapping" on one only), and `cargo xtask test` compares the
//!   two consoles line by line.
//! - The hypervisor bit (leaf 1, ECX bit 31) set, on both: the host's
//!   table under QEMU has it and Linux's KVM's does not, and the guest's
//!   PMU probe says "PMU not available due to virtualization" with it and
//!   "Broken PMU hardware detected" without.

/// One leaf (and subleaf) of the table, in the shape of `kvm_cpuid_entry2`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub function: u32,
    pub index: u32,
    /// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the leaf has subleaves in ECX.
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (sic, as Linux spells it).
pub const SIGNIFICANT_INDEX: u32 = 1;

// Leaf 1.
const ECX_XSAVE: u32 = 1 << 26;
const ECX_OSXSAVE: u32 = 1 << 27;
const ECX_AVX: u32 = 1 << 28;
const ECX_X2APIC: u32 = 1 << 21;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const EDX_APIC: u32 = 1 << 9;
const ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 7, subleaf 0.
const EBX_AVX2: u32 = 1 << 5;
const EBX_AVX512F: u32 = 1 << 16;
// Leaf 0x8000_0001.
const ECX_EXTAPIC: u32 = 1 << 3;
const EDX_AMD_APIC: u32 = 1 << 9;

/// The hypervisor leaves: 0x4000_0000 to 0x4FFF_FFFF.
fn is_hypervisor_leaf(function: u32) -> bool {
    function & 0xF000_0000 == 0x4000_0000
}

/// Filters `table` for this VMM's machine (see the module's comment).
pub fn filter(table: &mut Vec<Entry>) {
    table.retain(|e| !is_hypervisor_leaf(e.function) && e.function != 0xD);
    for entry in table.iter_mut() {
        match (entry.function, entry.index) {
            (1, _) => {
                entry.edx &= !EDX_APIC;
                entry.ecx &= !(ECX_X2APIC | ECX_TSC_DEADLINE);
                // AVX needs XSAVE; OSXSAVE mirrors CR4, which no OS here sets.
                entry.ecx &= !(ECX_XSAVE | ECX_OSXSAVE | ECX_AVX);
                entry.ecx |= ECX_HYPERVISOR;
            }
            (7, 0) => entry.ebx &= !(EBX_AVX2 | EBX_AVX512F),
            (0x8000_0001, _) => {
                entry.edx &= !EDX_AMD_APIC;
                entry.ecx &= !ECX_EXTAPIC;
            }
            _ => {}
        }
    }
    filter_for_rkvm(table);
}

/// Takes out of `table` what rkvm's vCPU does not have (and [`filter`],
/// so that both backends build one machine): the module lets a guest set CR4
/// bits 10:0 only and keeps only 2006's MSRs, so a guest that saw
/// FSGSBASE, PCID, SMEP, SMAP, UMIP or the other leaf-7 features would
/// set a CR4 bit that is #GP, and one that saw RDTSCP would write
/// TSC_AUX, which is #GP too. Leaf 7 did not exist in 2006: it is
/// emptied. 1 GiB pages go as well: the shadow MMU maps 4 KiB, 2 MiB and
/// 4 MiB guest pages. And APERF and MPERF (leaf 6, ECX bit 0): a guest
/// that saw them reads MSRs 0xE7 and 0xE8 at every tick, which rkvm does
/// not keep (under Bochs, whose processor has them, Linux then warned
/// "unchecked MSR access error: RDMSR from 0xe8").
pub fn filter_for_rkvm(table: &mut [Entry]) {
    const ECX_APERFMPERF: u32 = 1 << 0;
    const ECX_PCID: u32 = 1 << 17;
    const EDX_PDPE1GB: u32 = 1 << 26;
    const EDX_RDTSCP: u32 = 1 << 27;
    for entry in table.iter_mut() {
        match entry.function {
            1 => entry.ecx &= !ECX_PCID,
            6 => entry.ecx &= !ECX_APERFMPERF,
            7 => (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0),
            0x8000_0001 => entry.edx &= !(EDX_PDPE1GB | EDX_RDTSCP),
            _ => {}
        }
    }
}

/// The answer to `cpuid` with `leaf` in EAX and `subleaf` in ECX: the
/// matching entry, or zeros for a leaf the table lacks (as AMD does).
pub fn lookup(table: &[Entry], leaf: u32, subleaf: u32) -> [u32; 4] {
    table
        .iter()
        .find(|e| e.function == leaf && (e.flags & SIGNIFICANT_INDEX == 0 || e.index == subleaf))
        .map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
}

/// Leaves with subleaves that the table lists one by one, and how many.
fn subleaves(leaf: u32) -> Option<u32> {
    match leaf {
        4 | 0xB | 0x1F | 0x8000_001D => Some(8),
        7 | 0x14 => Some(2),
        0xD => Some(64),
        _ => None,
    }
}

/// The host processor's own table, as this process sees it: the basic
/// and extended ranges.
pub fn host_table() -> Vec<Entry> {
    let mut table = Vec::new();
    for base in [0u32, 0x8000_0000] {
        let max = host_cpuid(base, 0)[0].min(base + 0x40);
        for leaf in base..=max {
            let (count, flags) = subleaves(leaf).map_or((1, 0), |n| (n, SIGNIFICANT_INDEX));
            for index in 0..count {
                let [eax, ebx, ecx, edx] = host_cpuid(leaf, index);
                table.push(Entry { function: leaf, index, flags, eax, ebx, ecx, edx });
            }
        }
    }
    table
}

fn host_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = std::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

#[cfg(test)]
mod tests {

    #[test]
    fn rkvm_guests_see_no_leaf_7_pcid_rdtscp_aperfmperf_or_1g_pages() {
        let mut table = vec![
            Entry { function: 1, ecx: u32::MAX, ..Entry::default() },
            Entry { function: 6, ecx: 0b11, ..Entry::default() },
            Entry { function: 7, eax: 1, ebx: 1, ecx: 1 << 22, edx: 1, ..Entry::default() },
            Entry { function: 0x8000_0001, edx: u32::MAX, ..Entry::default() },
        ];
        filter_for_rkvm(&mut table);
        assert_eq!(table[0].ecx, !(1 << 17));
        assert_eq!(table[1].ecx, 0b10, "APERF and MPERF go");
        assert_eq!((table[2].eax, table[2].ebx, table[2].ecx, table[2].edx), (0, 0, 0, 0));
        assert_eq!(table[3].edx, !(3 << 26));
    }
    use super::*;

    fn entry(function: u32, ecx: u32, edx: u32) -> Entry {
        Entry { function, ecx, edx, ..Entry::default() }
    }

    fn sample() -> Vec<Entry> {
        vec![
            entry(0, 0, 0),
            entry(1, ECX_XSAVE | ECX_OSXSAVE | ECX_X2APIC | ECX_TSC_DEADLINE | 1, EDX_APIC | 1 << 4),
            Entry { function: 7, flags: SIGNIFICANT_INDEX, ebx: EBX_AVX2 | 1, ..Entry::default() },
            entry(0xD, 0, 0),
            entry(0x4000_0000, 0, 0),
            entry(0x4000_0001, 0, 0),
            entry(0x8000_0001, ECX_EXTAPIC | 1 << 2, EDX_AMD_APIC | 1 << 29),
        ]
    }

    #[test]
    fn the_apic_the_hypervisor_leaves_and_xsave_are_hidden() {
        let mut table = sample();
        filter(&mut table);
        assert!(table.iter().all(|e| !is_hypervisor_leaf(e.function) && e.function != 0xD));
        let [_, _, ecx, edx] = lookup(&table, 1, 0);
        assert_eq!(edx, 1 << 4, "TSC stays, APIC goes");
        assert_eq!(ecx, 1 | ECX_HYPERVISOR, "SSE3 stays; XSAVE, OSXSAVE, x2APIC and TSC deadline go; a hypervisor is said");
        let [_, _, ecx, edx] = lookup(&table, 0x8000_0001, 0);
        assert_eq!((ecx, edx), (1 << 2, 1 << 29), "SVM and long mode stay");
        assert_eq!(lookup(&table, 7, 0), [0; 4], "leaf 7 is emptied (rkvm has none of it), AVX2 with it");
        assert_eq!(table.len(), 4);
    }

    #[test]
    fn lookup_honours_subleaves_and_answers_zero_for_unknown_leaves() {
        let table = vec![
            Entry { function: 4, index: 0, flags: SIGNIFICANT_INDEX, eax: 10, ..Entry::default() },
            Entry { function: 4, index: 1, flags: SIGNIFICANT_INDEX, eax: 11, ..Entry::default() },
            Entry { function: 2, index: 0, flags: 0, eax: 2, ..Entry::default() },
        ];
        assert_eq!(lookup(&table, 4, 1)[0], 11);
        assert_eq!(lookup(&table, 4, 5), [0; 4]);
        assert_eq!(lookup(&table, 2, 9)[0], 2, "no subleaves: ECX does not matter");
        assert_eq!(lookup(&table, 0x4000_0000, 0), [0; 4]);
    }

    #[test]
    fn the_host_table_starts_with_its_vendor_leaf() {
        let table = host_table();
        assert_eq!(table[0].function, 0);
        assert!(table[0].eax >= 1);
        assert!(table.iter().any(|e| e.function == 0x8000_0000));
    }
}
