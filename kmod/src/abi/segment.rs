//@ stage 2
//! `kvm_segment` and the descriptors of stage 01: what KVM reports for a
//! segment register loaded from a descriptor, and back.

use super::KvmSegment;
use crate::segments::{SegmentDescriptor, Selector, TYPE_ACCESSED, TYPE_DATA_READ_WRITE};

// ANCHOR: segment_conversion
impl KvmSegment {
    /// The register KVM reports after the processor loads `selector`, whose
    /// descriptor is `descriptor`: the descriptor's fields unpacked one per
    /// byte, the limit scaled to bytes, and `unusable` set exactly when the
    /// segment is not present (a null selector loads the all-zero null
    /// descriptor, whose P is 0).
    pub fn from_descriptor(selector: Selector, descriptor: &SegmentDescriptor) -> KvmSegment {
        let d = descriptor;
        KvmSegment {
            base: u64::from(d.base),
            limit: d.effective_limit(),
            selector: selector.0,
            type_: d.type_ & 0xF,
            present: u8::from(d.present),
            dpl: d.dpl & 3,
            db: u8::from(d.db),
            s: u8::from(d.s),
            l: u8::from(d.l),
            g: u8::from(d.g),
            avl: u8::from(d.avl),
            unusable: u8::from(!d.present),
            padding: 0,
        }
    }

    /// The descriptor that, loaded into a segment register, gives this
    /// register's hidden part; `None` if no 8-byte descriptor can: a base
    /// above 4 GiB (only FS and GS, through MSRs, or a 16-byte system
    /// descriptor hold one), or a limit that G cannot express. An unusable
    /// segment yields a descriptor with P clear.
    pub fn to_descriptor(&self) -> Option<SegmentDescriptor> {
        Some(SegmentDescriptor {
            base: u32::try_from(self.base).ok()?,
            limit: SegmentDescriptor::limit_field(self.limit, self.g != 0)?,
            type_: self.type_ & 0xF,
            s: self.s != 0,
            dpl: self.dpl & 3,
            present: self.present != 0 && self.unusable == 0,
            avl: self.avl != 0,
            l: self.l != 0,
            db: self.db != 0,
            g: self.g != 0,
        })
    }

    /// The segment register after a real-mode load of `selector`: base
    /// `selector * 16`, a 64 KiB limit, and a read/write, accessed data
    /// segment — what the processor has after reset (the values KVM's vCPU
    /// setup writes), except that CS's type is execute/read.
    pub fn real_mode(selector: u16) -> KvmSegment {
        KvmSegment {
            base: u64::from(selector) << 4,
            limit: 0xFFFF,
            selector,
            type_: TYPE_DATA_READ_WRITE | TYPE_ACCESSED,
            present: 1,
            s: 1,
            ..KvmSegment::default()
        }
    }
}
// ANCHOR_END: segment_conversion

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::Table;

    // ANCHOR: segment_tests
    #[test]
    fn a_flat_code_segment_unpacks_to_kvm_segment() {
        let code = SegmentDescriptor::from_bits(0x00CF_9A00_0000_FFFF);
        let seg = KvmSegment::from_descriptor(Selector(0x08), &code);
        let expected = KvmSegment {
            base: 0,
            limit: 0xFFFF_FFFF,
            selector: 0x08,
            type_: 0xA,
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
        assert_eq!(seg, expected);
        assert_eq!(seg.to_descriptor(), Some(code));
    }

    #[test]
    fn a_64_bit_code_segment_has_l_set_and_db_clear() {
        let seg = KvmSegment::from_descriptor(Selector(0x10), &SegmentDescriptor::from_bits(0x00AF_9A00_0000_FFFF));
        assert_eq!((seg.l, seg.db, seg.g, seg.limit), (1, 0, 1, 0xFFFF_FFFF));
    }

    #[test]
    fn a_64_bit_tss_keeps_its_byte_limit() {
        let tss = SegmentDescriptor::tss64(0x0012_3000, 0x67);
        let seg = KvmSegment::from_descriptor(Selector::new(4, Table::Gdt, 0), &tss);
        assert_eq!((seg.s, seg.type_, seg.g, seg.limit, seg.base), (0, 9, 0, 0x67, 0x12_3000));
        assert_eq!(seg.selector, 0x20);
    }

    #[test]
    fn a_not_present_segment_is_unusable_and_stays_so() {
        let seg = KvmSegment::from_descriptor(Selector(0), &SegmentDescriptor::NULL);
        assert_eq!((seg.present, seg.unusable), (0, 1));
        let back = KvmSegment { present: 1, ..seg }.to_descriptor();
        assert_eq!(back.map(|d| d.present), Some(false));
    }

    #[test]
    fn descriptors_round_trip_through_kvm_segment() {
        for bits in SAMPLE_DESCRIPTORS {
            let d = SegmentDescriptor::from_bits(bits);
            let seg = KvmSegment::from_descriptor(Selector(0x2B), &d);
            assert_eq!(seg.to_descriptor().map(|d| d.to_bits()), Some(bits), "{bits:#018x}");
            assert_eq!(seg.selector, 0x2B);
        }
    }

    /// Present descriptors of every kind: flat code and data, 64-bit code,
    /// a TSS, a real-mode-like data segment, and a few odd bit mixes.
    const SAMPLE_DESCRIPTORS: [u64; 8] = [
        0x00CF_9A00_0000_FFFF,
        0x00CF_9200_0000_FFFF,
        0x00AF_9A00_0000_FFFF,
        0x1200_8934_5678_0067,
        0x0000_930F_0000_FFFF,
        0xFF5F_FDFF_FFFF_FFFF,
        0x0011_F100_0000_0000,
        0xAB80_8BCD_EF01_2345,
    ];

    #[test]
    fn limits_g_cannot_express_have_no_descriptor() {
        let byte_granular = KvmSegment { limit: 0x10_0000, g: 0, present: 1, ..KvmSegment::default() };
        assert_eq!(byte_granular.to_descriptor(), None);
        let page_granular = KvmSegment { limit: 0x1000, g: 1, present: 1, ..KvmSegment::default() };
        assert_eq!(page_granular.to_descriptor(), None);
        let high_base = KvmSegment { base: 1 << 32, ..KvmSegment::default() };
        assert_eq!(high_base.to_descriptor(), None);
    }

    #[test]
    fn real_mode_segments_are_selector_times_16() {
        let cs = KvmSegment::real_mode(0xF000);
        assert_eq!((cs.base, cs.limit, cs.selector), (0xF_0000, 0xFFFF, 0xF000));
        assert_eq!((cs.type_, cs.present, cs.s, cs.db, cs.g, cs.unusable), (3, 1, 1, 0, 0, 0));
        let d = cs.to_descriptor().map(|d| d.to_bits());
        assert_eq!(d, Some(0x0000_930F_0000_FFFF));
    }
    // ANCHOR_END: segment_tests
}
