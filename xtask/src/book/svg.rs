//! SVG for the book's pictures: writing it (escaping, the width of a line
//! of text) and reading it back (is a file well-formed XML with an `<svg>`
//! root?), without an XML library.

/// `text` with the five characters XML reserves escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The fonts of every picture, the hand-drawn ones' too.
pub const SANS: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
pub const MONO: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

/// The advance of `c` in DejaVu Sans, in ems (its own metrics, rounded);
/// other fonts of the list are narrower, so a line that fits in DejaVu
/// fits in them.
fn advance(c: char) -> f64 {
    const UPPER: [f64; 26] = [
        0.684, 0.686, 0.698, 0.770, 0.632, 0.575, 0.775, 0.752, 0.295, 0.295, 0.656, 0.557, 0.863, //
        0.748, 0.787, 0.603, 0.787, 0.695, 0.635, 0.611, 0.732, 0.684, 0.989, 0.685, 0.611, 0.685,
    ];
    const LOWER: [f64; 26] = [
        0.613, 0.635, 0.550, 0.635, 0.615, 0.352, 0.635, 0.634, 0.278, 0.278, 0.579, 0.278, 0.974, //
        0.634, 0.612, 0.635, 0.635, 0.411, 0.521, 0.392, 0.634, 0.592, 0.818, 0.592, 0.592, 0.525,
    ];
    match c {
        'A'..='Z' => UPPER[(c as u8 - b'A') as usize],
        'a'..='z' => LOWER[(c as u8 - b'a') as usize],
        '0'..='9' => 0.636,
        ' ' | '.' | ',' => 0.32,
        ':' | ';' | '/' | '|' | '!' => 0.337,
        '\'' => 0.275,
        '(' | ')' | '[' | ']' | '-' => 0.39,
        '"' | '*' | '_' => 0.5,
        '=' | '+' | '<' | '>' | '#' | '~' => 0.838,
        '&' | '%' => 0.95,
        _ => 0.8,
    }
}

/// How wide `text` is drawn at `size` pixels in the sans font (bold is
/// about a tenth wider), or in the monospace one.
pub fn text_width(text: &str, size: f64, bold: bool, mono: bool) -> f64 {
    let ems: f64 = if mono { 0.602 * text.chars().count() as f64 } else { text.chars().map(advance).sum() };
    ems * size * if bold { 1.1 } else { 1.0 }
}

/// A number as an attribute value: whole numbers without a fraction, the
/// rest with one decimal, so that the output is the same on every host.
pub fn num(value: f64) -> String {
    let rounded = (value * 10.0).round() / 10.0;
    if rounded.fract() == 0.0 { format!("{}", rounded as i64) } else { format!("{rounded:.1}") }
}

/// Why `text` is not a well-formed SVG document, if it is not: XML that
/// closes every element it opens, quotes its attributes, uses only the
/// five named entities and numeric ones, and has one root, `<svg>`.
pub fn well_formed(text: &str) -> Result<(), String> {
    let mut open: Vec<&str> = Vec::new();
    let mut root: Option<&str> = None;
    let mut rest = text;
    let line = |rest: &str| text[..text.len() - rest.len()].matches('\n').count() + 1;
    while !rest.is_empty() {
        let Some(at) = rest.find('<') else {
            text_content(rest, open.is_empty()).map_err(|e| format!("line {}: {e}", line(rest)))?;
            break;
        };
        text_content(&rest[..at], open.is_empty()).map_err(|e| format!("line {}: {e}", line(rest)))?;
        rest = &rest[at..];
        let here = line(rest);
        let skip = |end: &str, what: &str| rest.find(end).map(|e| e + end.len()).ok_or(format!("line {here}: {what} never ends"));
        if rest.starts_with("<!--") {
            rest = &rest[skip("-->", "a comment")?..];
        } else if rest.starts_with("<?") {
            rest = &rest[skip("?>", "a processing instruction")?..];
        } else if rest.starts_with("<![CDATA[") {
            if open.is_empty() {
                return Err(format!("line {here}: character data outside the root element"));
            }
            rest = &rest[skip("]]>", "a CDATA section")?..];
        } else if rest.starts_with("<!") {
            return Err(format!("line {here}: a DOCTYPE or other declaration, which the book's pictures do not need"));
        } else {
            let end = tag_end(rest).ok_or(format!("line {here}: a tag never ends"))?;
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let name = name.trim_end();
                match open.pop() {
                    Some(opened) if opened == name => {}
                    Some(opened) => return Err(format!("line {here}: </{name}> closes <{opened}>")),
                    None => return Err(format!("line {here}: </{name}> closes nothing")),
                }
                continue;
            }
            let (name, empty) = element(tag).map_err(|e| format!("line {here}: {e}"))?;
            if open.is_empty() {
                if root.is_some() {
                    return Err(format!("line {here}: a second root element <{name}>"));
                }
                root = Some(name);
            }
            if !empty {
                open.push(name);
            }
        }
    }
    if let Some(name) = open.last() {
        return Err(format!("<{name}> is never closed"));
    }
    match root {
        Some("svg") => Ok(()),
        Some(other) => Err(format!("the root element is <{other}>, not <svg>")),
        None => Err("there is no root element".into()),
    }
}

/// The index of the `>` that ends the tag `rest` starts with, outside
/// quoted attribute values.
fn tag_end(rest: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (i, c) in rest.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The name of a start tag's element and whether it is empty (`<x/>`),
/// after checking its attributes.
fn element(tag: &str) -> Result<(&str, bool), String> {
    let (tag, empty) = match tag.strip_suffix('/') {
        Some(t) => (t, true),
        None => (tag, false),
    };
    let name_end = tag.find(|c: char| c.is_whitespace()).unwrap_or(tag.len());
    let name = &tag[..name_end];
    if !is_name(name) {
        return Err(format!("`<{name}` is not an element name"));
    }
    let mut rest = tag[name_end..].trim_start();
    let mut seen: Vec<&str> = Vec::new();
    while !rest.is_empty() {
        let (attr, after) = rest.split_once('=').ok_or(format!("<{name}>: `{rest}` is not an attribute"))?;
        let attr = attr.trim_end();
        if !is_name(attr) {
            return Err(format!("<{name}>: `{attr}` is not an attribute name"));
        }
        if seen.contains(&attr) {
            return Err(format!("<{name}>: attribute `{attr}` twice"));
        }
        seen.push(attr);
        let after = after.trim_start();
        let quote = after.chars().next().filter(|q| *q == '"' || *q == '\'').ok_or(format!("<{name}>: `{attr}`'s value is not quoted"))?;
        let close = after[1..].find(quote).ok_or(format!("<{name}>: `{attr}`'s value never ends"))?;
        let value = &after[1..1 + close];
        if value.contains('<') {
            return Err(format!("<{name}>: `{attr}`'s value holds a `<`"));
        }
        references(value).map_err(|e| format!("<{name}>: `{attr}`: {e}"))?;
        rest = after[close + 2..].trim_start();
        if !rest.is_empty() && !after[close + 2..].starts_with(char::is_whitespace) {
            return Err(format!("<{name}>: no space after `{attr}`'s value"));
        }
    }
    Ok((name, empty))
}

fn is_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == ':')
        && name.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

/// Checks text between tags: references are valid, and outside the root
/// only white space.
fn text_content(text: &str, outside: bool) -> Result<(), String> {
    if outside && !text.trim().is_empty() {
        return Err(format!("text outside the root element: `{}`", text.trim()));
    }
    if text.contains("]]>") {
        return Err("`]]>` in text".into());
    }
    references(text)
}

/// Every `&...;` in `text` is one of XML's five entities or a character
/// reference.
fn references(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        let after = &rest[at + 1..];
        let end = after.find(';').ok_or("a `&` that starts no reference (write `&amp;`)")?;
        let name = &after[..end];
        let numeric = name.strip_prefix("#x").map(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            .or_else(|| name.strip_prefix('#').map(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())));
        if !(numeric == Some(true) || ["amp", "lt", "gt", "quot", "apos"].contains(&name)) {
            return Err(format!("`&{name};` is not an XML entity"));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_numbers() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.25), "12.3");
        assert_eq!(num(-0.04), "0");
    }

    #[test]
    fn widths_grow_with_text_and_weight() {
        let plain = text_width("VMLAUNCH", 12.0, false, false);
        assert!(plain > text_width("vmlaunch", 12.0, false, false));
        assert!(text_width("VMLAUNCH", 12.0, true, false) > plain);
        assert_eq!(text_width("0x0F", 10.0, false, true), 4.0 * 6.02);
    }

    #[test]
    fn accepts_well_formed_svg() {
        let svg = "<?xml version=\"1.0\"?>\n<!-- drawn -->\n<svg xmlns=\"http://www.w3.org/2000/svg\" width='10'>\n\
                   <g><text x=\"1\">a &amp; b &#x3C; &#60;</text><rect/></g><![CDATA[ x < y ]]>\n</svg>\n";
        assert_eq!(well_formed(svg), Ok(()));
    }

    #[test]
    fn names_what_is_wrong() {
        let cases = [
            ("<svg><g></svg>", "</svg> closes <g>"),
            ("<svg><g>", "<g> is never closed"),
            ("<svg></svg><svg></svg>", "a second root element"),
            ("<html></html>", "not <svg>"),
            ("", "no root element"),
            ("<svg width=10></svg>", "not quoted"),
            ("<svg a=\"1\" a=\"2\"></svg>", "attribute `a` twice"),
            ("<svg>&nbsp;</svg>", "`&nbsp;` is not an XML entity"),
            ("<svg>a & b</svg>", "starts no reference"),
            ("<svg></svg>trailing", "text outside the root"),
            ("<!DOCTYPE svg><svg></svg>", "DOCTYPE"),
            ("<svg><!-- open </svg>", "a comment never ends"),
            ("<svg>\n<text x=\"1\"", "line 2: a tag never ends"),
            ("<svg a=\"1\"b=\"2\"></svg>", "no space after"),
            ("<svg></g></svg>", "</g> closes <svg>"),
        ];
        for (svg, want) in cases {
            let got = well_formed(svg).expect_err(svg);
            assert!(got.contains(want), "{svg}: {got}");
        }
    }
}
