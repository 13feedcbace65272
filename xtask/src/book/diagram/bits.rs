//! `bits:` pictures: a register or a structure of 32 or 64 bits, drawn in
//! rows of 32 with the most significant bit on the left, as the manuals
//! draw them.
//!
//! ```text
//! bits: The ioctl number
//! desc: ...
//! width: 32                 # 32 or 64
//! row: bytes 0 to 3         # optional, a label per row, top row first
//! example: 0x8090AE81 KVM_GET_REGS   # optional: each field's value
//! 31:30 dir                 # a field: its bits, high:low, and its name
//! 29:16 size
//! 15:8 type
//! 7:0 nr
//! 12 ~reserved              # `~`: drawn grey, as the manuals' reserved bits
//! ```
//!
//! Every bit belongs to exactly one field, and no field crosses a row.

use super::{Statement, keyed, notes};
use crate::book::svg;

/// A field: bits `hi` down to `lo`.
#[derive(Debug, PartialEq, Eq)]
pub struct Field {
    pub hi: u32,
    pub lo: u32,
    pub name: String,
    /// Drawn grey: reserved or not defined.
    pub grey: bool,
    line: usize,
}

#[derive(Debug)]
pub struct Bits {
    pub width: u32,
    pub rows: Vec<String>,
    pub example: Option<(u64, String)>,
    pub fields: Vec<Field>,
}

/// The picture's left margin, and the width of one bit.
const LEFT: f64 = 36.0;
const BIT: f64 = 29.0;
const PICTURE_WIDTH: f64 = 1000.0;
/// The font sizes a field's name may take, largest first.
const NAME_SIZES: [f64; 3] = [13.0, 11.0, 9.5];

impl Bits {
    pub fn parse(statements: &[Statement]) -> Result<Bits, String> {
        let mut bits = Bits { width: 0, rows: Vec::new(), example: None, fields: Vec::new() };
        for statement in statements {
            if let Some(width) = keyed(statement, "width") {
                bits.width = match width {
                    "32" => 32,
                    "64" => 64,
                    _ => return Err(statement.error(format!("width `{width}`: 32 or 64"))),
                };
            } else if let Some(label) = keyed(statement, "row") {
                bits.rows.push(statement.joined(label));
            } else if let Some(example) = keyed(statement, "example") {
                let (value, caption) = example.split_once(' ').unwrap_or((example, ""));
                let digits = value.strip_prefix("0x").ok_or(statement.error("the example's value is hexadecimal: 0x..."))?;
                let value = u64::from_str_radix(&digits.replace('_', ""), 16).map_err(|e| statement.error(format!("`{value}`: {e}")))?;
                bits.example = Some((value, statement.joined(caption)));
            } else {
                bits.fields.push(field(statement)?);
            }
        }
        bits.check()?;
        bits.fields.sort_by_key(|f| std::cmp::Reverse(f.hi));
        Ok(bits)
    }

    /// Every bit in one field, no field across rows, the example and the
    /// row labels within the width.
    fn check(&self) -> Result<(), String> {
        if self.width == 0 {
            return Err("no `width:` (32 or 64)".into());
        }
        let mut owner: Vec<Option<&Field>> = vec![None; self.width as usize];
        for field in &self.fields {
            let at = |m: String| format!("line {}: {m}", field.line);
            if field.hi >= self.width {
                return Err(at(format!("bit {} is outside a {}-bit value", field.hi, self.width)));
            }
            if field.hi / 32 != field.lo / 32 {
                return Err(at(format!("bits {}:{} cross a row of 32; split the field", field.hi, field.lo)));
            }
            for bit in field.lo..=field.hi {
                if let Some(other) = owner[bit as usize].replace(field) {
                    return Err(at(format!("bit {bit} is in `{}` (line {}) too", other.name, other.line)));
                }
            }
        }
        let missing: Vec<String> = (0..self.width).rev().filter(|b| owner[*b as usize].is_none()).map(|b| b.to_string()).collect();
        if !missing.is_empty() {
            return Err(format!("bits {} belong to no field (name unused bits `~reserved`)", missing.join(", ")));
        }
        if self.rows.len() > (self.width / 32) as usize {
            return Err(format!("{} row labels for {} rows", self.rows.len(), self.width / 32));
        }
        if let Some((value, _)) = self.example
            && self.width == 32
            && value >> 32 != 0
        {
            return Err(format!("the example {value:#x} is wider than 32 bits"));
        }
        Ok(())
    }

    /// The body of the picture and its size.
    pub fn render(&self, notes_text: &[String]) -> Result<(f64, f64, String), String> {
        let mut out = String::new();
        let mut y = 44.0;
        if let Some((value, caption)) = &self.example {
            let digits = if self.width == 64 { format!("0x{value:016X}") } else { format!("0x{value:08X}") };
            let text = if caption.is_empty() { format!("example: {digits}") } else { format!("example: {digits}, {caption}") };
            out.push_str(&format!("  <text x=\"500\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">{}</text>\n", svg::num(y + 6.0), svg::escape(&text)));
            y += 18.0;
        }
        let height = if self.example.is_some() { 52.0 } else { 36.0 };
        for row in (0..self.width / 32).rev() {
            let label = self.rows.get((self.width / 32 - 1 - row) as usize);
            if let Some(label) = label {
                y += 20.0;
                out.push_str(&format!(
                    "  <text x=\"{LEFT}\" y=\"{}\" font-size=\"12\" font-style=\"italic\" fill=\"#444444\">{}</text>\n",
                    svg::num(y),
                    svg::escape(label)
                ));
            }
            y += 20.0;
            for field in self.fields.iter().filter(|f| f.hi / 32 == row) {
                out.push_str(&self.field(field, row, y, height)?);
            }
            y += height + 10.0;
        }
        let (text, used) = notes(notes_text, LEFT, y, PICTURE_WIDTH - 2.0 * LEFT);
        out.push_str(&text);
        Ok((PICTURE_WIDTH, y + used + 12.0, out))
    }

    /// One field: its bit numbers above, its box, its name and value.
    fn field(&self, field: &Field, row: u32, y: f64, height: f64) -> Result<String, String> {
        let left = LEFT + f64::from(31 - (field.hi - 32 * row)) * BIT;
        let width = f64::from(field.hi - field.lo + 1) * BIT;
        let mut out = String::new();
        let number = |bit: u32, x: f64| {
            format!("  <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\" fill=\"#444444\">{bit}</text>\n", svg::num(x), svg::num(y - 5.0))
        };
        out.push_str(&number(field.hi, left + BIT / 2.0));
        if field.lo != field.hi {
            out.push_str(&number(field.lo, left + width - BIT / 2.0));
        }
        let (fill, stroke, ink) = if field.grey { ("#eeeeee", "#888888", "#555555") } else { ("#e8f0fe", "#3366cc", "#000000") };
        out.push_str(&format!(
            "  <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.2\"/>\n",
            svg::num(left),
            svg::num(y),
            svg::num(width),
            svg::num(height)
        ));
        let room = width - 4.0;
        let size = NAME_SIZES
            .into_iter()
            .find(|s| svg::text_width(&field.name, *s, false, false) <= room)
            .ok_or(format!("line {}: `{}` is too wide for bits {}:{}; shorten it and explain it in a note", field.line, field.name, field.hi, field.lo))?;
        let centre = svg::num(left + width / 2.0);
        let name_y = if self.example.is_some() { y + 20.0 } else { y + height / 2.0 + size * 0.36 };
        out.push_str(&format!(
            "  <text x=\"{centre}\" y=\"{}\" text-anchor=\"middle\" font-size=\"{}\" fill=\"{ink}\">{}</text>\n",
            svg::num(name_y),
            svg::num(size),
            svg::escape(&field.name)
        ));
        if let Some((value, _)) = self.example {
            let text = field_value(value, field.hi, field.lo);
            let size = [12.0, 10.0, 8.0].into_iter().find(|s| svg::text_width(&text, *s, false, true) <= room).ok_or(format!(
                "line {}: the example's value {text} is too wide for bits {}:{}",
                field.line, field.hi, field.lo
            ))?;
            out.push_str(&format!(
                "  <text x=\"{centre}\" y=\"{}\" text-anchor=\"middle\" font-family=\"{}\" font-size=\"{}\" fill=\"#1a4d99\">{}</text>\n",
                svg::num(y + 40.0),
                svg::MONO,
                svg::num(size),
                text
            ));
        }
        Ok(out)
    }
}

/// Bits `hi` to `lo` of `value`: in decimal up to three bits, else in hex.
pub fn field_value(value: u64, hi: u32, lo: u32) -> String {
    let width = hi - lo + 1;
    let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
    let field = (value >> lo) & mask;
    if width <= 3 { field.to_string() } else { format!("0x{field:X}") }
}

/// A field statement: `HI[:LO] NAME`.
fn field(statement: &Statement) -> Result<Field, String> {
    let (range, name) = statement.head.split_once(char::is_whitespace).ok_or(statement.error(format!(
        "`{}` is neither a field (`HI:LO name`) nor a `width:`, `row:`, `example:`, `desc:` or `note:`",
        statement.head
    )))?;
    let number = |s: &str| s.trim().parse::<u32>().map_err(|_| statement.error(format!("`{range}` is not a bit or a range HI:LO")));
    let (hi, lo) = match range.split_once(':') {
        Some((hi, lo)) => (number(hi)?, number(lo)?),
        None => (number(range)?, number(range)?),
    };
    if hi < lo {
        return Err(statement.error(format!("`{range}`: write the high bit first")));
    }
    let name = statement.joined(name);
    let (grey, name) = match name.strip_prefix('~') {
        Some(rest) => (true, rest.trim().to_string()),
        None => (false, name),
    };
    Ok(Field { hi, lo, name, grey, line: statement.line })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::diagram::statements;

    fn parse(text: &str) -> Result<Bits, String> {
        Bits::parse(&statements(text).unwrap())
    }

    #[test]
    fn parses_fields_high_first() {
        let bits = parse("width: 32\n7:0 nr\n31:30 dir\n15:8 ~type\n29:16 size\n").unwrap();
        let names: Vec<(u32, u32, &str, bool)> = bits.fields.iter().map(|f| (f.hi, f.lo, f.name.as_str(), f.grey)).collect();
        assert_eq!(names, [(31, 30, "dir", false), (29, 16, "size", false), (15, 8, "type", true), (7, 0, "nr", false)]);
    }

    #[test]
    fn every_bit_in_exactly_one_field() {
        assert!(parse("width: 32\n31:1 a\n").unwrap_err().contains("bits 0 belong to no field"));
        assert!(parse("width: 32\n31:0 a\n4 b\n").unwrap_err().contains("line 3: bit 4 is in `a` (line 2) too"));
        assert!(parse("width: 64\n63:16 a\n15:0 b\n").unwrap_err().contains("bits 63:16 cross a row"));
        assert!(parse("width: 32\n32:0 a\n").unwrap_err().contains("bit 32 is outside a 32-bit value"));
        assert!(parse("31:0 a\n").unwrap_err().contains("no `width:`"));
        assert!(parse("width: 16\n").unwrap_err().contains("32 or 64"));
        assert!(parse("width: 32\n0:31 a\n").unwrap_err().contains("high bit first"));
        assert!(parse("width: 32\nwhat\n").unwrap_err().contains("`what` is neither a field"));
        assert!(parse("width: 32\nexample: 0x100000000\n31:0 a\n").unwrap_err().contains("wider than 32 bits"));
    }

    #[test]
    fn field_values_of_an_example() {
        // The flat 32-bit code segment of chapter 01.
        let value = 0x00CF_9A00_0000_FFFF;
        assert_eq!(field_value(value, 47, 47), "1");
        assert_eq!(field_value(value, 46, 45), "0");
        assert_eq!(field_value(value, 43, 40), "0xA");
        assert_eq!(field_value(value, 51, 48), "0xF");
        assert_eq!(field_value(value, 15, 0), "0xFFFF");
        assert_eq!(field_value(u64::MAX, 63, 0), "0xFFFFFFFFFFFFFFFF");
    }

    #[test]
    fn draws_fields_where_their_bits_are() {
        let bits = parse("width: 64\nrow: high\nrow: low\nexample: 0x0000000100000002 two ones\n63:32 high\n31:0 low\n").unwrap();
        let (width, _, body) = bits.render(&[]).unwrap();
        assert_eq!(width, 1000.0);
        // Each field spans its whole row: 32 bits of 29 pixels from x = 36.
        assert_eq!(body.matches("<rect x=\"36\"").count(), 2, "{body}");
        assert!(body.contains("width=\"928\""), "{body}");
        assert!(body.contains(">0x1</text>") && body.contains(">0x2</text>"), "{body}");
        assert!(body.contains("example: 0x0000000100000002, two ones"), "{body}");
        assert!(body.contains(">high</text>") && body.contains(">low</text>"), "{body}");
    }

    #[test]
    fn a_name_too_wide_for_its_field_is_an_error() {
        let error = parse("width: 32\n31:1 a\n0 the direction of the access\n").unwrap().render(&[]).unwrap_err();
        assert!(error.contains("line 3: `the direction of the access` is too wide for bits 0:0"), "{error}");
        assert!(parse("width: 32\n31:1 a\n0 IN\n").unwrap().render(&[]).is_ok());
    }
}
