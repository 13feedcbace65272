//@ stage 1
//! Segment descriptors and selectors (stage 01): Linux 2.6.20's
//! `segment_descriptor.h` as Rust.
//!
//! A segment register has a visible part, the 16-bit selector a program
//! loads, and a hidden part, the base, limit and attributes the processor
//! copies from the 8-byte descriptor the selector picks out of the GDT or
//! LDT. A hypervisor reads and writes that hidden part for its guest (KVM's
//! `struct kvm_segment`) and builds descriptor tables for it, so it needs
//! both directions: descriptor bits to fields and back.
//!
//! See Intel SDM Vol. 3A, 3.4.2 "Segment Selectors" and 3.4.5 "Segment
//! Descriptors"; AMD APM Vol. 2, 4.5 "Segment Selectors and Registers" and
//! 4.7 "Legacy Segment Descriptors".

// ANCHOR: descriptor
/// One 8-byte segment descriptor, unpacked. Fields carry the manuals'
/// names; each holds exactly the bits the descriptor has for it.
///
/// ```text
///  63      56 55 54 53 52 51    48 47 46 45 44 43    40 39      32
/// +----------+--+--+--+--+--------+--+-----+--+--------+----------+
/// |base 31:24|G |DB|L |AV|lim19:16|P | DPL |S |  type  |base 23:16|
/// +----------+--+--+--+--+--------+--+-----+--+--------+----------+
///  31                          16 15                            0
/// +------------------------------+------------------------------+
/// |         base 15:0            |         limit 15:0           |
/// +------------------------------+------------------------------+
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentDescriptor {
    /// Segment base address: where offset 0 of the segment is, linear.
    pub base: u32,
    /// Segment limit, the 20-bit field: the last valid offset, counted in
    /// bytes if `g` is clear and in 4 KiB units if it is set.
    pub limit: u32,
    /// Type (4 bits): code or data and its access rights if `s` is set,
    /// otherwise which system descriptor (LDT, TSS, gate).
    pub type_: u8,
    /// S, descriptor type: set for code and data, clear for system segments.
    pub s: bool,
    /// DPL, descriptor privilege level: 0 (most privileged) to 3.
    pub dpl: u8,
    /// P, segment present: loading a descriptor with P clear faults.
    pub present: bool,
    /// AVL: available for use by system software; the processor ignores it.
    pub avl: bool,
    /// L, 64-bit code segment: set for code that runs in 64-bit mode.
    pub l: bool,
    /// D/B, default operation size: set for 32-bit code and stacks, clear
    /// for 16-bit ones. Must be clear when `l` is set.
    pub db: bool,
    /// G, granularity: set if the limit counts 4 KiB units.
    pub g: bool,
}
// ANCHOR_END: descriptor

// ANCHOR: types
/// Type bit 0, for code and data segments: the processor sets it on a load.
pub const TYPE_ACCESSED: u8 = 0x1;
/// Data segment (type bit 3 clear), writable.
pub const TYPE_DATA_READ_WRITE: u8 = 0x2;
/// Code segment (type bit 3 set), readable as well as executable.
pub const TYPE_CODE_EXECUTE_READ: u8 = 0xA;
/// System descriptor: a local descriptor table.
pub const TYPE_LDT: u8 = 0x2;
/// System descriptor: a 32-bit (or, in long mode, 64-bit) TSS, not busy.
pub const TYPE_TSS_AVAILABLE: u8 = 0x9;
/// System descriptor: the same TSS while it is the current task's.
pub const TYPE_TSS_BUSY: u8 = 0xB;
// ANCHOR_END: types

// ANCHOR: attribute_bits
// Where each attribute sits in the 64-bit descriptor.
const TYPE_SHIFT: u32 = 40;
const S_BIT: u32 = 44;
const DPL_SHIFT: u32 = 45;
const P_BIT: u32 = 47;
const AVL_BIT: u32 = 52;
const L_BIT: u32 = 53;
const DB_BIT: u32 = 54;
const G_BIT: u32 = 55;

/// The largest value of the 20-bit limit field.
const LIMIT_MAX: u32 = 0xF_FFFF;

/// The `width` bits of `bits` that start at bit `shift`.
const fn field(bits: u64, shift: u32, width: u32) -> u64 {
    (bits >> shift) & ((1 << width) - 1)
}

/// Bit `shift` of `bits`.
const fn flag(bits: u64, shift: u32) -> bool {
    field(bits, shift, 1) != 0
}
// ANCHOR_END: attribute_bits

// ANCHOR: encode_limit
/// The 20-bit limit field, placed where a descriptor holds it; every other
/// bit is 0. Higher bits of `limit` are dropped.
fn encode_limit(limit: u32) -> u64 {
    //@ exercise E1.1
    //@ instruction: Return the descriptor bits that hold the limit field
    //@+ `limit`, every other bit 0. Where the processor reads the field
    //@+ is in Intel SDM Vol. 3A, 3.4.5 "Segment Descriptors", Figure 3-8
    //@+ (redrawn above `SegmentDescriptor`). Bits of `limit` above the
    //@+ 20-bit field must not reach the descriptor, where they would change
    //@+ other fields. The `e1_1` tests encode descriptors every x86
    //@+ programmer meets, and random limits.
    //@ hint: Figure 3-8 cuts the limit in two pieces, one in each half of
    //@+ the descriptor. Which bits of the limit go where?
    //@ hint: Limit bits 15:0 stay at descriptor bits 15:0; limit bits 19:16
    //@+ go to descriptor bits 51:48. Shifting a `u32` past bit 31 loses the
    //@+ bits: widen it first, with `u64::from(limit)`.
    //@ hint: With `limit` a `u64`: `(limit & 0xFFFF) | (limit & 0xF_0000)
    //@+ << 32`.
    let limit = u64::from(limit);
    (limit & 0xFFFF) | (limit & 0xF_0000) << 32
    //@ end
}
// ANCHOR_END: encode_limit

/// The 20-bit limit field of a descriptor.
fn decode_limit(bits: u64) -> u32 {
    (field(bits, 0, 16) | field(bits, 48, 4) << 16) as u32
}

/// Places the 32-bit base in a descriptor: bits 15:0 in descriptor bits
/// 31:16, bits 23:16 in 39:32, bits 31:24 in 63:56.
fn encode_base(base: u32) -> u64 {
    let base = u64::from(base);
    (base & 0xFF_FFFF) << 16 | (base & 0xFF00_0000) << 32
}

// ANCHOR: decode_base
/// The 32-bit base of a descriptor, gathered from its three pieces.
fn decode_base(bits: u64) -> u32 {
    //@ exercise E1.2
    //@ instruction: Return the base address the descriptor `bits` holds.
    //@+ Its pieces are where Intel SDM Vol. 3A, 3.4.5, Figure 3-8 shows
    //@+ them, and `encode_base` above puts them there:
    //@+ `decode_base(encode_base(b))` must be `b` for every base, and no
    //@+ bit of another field may leak into the result.
    //@ hint: `field(bits, shift, width)` extracts a run of bits. How many
    //@+ runs does the base make in Figure 3-8, once you notice which
    //@+ pieces are neighbours?
    //@ hint: Base 15:0 is at descriptor bits 31:16 and base 23:16 right
    //@+ above it, at 39:32: base 23:0 is one run of 24 bits from bit 16.
    //@+ Base 31:24 is at bits 63:56.
    //@ hint: `(field(bits, 16, 24) | field(bits, 56, 8) << 24) as u32`.
    (field(bits, 16, 24) | field(bits, 56, 8) << 24) as u32
    //@ end
}
// ANCHOR_END: decode_base

// ANCHOR: to_bits
impl SegmentDescriptor {
    /// The null descriptor: entry 0 of every GDT, all zero. Loading a null
    /// selector leaves a segment register unusable.
    pub const NULL: SegmentDescriptor = SegmentDescriptor {
        base: 0,
        limit: 0,
        type_: 0,
        s: false,
        dpl: 0,
        present: false,
        avl: false,
        l: false,
        db: false,
        g: false,
    };

    /// The descriptor as the processor reads it from the table.
    pub fn to_bits(&self) -> u64 {
        encode_limit(self.limit) | encode_base(self.base) | self.attribute_bits()
    }

    /// The descriptor's bytes, little-endian, as they sit in memory.
    pub fn to_bytes(&self) -> [u8; 8] {
        self.to_bits().to_le_bytes()
    }

    /// Every field except base and limit, in place.
    fn attribute_bits(&self) -> u64 {
        u64::from(self.type_ & 0xF) << TYPE_SHIFT
            | u64::from(self.s) << S_BIT
            | u64::from(self.dpl & 3) << DPL_SHIFT
            | u64::from(self.present) << P_BIT
            | u64::from(self.avl) << AVL_BIT
            | u64::from(self.l) << L_BIT
            | u64::from(self.db) << DB_BIT
            | u64::from(self.g) << G_BIT
    }
}
// ANCHOR_END: to_bits

// ANCHOR: from_bits
impl SegmentDescriptor {
    /// Unpacks a descriptor. Every `u64` is some descriptor, so this cannot
    /// fail; whether the processor would accept it is another matter.
    pub fn from_bits(bits: u64) -> SegmentDescriptor {
        SegmentDescriptor { base: decode_base(bits), limit: decode_limit(bits), ..Self::attributes_of(bits) }
    }

    /// Unpacks a descriptor from its bytes in memory.
    pub fn from_bytes(bytes: [u8; 8]) -> SegmentDescriptor {
        Self::from_bits(u64::from_le_bytes(bytes))
    }

    /// The attributes of `bits`, with base and limit zero.
    fn attributes_of(bits: u64) -> SegmentDescriptor {
        SegmentDescriptor {
            base: 0,
            limit: 0,
            type_: field(bits, TYPE_SHIFT, 4) as u8,
            s: flag(bits, S_BIT),
            dpl: field(bits, DPL_SHIFT, 2) as u8,
            present: flag(bits, P_BIT),
            avl: flag(bits, AVL_BIT),
            l: flag(bits, L_BIT),
            db: flag(bits, DB_BIT),
            g: flag(bits, G_BIT),
        }
    }
}
// ANCHOR_END: from_bits

// ANCHOR: effective_limit
impl SegmentDescriptor {
    /// The effective limit: the last valid byte offset in the segment, the
    /// limit field as G scales it (Intel SDM Vol. 3A, 3.4.5; 5.3 "Limit
    /// Checking"). KVM's `kvm_segment.limit` holds this value, not the
    /// field.
    pub fn effective_limit(&self) -> u32 {
        //@ exercise E1.3
        //@ instruction: Return the effective limit: the largest offset that
        //@+ passes the processor's limit check in an (expand-up) segment
        //@+ with this limit field and G flag. Intel SDM Vol. 3A, 5.3 "Limit
        //@+ Checking" defines it, and 3.4.5 "Segment Descriptors" the G
        //@+ flag. Only the 20 bits of the field count: bits of
        //@+ `self.limit` above them are not part of it. The `e1_3` tests
        //@+ try random fields with both granularities.
        //@ hint: With G clear the field counts bytes, with G set 4 KiB
        //@+ units. Which offsets of the last unit are inside the segment?
        //@+ 5.3 answers with the example of a limit of 0.
        //@ hint: With G set the effective limit runs from FFFh (field 0) to
        //@+ FFFFFFFFh (field FFFFFh): the processor does not check the 12
        //@+ low bits of an offset against the limit.
        //@ hint: `let limit = self.limit & LIMIT_MAX;` then
        //@+ `limit << 12 | 0xFFF` if `self.g`, else `limit`.
        let limit = self.limit & LIMIT_MAX;
        if self.g { limit << 12 | 0xFFF } else { limit }
        //@ end
    }

    /// The limit field that, with G = `g`, gives `byte_limit` as the
    /// effective limit; `None` if no field does. `KVM_SET_SREGS` hands a
    /// hypervisor effective limits, and a descriptor holds only the field.
    pub fn limit_field(byte_limit: u32, g: bool) -> Option<u32> {
        //@ exercise E1.4
        //@ instruction: Invert `effective_limit`: return the 20-bit field
        //@+ that, with G = `g`, has `byte_limit` as its effective limit, or
        //@+ `None` when no field does. What must hold, for every
        //@+ `byte_limit` and `g`: the answer is `Some(f)` exactly when `f`
        //@+ fits in 20 bits and a descriptor with field `f` and G = `g` has
        //@+ the effective limit `byte_limit`. The `e1_4` tests try every
        //@+ field and random limits.
        //@ hint: List the byte limits `effective_limit` can produce with G
        //@+ clear, and those it can produce with G set. Every other one has
        //@+ no field.
        //@ hint: With G clear: 0 to FFFFFh, each the field itself. With G
        //@+ set: exactly the values whose 12 low bits are all ones, from
        //@+ FFFh to FFFFFFFFh. VM entry enforces the same rule on the
        //@+ guest's segment registers (Intel SDM Vol. 3C, 27.3.1.2 "Checks
        //@+ on Guest Segment Registers", on the limit and G).
        //@ hint: `match g { false if byte_limit <= LIMIT_MAX =>
        //@+ Some(byte_limit), true if byte_limit & 0xFFF == 0xFFF =>
        //@+ Some(byte_limit >> 12), _ => None }`.
        match g {
            false if byte_limit <= LIMIT_MAX => Some(byte_limit),
            true if byte_limit & 0xFFF == 0xFFF => Some(byte_limit >> 12),
            _ => None,
        }
        //@ end
    }
}
// ANCHOR_END: effective_limit

// ANCHOR: constructors
impl SegmentDescriptor {
    /// A present code or data descriptor with 4 GiB of limit at base 0 —
    /// the "flat" segments every modern kernel uses.
    const fn flat(type_: u8, l: bool, db: bool) -> SegmentDescriptor {
        SegmentDescriptor { limit: LIMIT_MAX, type_, s: true, present: true, l, db, g: true, ..Self::NULL }
    }

    /// Flat 32-bit code, ring 0, execute/read: `0x00CF9A000000FFFF`.
    pub const fn flat_code32() -> SegmentDescriptor {
        Self::flat(TYPE_CODE_EXECUTE_READ, false, true)
    }

    /// Flat data, ring 0, read/write: `0x00CF92000000FFFF`. Also serves
    /// as a 32-bit stack (D/B set: ESP, not SP).
    pub const fn flat_data32() -> SegmentDescriptor {
        Self::flat(TYPE_DATA_READ_WRITE, false, true)
    }

    /// 64-bit code, ring 0: `0x00AF9A000000FFFF`. In 64-bit mode base and
    /// limit are ignored; L is set and D/B must be clear.
    pub const fn code64() -> SegmentDescriptor {
        Self::flat(TYPE_CODE_EXECUTE_READ, true, false)
    }

    /// The low half of a 64-bit TSS descriptor (type 9, S clear) for a TSS
    /// at `base` with byte limit `limit` (at least 0x67, the TSS's size
    /// minus one). In long mode a system descriptor takes 16 bytes; the
    /// high half holds base bits 63:32 (see [`SegmentDescriptor::base64`]).
    pub const fn tss64(base: u32, limit: u32) -> SegmentDescriptor {
        SegmentDescriptor { base, limit: limit & LIMIT_MAX, type_: TYPE_TSS_AVAILABLE, present: true, ..Self::NULL }
    }

    /// The 64-bit base of a 16-byte long-mode system descriptor (TSS or
    /// LDT) whose low half is `self` and whose high half is `high`: bits
    /// 31:0 of the high half are base bits 63:32.
    pub fn base64(&self, high: u64) -> u64 {
        u64::from(self.base) | (high & 0xFFFF_FFFF) << 32
    }
}
// ANCHOR_END: constructors

// ANCHOR: selector
/// Which descriptor table a selector indexes: its TI (table indicator) bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// TI = 0: the global descriptor table, located by GDTR.
    Gdt = 0,
    /// TI = 1: the current local descriptor table, located by LDTR.
    Ldt = 1,
}

/// A segment selector, the visible part of a segment register:
///
/// ```text
///  15                          3   2   1  0
/// +-----------------------------+----+-----+
/// |            index            | TI | RPL |
/// +-----------------------------+----+-----+
/// ```
///
/// The index counts 8-byte descriptors, so `selector & !7` is the
/// descriptor's byte offset in its table.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Selector(pub u16);

impl Selector {
    /// The selector for descriptor `index` of `table`, requested privilege
    /// level `rpl`. Bits beyond each field's width are dropped.
    pub fn new(index: u16, table: Table, rpl: u8) -> Selector {
        //@ exercise E1.5
        //@ instruction: Return the selector for descriptor `index` of
        //@+ `table` that asks for privilege level `rpl`, laid out as Intel
        //@+ SDM Vol. 3A, 3.4.2 "Segment Selectors", Figure 3-6 shows. The
        //@+ accessors below read it back: `index()`, `table()` and `rpl()`
        //@+ of the result must give the arguments, each cut to its field's
        //@+ width, and no argument may change another field.
        //@ hint: The accessors below are the inverse of what you write:
        //@+ read them, and the figure, for each field's place and width.
        //@ hint: The index has 13 bits (15:3), TI one (bit 2), the RPL two
        //@+ (1:0). Cut each value to its width before shifting it;
        //@+ `table as u16` is 0 or 1.
        //@ hint: `Selector((index & 0x1FFF) << 3 | (table as u16) << 2 |
        //@+ u16::from(rpl & 3))`.
        Selector((index & 0x1FFF) << 3 | (table as u16) << 2 | u16::from(rpl & 3))
        //@ end
    }

    /// Bits 15:3, the descriptor's number in its table.
    pub fn index(self) -> u16 {
        self.0 >> 3
    }

    /// Bit 2, TI.
    pub fn table(self) -> Table {
        if self.0 & 4 == 0 { Table::Gdt } else { Table::Ldt }
    }

    /// Bits 1:0, RPL: the privilege level the selector asks for.
    pub fn rpl(self) -> u8 {
        (self.0 & 3) as u8
    }

    /// Whether this is a null selector: index 0 of the GDT, any RPL.
    pub fn is_null(self) -> bool {
        self.0 & !3 == 0
    }
}

impl core::fmt::Debug for Selector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Selector")
            .field("index", &self.index())
            .field("table", &self.table())
            .field("rpl", &self.rpl())
            .finish()
    }
}
// ANCHOR_END: selector

// ANCHOR: lookup
/// The descriptor `selector` picks from `table`, the bytes of a GDT or LDT
/// (as many bytes as the table's limit plus one). `None` if the descriptor
/// does not lie wholly inside the table — where the processor raises #GP.
pub fn lookup(table: &[u8], selector: Selector) -> Option<SegmentDescriptor> {
    let start = usize::from(selector.index()) * 8;
    let bytes = table.get(start..start + 8)?;
    Some(SegmentDescriptor::from_bytes(bytes.try_into().ok()?))
}
// ANCHOR_END: lookup

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attributes_of_flat_code_are_9a_and_c() {
        assert_eq!(SegmentDescriptor::flat_code32().attribute_bits(), 0x00C0_9A00_0000_0000);
        assert_eq!(SegmentDescriptor::flat_data32().attribute_bits(), 0x00C0_9200_0000_0000);
        assert_eq!(SegmentDescriptor::code64().attribute_bits(), 0x00A0_9A00_0000_0000);
    }

    #[test]
    fn each_attribute_has_its_own_bit() {
        let one = |d: SegmentDescriptor| d.attribute_bits();
        let none = SegmentDescriptor::NULL;
        assert_eq!(one(SegmentDescriptor { type_: 0xF, ..none }), 0xF << 40);
        assert_eq!(one(SegmentDescriptor { s: true, ..none }), 1 << 44);
        assert_eq!(one(SegmentDescriptor { dpl: 3, ..none }), 3 << 45);
        assert_eq!(one(SegmentDescriptor { present: true, ..none }), 1 << 47);
        assert_eq!(one(SegmentDescriptor { avl: true, ..none }), 1 << 52);
        assert_eq!(one(SegmentDescriptor { l: true, ..none }), 1 << 53);
        assert_eq!(one(SegmentDescriptor { db: true, ..none }), 1 << 54);
        assert_eq!(one(SegmentDescriptor { g: true, ..none }), 1 << 55);
    }

    #[test]
    fn attributes_ignore_base_and_limit_and_round_trip() {
        for bits in [0x00CF_9A00_0000_FFFF_u64, 0x00AF_9A00_0000_FFFF, 0x0000_8900_0000_0067, u64::MAX, 0] {
            let attributes = SegmentDescriptor::attributes_of(bits);
            assert_eq!(attributes.attribute_bits(), bits & 0x00F0_FF00_0000_0000, "{bits:#x}");
        }
    }

    #[test]
    fn oversized_fields_are_masked_not_spilled() {
        let wild = SegmentDescriptor { type_: 0xFF, dpl: 0xFF, ..SegmentDescriptor::NULL };
        assert_eq!(wild.attribute_bits(), 0x0000_6F00_0000_0000);
    }

    #[test]
    fn the_limit_field_is_decoded_from_both_pieces() {
        assert_eq!(decode_limit(0x000F_0000_0000_FFFF), 0xF_FFFF);
        assert_eq!(decode_limit(0x0003_0000_0000_1234), 0x3_1234);
        assert_eq!(decode_limit(!0x000F_0000_0000_FFFF), 0);
    }

    #[test]
    fn the_base_is_encoded_in_three_pieces() {
        assert_eq!(encode_base(0x1234_5678), 0x1200_0034_5678_0000);
        assert_eq!(encode_base(u32::MAX), 0xFF00_00FF_FFFF_0000);
    }

    #[test]
    fn selector_fields_come_from_their_bits() {
        let user_data = Selector(0x2B);
        assert_eq!((user_data.index(), user_data.table(), user_data.rpl()), (5, Table::Gdt, 3));
        let ldt = Selector(0x0F);
        assert_eq!((ldt.index(), ldt.table(), ldt.rpl()), (1, Table::Ldt, 3));
        assert_eq!(Selector(0xFFFF).index(), 0x1FFF);
    }

    #[test]
    fn null_selectors_are_index_0_of_the_gdt() {
        assert!(Selector(0).is_null());
        assert!(Selector(3).is_null());
        assert!(!Selector(4).is_null(), "index 0 of the LDT is not null");
        assert!(!Selector(8).is_null());
    }

    #[test]
    fn selectors_debug_print_their_fields() {
        let text = std::format!("{:?}", Selector(0x2B));
        assert_eq!(text, "Selector { index: 5, table: Gdt, rpl: 3 }");
    }

    #[test]
    fn lookups_outside_the_table_find_nothing() {
        let gdt = [0u8; 24];
        assert_eq!(lookup(&gdt, Selector(3 << 3)), None);
        assert_eq!(lookup(&gdt[..23], Selector(2 << 3)), None);
        assert_eq!(lookup(&[], Selector(0)), None);
        assert_eq!(lookup(&gdt, Selector(0xFFFF)), None);
    }

    #[test]
    fn a_long_mode_system_descriptor_has_a_64_bit_base() {
        let low = SegmentDescriptor::tss64(0x89AB_CDEF, 0x67);
        assert_eq!(low.base64(0x0000_0000_0123_4567), 0x0123_4567_89AB_CDEF);
        assert_eq!(low.base64(0xFFFF_FFFF_0000_0000), 0x89AB_CDEF, "bits 63:32 of the high half are reserved");
    }

    // ANCHOR: known_descriptors
    /// Descriptors every x86 programmer meets, as the manuals lay them out.
    mod e1_1 {
        use super::super::*;

        #[test]
        fn flat_32_bit_code_and_data() {
            assert_eq!(SegmentDescriptor::flat_code32().to_bits(), 0x00CF_9A00_0000_FFFF);
            assert_eq!(SegmentDescriptor::flat_data32().to_bits(), 0x00CF_9200_0000_FFFF);
        }

        #[test]
        fn a_64_bit_code_segment() {
            assert_eq!(SegmentDescriptor::code64().to_bits(), 0x00AF_9A00_0000_FFFF);
        }

        #[test]
        fn a_64_bit_tss_low_half() {
            let tss = SegmentDescriptor::tss64(0x1234_5678, 0x67);
            assert_eq!(tss.to_bytes(), [0x67, 0x00, 0x78, 0x56, 0x34, 0x89, 0x00, 0x12]);
        }

        #[test]
        fn the_limit_is_split_and_masked() {
            assert_eq!(encode_limit(0xF_FFFF), 0x000F_0000_0000_FFFF);
            assert_eq!(encode_limit(0xA_BCDE), 0x000A_0000_0000_BCDE);
            assert_eq!(encode_limit(0xFFFF_FFFF), 0x000F_0000_0000_FFFF);
            assert_eq!(encode_limit(0), 0);
        }

        /// The limit as the descriptor's bytes in memory hold it: bytes 0
        /// and 1, and the low nibble of byte 6.
        #[test]
        fn random_limits_land_in_bytes_0_1_and_6() {
            let mut rng = crate::test_rng::Rng::new(0xE11);
            for _ in 0..10_000 {
                let limit = rng.next() as u32;
                let [b0, b1, b2, ..] = limit.to_le_bytes();
                let expected = [b0, b1, 0, 0, 0, 0, b2 & 0xF, 0];
                assert_eq!(encode_limit(limit).to_le_bytes(), expected, "limit {limit:#x}");
            }
        }

        #[test]
        fn a_real_mode_like_segment() {
            let d = SegmentDescriptor {
                base: 0xF_0000,
                limit: 0xFFFF,
                type_: TYPE_DATA_READ_WRITE | TYPE_ACCESSED,
                s: true,
                present: true,
                ..SegmentDescriptor::NULL
            };
            assert_eq!(d.to_bits(), 0x0000_930F_0000_FFFF);
        }
    }
    // ANCHOR_END: known_descriptors

    mod e1_2 {
        use super::super::*;

        #[test]
        fn the_flat_descriptors_decode() {
            assert_eq!(SegmentDescriptor::from_bits(0x00CF_9A00_0000_FFFF), SegmentDescriptor::flat_code32());
            assert_eq!(SegmentDescriptor::from_bits(0x00CF_9200_0000_FFFF), SegmentDescriptor::flat_data32());
            assert_eq!(SegmentDescriptor::from_bits(0x00AF_9A00_0000_FFFF), SegmentDescriptor::code64());
        }

        #[test]
        fn the_base_is_gathered_from_three_pieces() {
            assert_eq!(decode_base(0x1200_0034_5678_0000), 0x1234_5678);
            assert_eq!(decode_base(0xFF00_00FF_FFFF_0000), 0xFFFF_FFFF);
            assert_eq!(decode_base(0x00FF_FF00_0000_FFFF), 0, "limit and attributes are not base");
        }

        #[test]
        fn a_64_bit_tss_low_half() {
            let tss = SegmentDescriptor::from_bytes([0x67, 0x00, 0x78, 0x56, 0x34, 0x89, 0x00, 0x12]);
            assert_eq!(tss, SegmentDescriptor::tss64(0x1234_5678, 0x67));
            assert!(!tss.s);
            assert_eq!(tss.type_, TYPE_TSS_AVAILABLE);
        }

        #[test]
        fn a_real_mode_like_segment() {
            let d = SegmentDescriptor::from_bits(0x0000_930F_0000_FFFF);
            assert_eq!(
                (d.base, d.limit, d.type_, d.s, d.present, d.g, d.db),
                (0xF_0000, 0xFFFF, 3, true, true, false, false)
            );
        }

        /// The base from the descriptor's bytes in memory: 2, 3, 4 and 7;
        /// and back through `encode_base`.
        #[test]
        fn random_descriptors_give_the_base_of_bytes_2_3_4_and_7() {
            let mut rng = crate::test_rng::Rng::new(0xE12);
            for _ in 0..10_000 {
                let bits = rng.next();
                let b = bits.to_le_bytes();
                let expected = u32::from_le_bytes([b[2], b[3], b[4], b[7]]);
                assert_eq!(decode_base(bits), expected, "descriptor {bits:#018x}");
                let base = rng.next() as u32;
                assert_eq!(decode_base(encode_base(base)), base, "base {base:#x}");
            }
        }

        #[test]
        fn a_selector_finds_its_descriptor_in_a_gdt() {
            let mut gdt = [0u8; 24];
            gdt[8..16].copy_from_slice(&0x00CF_9A00_0000_FFFF_u64.to_le_bytes());
            gdt[16..24].copy_from_slice(&0x00CF_9200_0000_FFFF_u64.to_le_bytes());
            assert_eq!(lookup(&gdt, Selector(0x08)), Some(SegmentDescriptor::flat_code32()));
            assert_eq!(lookup(&gdt, Selector(0x13)), Some(SegmentDescriptor::flat_data32()), "RPL does not matter");
            assert_eq!(lookup(&gdt, Selector(0)), Some(SegmentDescriptor::NULL));
        }
    }

    mod e1_3 {
        use super::super::*;

        fn limit(limit: u32, g: bool) -> u32 {
            SegmentDescriptor { limit, g, ..SegmentDescriptor::NULL }.effective_limit()
        }

        #[test]
        fn byte_granular_limits_are_the_field() {
            assert_eq!(limit(0xFFFF, false), 0xFFFF);
            assert_eq!(limit(0x67, false), 0x67);
            assert_eq!(limit(0xF_FFFF, false), 0xF_FFFF);
        }

        #[test]
        fn page_granular_limits_include_the_whole_last_page() {
            assert_eq!(limit(0xF_FFFF, true), 0xFFFF_FFFF);
            assert_eq!(limit(0, true), 0xFFF);
            assert_eq!(limit(1, true), 0x1FFF);
        }

        #[test]
        fn bits_above_the_field_are_ignored() {
            assert_eq!(limit(0xFFF0_0001, false), 1);
            assert_eq!(limit(0xFFF0_0000, true), 0xFFF);
        }

        /// The effective limit as a count: the field's units times their
        /// size, less one.
        #[test]
        fn random_fields_with_both_granularities() {
            let mut rng = crate::test_rng::Rng::new(0xE13);
            for _ in 0..10_000 {
                let (field, g) = (rng.next() as u32, rng.one_in(2));
                let unit: u64 = if g { 4096 } else { 1 };
                let expected = (u64::from(field % 0x10_0000) + 1) * unit - 1;
                assert_eq!(u64::from(limit(field, g)), expected, "field {field:#x}, G {g}");
            }
        }
    }

    mod e1_4 {
        use super::super::*;

        /// The effective limit of a field, computed as a count of bytes.
        fn effective(field: u32, g: bool) -> u64 {
            let unit: u64 = if g { 4096 } else { 1 };
            (u64::from(field) + 1) * unit - 1
        }

        #[test]
        fn a_limit_field_exists_only_where_g_can_express_it() {
            assert_eq!(SegmentDescriptor::limit_field(0xFFFF, false), Some(0xFFFF));
            assert_eq!(SegmentDescriptor::limit_field(0xF_FFFF, false), Some(0xF_FFFF));
            assert_eq!(SegmentDescriptor::limit_field(0x10_0000, false), None);
            assert_eq!(SegmentDescriptor::limit_field(0xFFFF_FFFF, true), Some(0xF_FFFF));
            assert_eq!(SegmentDescriptor::limit_field(0xFFF, true), Some(0));
            assert_eq!(SegmentDescriptor::limit_field(0x1000, true), None);
            assert_eq!(SegmentDescriptor::limit_field(0xFFFF_FFFF, false), None);
        }

        /// Each of the 2^20 fields, with G clear and with G set, has an
        /// effective limit (SDM Vol. 3A, 5.3), and `limit_field` finds the
        /// field again from it.
        #[test]
        fn every_field_is_found_again() {
            for field in 0..=0xF_FFFF {
                for g in [false, true] {
                    let byte_limit = effective(field, g) as u32;
                    assert_eq!(SegmentDescriptor::limit_field(byte_limit, g), Some(field), "{byte_limit:#x}, G {g}");
                }
            }
        }

        /// Whatever `limit_field` answers for a random limit must be true:
        /// a field it finds fits in 20 bits and, with this G, gives the limit
        /// back (SDM Vol. 3A, 5.3). That it finds one wherever one exists,
        /// `every_field_is_found_again` checks on every field.
        #[test]
        fn a_field_found_for_a_random_limit_gives_it_back() {
            let mut rng = crate::test_rng::Rng::new(0xE14);
            for _ in 0..100_000 {
                let g = rng.one_in(2);
                let mut byte_limit = rng.next() as u32;
                if rng.one_in(2) {
                    byte_limit |= 0xFFF;
                }
                if rng.one_in(4) {
                    byte_limit &= 0x1F_FFFF;
                }
                if let Some(field) = SegmentDescriptor::limit_field(byte_limit, g) {
                    let gives = field < 1 << 20 && effective(field, g) == u64::from(byte_limit);
                    assert!(gives, "{byte_limit:#x}, G {g}: field {field:#x} gives {:#x}", effective(field, g));
                }
            }
        }
    }

    mod e1_5 {
        use super::super::*;

        #[test]
        fn gdt_selectors() {
            assert_eq!(Selector::new(1, Table::Gdt, 0), Selector(0x08));
            assert_eq!(Selector::new(2, Table::Gdt, 0), Selector(0x10));
            assert_eq!(Selector::new(5, Table::Gdt, 3), Selector(0x2B));
        }

        #[test]
        fn ldt_selectors() {
            assert_eq!(Selector::new(1, Table::Ldt, 3), Selector(0x0F));
            assert_eq!(Selector::new(0, Table::Ldt, 0), Selector(0x04));
        }

        #[test]
        fn fields_do_not_spill_into_each_other() {
            assert_eq!(Selector::new(0, Table::Gdt, 7), Selector(3));
            assert_eq!(Selector::new(0xFFFF, Table::Gdt, 0), Selector(0xFFF8));
        }

        /// The selector as a number: eight bytes per descriptor, plus 4 for
        /// the LDT, plus the RPL.
        #[test]
        fn random_selectors_are_their_descriptors_offset_plus_ti_and_rpl() {
            let mut rng = crate::test_rng::Rng::new(0xE15);
            for _ in 0..10_000 {
                let (index, rpl, ldt) = (rng.next() as u16, rng.next() as u8, rng.one_in(2));
                let table = if ldt { Table::Ldt } else { Table::Gdt };
                let expected = index.wrapping_mul(8) + if ldt { 4 } else { 0 } + u16::from(rpl % 4);
                let s = Selector::new(index, table, rpl);
                assert_eq!(s, Selector(expected), "index {index:#x}, {table:?}, RPL {rpl}");
                assert_eq!((s.index(), s.table(), s.rpl()), (index % 0x2000, table, rpl % 4));
            }
        }

        #[test]
        fn new_and_the_accessors_agree() {
            for (index, table, rpl) in [(0, Table::Gdt, 0), (0x1FFF, Table::Ldt, 3), (42, Table::Gdt, 2)] {
                let s = Selector::new(index, table, rpl);
                assert_eq!((s.index(), s.table(), s.rpl()), (index, table, rpl));
            }
        }
    }
}
