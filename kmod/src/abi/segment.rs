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
    /// register's hidden part back, as [`KvmSegment::from_descriptor`]
    /// makes it; `None` if no 8-byte descriptor can.
    pub fn to_descriptor(&self) -> Option<SegmentDescriptor> {
        //@ exercise E2.3
        //@ instruction: Return the 8-byte descriptor from which
        //@+ `from_descriptor` (above) makes this segment again, or `None`
        //@+ if there is none. What must hold: for every `kvm_segment` that
        //@+ userspace may hand over, `Some(d)` exactly when a descriptor
        //@+ gives the segment back, and then `from_descriptor` of `d` (with
        //@+ the segment's selector) is the segment itself, read as the
        //@+ processor would: a nonzero byte is a set flag, `type_` and
        //@+ `dpl` keep their low 4 and 2 bits, and a segment marked
        //@+ unusable stays unusable. Intel SDM Vol. 3A, 3.4.5 and Figure
        //@+ 3-8 say what a descriptor can hold; stage 01 gave you the
        //@+ tools. The `e2_3` tests try random segments.
        //@ hint: Go through `kvm_segment`'s fields one by one and ask, for
        //@+ each, whether every value it may hold has a place in a
        //@+ descriptor. Two of them do not always have one.
        //@ hint: The base is 64 bits here and 32 in a descriptor. The limit
        //@+ is effective here and a field there: exercise E1.4's
        //@+ `SegmentDescriptor::limit_field` answers whether G can express
        //@+ it. `?` on an `Option` returns `None` early; `u32::try_from`
        //@+ gives a `Result`, which `.ok()` turns into one.
        //@ hint: `from_descriptor` makes `unusable` from P, so P must be
        //@+ clear when the segment is unusable: `present: self.present != 0
        //@+ && self.unusable == 0`; `base: u32::try_from(self.base).ok()?`,
        //@+ `limit: SegmentDescriptor::limit_field(self.limit, self.g !=
        //@+ 0)?`, `type_: self.type_ & 0xF`, `dpl: self.dpl & 3`, and each
        //@+ flag `!= 0`.
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
        //@ end
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
    fn a_not_present_segment_is_unusable() {
        let seg = KvmSegment::from_descriptor(Selector(0), &SegmentDescriptor::NULL);
        assert_eq!((seg.present, seg.unusable), (0, 1));
    }

    #[test]
    fn real_mode_segments_are_selector_times_16() {
        let cs = KvmSegment::real_mode(0xF000);
        assert_eq!((cs.base, cs.limit, cs.selector), (0xF_0000, 0xFFFF, 0xF000));
        assert_eq!((cs.type_, cs.present, cs.s, cs.db, cs.g, cs.unusable), (3, 1, 1, 0, 0, 0));
    }
    // ANCHOR_END: segment_tests

    mod e2_3 {
        use super::super::*;

        /// Every descriptor's segment gets that descriptor back: the
        /// samples as `from_descriptor` writes them, random descriptors
        /// also with their bytes written otherwise but read the same.
        #[test]
        fn descriptors_round_trip_through_kvm_segment() {
            for bits in SAMPLE_DESCRIPTORS {
                let d = SegmentDescriptor::from_bits(bits);
                let seg = KvmSegment::from_descriptor(Selector(0x2B), &d);
                assert_eq!(seg.to_descriptor().map(|d| d.to_bits()), Some(bits), "{bits:#018x}");
                assert_eq!(seg.selector, 0x2B);
            }
            let mut rng = crate::test_rng::Rng::new(0xE231);
            for _ in 0..100_000 {
                let bits = rng.next();
                let seg = KvmSegment::from_descriptor(Selector(rng.next() as u16), &SegmentDescriptor::from_bits(bits));
                let seg = dressed(&seg, &mut rng);
                assert_eq!(seg.to_descriptor().map(|d| d.to_bits()), Some(bits), "{seg:?}, from {bits:#018x}");
            }
        }

        /// Present descriptors of every kind: flat code and data, 64-bit
        /// code, a TSS, a real-mode-like data segment, odd bit mixes.
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
        fn a_real_mode_segment_is_a_present_data_descriptor() {
            let d = KvmSegment::real_mode(0xF000).to_descriptor().map(|d| d.to_bits());
            assert_eq!(d, Some(0x0000_930F_0000_FFFF));
        }

        #[test]
        fn an_unusable_segment_stays_unusable() {
            let seg = KvmSegment { present: 1, unusable: 1, ..KvmSegment::real_mode(0) };
            assert_eq!(seg.to_descriptor().map(|d| d.present), Some(false));
        }

        /// The lowest and highest base and limit a descriptor holds (SDM
        /// Vol. 3A, 3.4.5, Figure 3-8; 5.3 for the limit under G): each
        /// such segment gets its descriptor back, and for one step beyond
        /// each, whatever `to_descriptor` answers is true.
        #[test]
        fn the_edges_of_a_descriptors_base_and_limit() {
            let edges = [
                0xFF00_92FF_FFFF_0000_u64, // the highest base
                0x0000_9200_0000_0000,     // the lowest base and limit, bytes
                0x000F_9200_0000_FFFF,     // the highest field, bytes
                0x0080_9200_0000_0000,     // the lowest field, 4 KiB units
                0x00CF_9200_0000_FFFF,     // the highest field, 4 KiB units
            ];
            for bits in edges {
                let seg = KvmSegment::from_descriptor(Selector(0x10), &SegmentDescriptor::from_bits(bits));
                assert_eq!(seg.to_descriptor().map(|d| d.to_bits()), Some(bits), "{seg:?}, from {bits:#018x}");
                for beyond in [
                    KvmSegment { base: seg.base + 1, ..seg },
                    KvmSegment { base: seg.base.wrapping_sub(1), ..seg },
                    KvmSegment { limit: seg.limit.wrapping_add(1), ..seg },
                    KvmSegment { limit: seg.limit.wrapping_sub(1), ..seg },
                ] {
                    assert_answer_is_true(&beyond);
                }
            }
        }

        /// Random segments, many of which no descriptor gives: whatever
        /// `to_descriptor` answers for them is true.
        #[test]
        fn random_segments_get_no_descriptor_that_changes_them() {
            let mut rng = crate::test_rng::Rng::new(0xE23);
            for _ in 0..100_000 {
                assert_answer_is_true(&random_segment(&mut rng));
            }
        }

        /// A descriptor `to_descriptor` returns has no field wider than
        /// Figure 3-8 draws it, and `from_descriptor` makes the segment
        /// from it again, as the processor reads the segment.
        fn assert_answer_is_true(seg: &KvmSegment) {
            if let Some(d) = seg.to_descriptor() {
                assert_eq!(SegmentDescriptor::from_bits(d.to_bits()), d, "{d:?}: a field too wide");
                assert_eq!(KvmSegment::from_descriptor(Selector(seg.selector), &d), as_read(seg), "{seg:?} gave {d:?}");
            }
        }

        /// The segment as the processor reads it: flags set when nonzero,
        /// type and DPL cut to their widths, unusable whenever not both
        /// present and usable.
        fn as_read(seg: &KvmSegment) -> KvmSegment {
            let flag = |b: u8| u8::from(b != 0);
            let present = flag(seg.present) & (1 - flag(seg.unusable));
            KvmSegment {
                type_: seg.type_ % 16,
                dpl: seg.dpl % 4,
                present,
                unusable: 1 - present,
                db: flag(seg.db),
                s: flag(seg.s),
                l: flag(seg.l),
                g: flag(seg.g),
                avl: flag(seg.avl),
                padding: 0,
                ..*seg
            }
        }

        /// `seg` written otherwise but read the same (`as_read`): any
        /// nonzero byte for a set flag, bits above the type's 4 and the
        /// DPL's 2, and in an unusable segment any `present` and any
        /// nonzero `unusable`.
        fn dressed(seg: &KvmSegment, rng: &mut crate::test_rng::Rng) -> KvmSegment {
            let mut nonzero = || if rng.one_in(2) { 1 } else { (rng.next() as u8).max(1) };
            let mut flag = |b: u8| if b == 0 { 0 } else { nonzero() };
            let (db, s, l, g, avl) = (flag(seg.db), flag(seg.s), flag(seg.l), flag(seg.g), flag(seg.avl));
            let (present, unusable) = if seg.unusable == 0 {
                (flag(seg.present), 0)
            } else {
                (rng.next() as u8, (rng.next() as u8).max(1))
            };
            let type_ = seg.type_ | (rng.next() as u8) << 4;
            let dpl = seg.dpl | (rng.next() as u8) << 2;
            KvmSegment { type_, present, dpl, db, s, l, g, avl, unusable, ..*seg }
        }

        fn random_segment(rng: &mut crate::test_rng::Rng) -> KvmSegment {
            let mut byte = || if rng.one_in(2) { (rng.next() % 2) as u8 } else { rng.next() as u8 };
            let (type_, present, dpl, db, s, l, g, avl, unusable) =
                (byte(), byte(), byte(), byte(), byte(), byte(), byte(), byte(), byte());
            let base = if rng.one_in(2) { rng.next() & 0xFFFF_FFFF } else { rng.next() >> rng.below(64) };
            let field = rng.next() & 0xF_FFFF;
            let limit = match rng.below(3) {
                0 => field,
                1 => field << 12 | 0xFFF,
                _ => rng.next() & 0xFFFF_FFFF,
            } as u32;
            let selector = rng.next() as u16;
            KvmSegment { base, limit, selector, type_, present, dpl, db, s, l, g, avl, unusable, padding: 0 }
        }
    }
}
