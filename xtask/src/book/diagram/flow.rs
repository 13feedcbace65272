//! `flow:` pictures: boxes on a grid of columns and rows, arrows between
//! them, and bands of rows (userspace, the module, the guest).
//!
//! ```text
//! flow: The world switch
//! desc: ...
//! columns: 3                     # the grid's columns, 1 to 6
//! gaps: 80 50                    # optional: between columns, between rows
//! band: 1-2 VMX root operation   # rows 1 to 2 under an italic label
//! box run 1,1 module: run()      # id, column,row, optional `span N` and style;
//!   loads the guest's registers  #   after the colon the bold title, then lines
//! box guest 1,3 span 2 guest: the guest
//! arrow run -> guest: VMLAUNCH   # optional `dashed`, and `below` or `above`
//!                                #   to go around under or over the boxes;
//!                                #   ` | ` breaks the label into lines
//! ```
//!
//! Styles: `module`, `user`, `guest`, `cpu` (the processor's own steps),
//! `data` (memory and structures), `question` (a decision).
//! Boxes of a row share its height, which their text decides; a line too
//! wide for its box, or a label too wide for its arrow, is an error.

use super::{Statement, keyed, notes};
use crate::book::svg;

const STYLES: [(&str, &str, &str); 6] = [
    ("module", "#e8f0fe", "#3366cc"),
    ("user", "#fdf2e0", "#cc8a33"),
    ("guest", "#e6f4e6", "#339933"),
    ("cpu", "#f1e8fb", "#8a4fcc"),
    ("data", "#f2f2f2", "#777777"),
    ("question", "#fff8d6", "#b39500"),
];

const WIDTH: f64 = 1000.0;
const MARGIN: f64 = 24.0;
const BAND_LABEL: f64 = 26.0;

#[derive(Debug)]
pub struct Node {
    id: String,
    col: usize,
    row: usize,
    span: usize,
    style: usize,
    title: String,
    lines: Vec<String>,
    line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Straight,
    Below,
    Above,
}

#[derive(Debug)]
struct Arrow {
    from: usize,
    to: usize,
    dashed: bool,
    route: Route,
    label: Vec<String>,
    line: usize,
}

#[derive(Debug)]
struct Band {
    first: usize,
    last: usize,
    label: String,
}

#[derive(Debug)]
pub struct Flow {
    columns: usize,
    gaps: (f64, f64),
    bands: Vec<Band>,
    nodes: Vec<Node>,
    arrows: Vec<Arrow>,
}

/// A box's place in the picture.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Rect {
    fn cx(&self) -> f64 {
        self.x + self.w / 2.0
    }
    fn cy(&self) -> f64 {
        self.y + self.h / 2.0
    }
}

impl Flow {
    pub fn parse(statements: &[Statement]) -> Result<Flow, String> {
        let mut flow = Flow { columns: 0, gaps: (80.0, 50.0), bands: Vec::new(), nodes: Vec::new(), arrows: Vec::new() };
        let mut arrows = Vec::new();
        for statement in statements {
            if let Some(n) = keyed(statement, "columns") {
                flow.columns = n.parse().ok().filter(|n| (1..=6).contains(n)).ok_or(statement.error("columns: 1 to 6"))?;
            } else if let Some(gaps) = keyed(statement, "gaps") {
                let numbers: Vec<f64> = gaps.split_whitespace().filter_map(|g| g.parse().ok()).collect();
                let [x, y] = numbers[..] else { return Err(statement.error("gaps: two numbers, between columns and between rows")) };
                flow.gaps = (x, y);
            } else if let Some(band) = keyed(statement, "band") {
                flow.bands.push(parse_band(statement, band)?);
            } else if let Some(rest) = statement.head.strip_prefix("box ") {
                flow.nodes.push(parse_node(statement, rest)?);
            } else if let Some(rest) = statement.head.strip_prefix("arrow ") {
                arrows.push((statement, rest));
            } else {
                return Err(statement.error(format!("`{}` is not a box, an arrow, a band, `columns:` or `gaps:`", statement.head)));
            }
        }
        for (statement, rest) in arrows {
            let arrow = flow.parse_arrow(statement, rest)?;
            flow.arrows.push(arrow);
        }
        flow.check()?;
        Ok(flow)
    }

    fn parse_arrow(&self, statement: &Statement, rest: &str) -> Result<Arrow, String> {
        let (spec, label) = rest.split_once(':').unwrap_or((rest, ""));
        let words: Vec<&str> = spec.split_whitespace().collect();
        let [from, "->", to, options @ ..] = &words[..] else { return Err(statement.error("an arrow is `arrow FROM -> TO [dashed] [below|above]: label`")) };
        let find = |id: &str| self.nodes.iter().position(|n| n.id == id).ok_or(statement.error(format!("no box `{id}`")));
        let mut arrow = Arrow { from: find(from)?, to: find(to)?, dashed: false, route: Route::Straight, label: Vec::new(), line: statement.line };
        for option in options {
            match *option {
                "dashed" => arrow.dashed = true,
                "below" => arrow.route = Route::Below,
                "above" => arrow.route = Route::Above,
                other => return Err(statement.error(format!("`{other}`: an arrow may be `dashed`, `below` or `above`"))),
            }
        }
        let label = statement.joined(label);
        arrow.label = label.split(" | ").map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        Ok(arrow)
    }

    fn check(&self) -> Result<(), String> {
        if self.columns == 0 {
            return Err("no `columns:`".into());
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let at = |m: String| format!("line {}: {m}", node.line);
            if node.col + node.span - 1 > self.columns {
                return Err(at(format!("box `{}` goes past column {}", node.id, self.columns)));
            }
            if let Some(other) = self.nodes[..i].iter().find(|o| o.id == node.id) {
                return Err(at(format!("a second box `{}` (the first is on line {})", node.id, other.line)));
            }
            let overlaps = |o: &&Node| o.row == node.row && o.col < node.col + node.span && node.col < o.col + o.span;
            if let Some(other) = self.nodes[..i].iter().find(overlaps) {
                return Err(at(format!("box `{}` covers box `{}` (line {})", node.id, other.id, other.line)));
            }
        }
        for (i, band) in self.bands.iter().enumerate() {
            if band.last > self.rows() {
                return Err(format!("band `{}` ends at row {}, below the last box", band.label, band.last));
            }
            if let Some(other) = self.bands[..i].iter().find(|o| o.first <= band.last && band.first <= o.last) {
                return Err(format!("bands `{}` and `{}` share rows", other.label, band.label));
            }
        }
        for arrow in &self.arrows {
            if arrow.from == arrow.to {
                return Err(format!("line {}: an arrow from a box to itself", arrow.line));
            }
        }
        Ok(())
    }

    fn rows(&self) -> usize {
        self.nodes.iter().map(|n| n.row).max().unwrap_or(0)
    }

    /// Where each box goes: rows as high as their tallest box, bands'
    /// labels above their first row. Also returns the bands' label
    /// positions and separators, and the bottom of the last row.
    fn layout(&self) -> (Vec<Rect>, String, f64) {
        let (gx, gy) = self.gaps;
        let col_w = (WIDTH - 2.0 * MARGIN - (self.columns as f64 - 1.0) * gx) / self.columns as f64;
        let mut tops = vec![0.0; self.rows() + 1];
        let mut heights = vec![0.0; self.rows() + 1];
        let mut bands = String::new();
        let mut y = 48.0;
        for row in 1..=self.rows() {
            if let Some(band) = self.bands.iter().find(|b| b.first == row) {
                if row > 1 {
                    let line_y = svg::num(y - gy / 2.0);
                    bands.push_str(&format!(
                        "  <line x1=\"0\" y1=\"{line_y}\" x2=\"{WIDTH}\" y2=\"{line_y}\" stroke=\"#999999\" stroke-width=\"1\" stroke-dasharray=\"4 4\"/>\n"
                    ));
                }
                bands.push_str(&format!(
                    "  <text x=\"{}\" y=\"{}\" font-size=\"12\" font-style=\"italic\" fill=\"#444444\">{}</text>\n",
                    svg::num(MARGIN - 4.0),
                    svg::num(y + 12.0),
                    svg::escape(&band.label)
                ));
                y += BAND_LABEL;
            }
            let height = self.nodes.iter().filter(|n| n.row == row).map(|n| 40.0 + 17.0 * n.lines.len() as f64).fold(0.0, f64::max);
            tops[row] = y;
            heights[row] = height;
            y += height + gy;
        }
        let rects = self
            .nodes
            .iter()
            .map(|n| Rect {
                x: MARGIN + (n.col - 1) as f64 * (col_w + gx),
                y: tops[n.row],
                w: n.span as f64 * col_w + (n.span - 1) as f64 * gx,
                h: heights[n.row],
            })
            .collect();
        (rects, bands, y - gy)
    }

    pub fn render(&self, notes_text: &[String]) -> Result<(f64, f64, String), String> {
        let (rects, bands, mut bottom) = self.layout();
        let mut out = bands;
        for (node, rect) in self.nodes.iter().zip(&rects) {
            out.push_str(&draw_node(node, rect)?);
        }
        let mut labels = String::new();
        for (i, arrow) in self.arrows.iter().enumerate() {
            let offset = self.offset(i);
            let (path, label, lowest) = self.route(arrow, &rects, offset)?;
            let dash = if arrow.dashed { " stroke-dasharray=\"6 4\"" } else { "" };
            out.push_str(&format!(
                "  <polyline points=\"{path}\" fill=\"none\" stroke=\"#333333\" stroke-width=\"1.5\"{dash} marker-end=\"url(#arrow)\"/>\n"
            ));
            labels.push_str(&label);
            bottom = bottom.max(lowest);
        }
        out.push_str(&labels);
        let (text, used) = notes(notes_text, MARGIN, bottom + 6.0, WIDTH - 2.0 * MARGIN);
        out.push_str(&text);
        Ok((WIDTH, bottom + used + 16.0, out))
    }

    /// How far arrow `i` moves sideways so that arrows between the same
    /// two boxes do not lie on each other.
    fn offset(&self, i: usize) -> f64 {
        let arrow = &self.arrows[i];
        let pair = |a: &Arrow| a.route == arrow.route && ((a.from, a.to) == (arrow.from, arrow.to) || (a.from, a.to) == (arrow.to, arrow.from));
        let siblings: Vec<usize> = (0..self.arrows.len()).filter(|j| pair(&self.arrows[*j])).collect();
        let rank = siblings.iter().position(|j| *j == i).unwrap_or(0) as f64;
        (rank - (siblings.len() as f64 - 1.0) / 2.0) * 16.0
    }

    /// The points of an arrow, its label's SVG, and the lowest y it uses.
    fn route(&self, arrow: &Arrow, rects: &[Rect], offset: f64) -> Result<(String, String, f64), String> {
        let (a, b) = (rects[arrow.from], rects[arrow.to]);
        let point = |x: f64, y: f64| format!("{},{}", svg::num(x), svg::num(y));
        let too_wide = |room: f64| {
            let widest = arrow.label.iter().map(|l| svg::text_width(l, 12.0, false, false)).fold(0.0, f64::max);
            (widest > room).then(|| format!("line {}: the label is {:.0} px wide, {:.0} px fit; widen the gaps or break it with ` | `", arrow.line, widest, room))
        };
        // A third of the way into the gap: a band's separator lies halfway.
        let lane = |y: f64| if arrow.route == Route::Below { y + self.gaps.1 / 3.0 + offset } else { y - self.gaps.1 / 3.0 - offset };
        match arrow.route {
            Route::Below | Route::Above => {
                let below = arrow.route == Route::Below;
                let (ya, yb) = if below { (a.y + a.h, b.y + b.h) } else { (a.y, b.y) };
                let lane_y = lane(if below { ya.max(yb) } else { ya.min(yb) });
                let (xa, xb) = (a.cx() + offset, b.cx() - offset);
                if let Some(problem) = too_wide((xa - xb).abs() - 8.0) {
                    return Err(problem);
                }
                let first = if below { lane_y + 15.0 } else { lane_y - 6.0 - 15.0 * (arrow.label.len() as f64 - 1.0) };
                let label = label_svg(&arrow.label, (xa + xb) / 2.0, first, "middle");
                let path = [point(xa, ya), point(xa, lane_y), point(xb, lane_y), point(xb, yb)].join(" ");
                Ok((path, label, if below { first + 15.0 * arrow.label.len() as f64 } else { lane_y }))
            }
            Route::Straight if a.y == b.y => {
                let y = a.cy() + offset;
                let (xa, xb) = if a.x < b.x { (a.x + a.w, b.x) } else { (a.x, b.x + b.w) };
                if let Some(problem) = too_wide((xb - xa).abs() - 4.0) {
                    return Err(problem);
                }
                // Of two arrows between the same boxes, the upper one's
                // label goes above it, the lower one's below.
                let first = if offset > 0.0 { y + 15.0 } else { y - 6.0 - 15.0 * (arrow.label.len() as f64 - 1.0) };
                Ok((format!("{} {}", point(xa, y), point(xb, y)), label_svg(&arrow.label, (xa + xb) / 2.0, first, "middle"), y))
            }
            Route::Straight => {
                let overlap = (a.x.max(b.x), (a.x + a.w).min(b.x + b.w));
                let (start, end) = if overlap.0 < overlap.1 {
                    let x = (overlap.0 + overlap.1) / 2.0 + offset;
                    if a.y < b.y { ((x, a.y + a.h), (x, b.y)) } else { ((x, a.y), (x, b.y + b.h)) }
                } else {
                    (clip(&a, b.cx(), b.cy()), clip(&b, a.cx(), a.cy()))
                };
                let length = (end.1 - start.1).abs();
                if 15.0 * arrow.label.len() as f64 > length + 10.0 && start.0 == end.0 {
                    return Err(format!("line {}: the label has more lines than the arrow is long; widen the row gap", arrow.line));
                }
                let middle = ((start.0 + end.0) / 2.0, (start.1 + end.1) / 2.0);
                let first = middle.1 + 4.0 - 7.5 * (arrow.label.len() as f64 - 1.0);
                // A slanting arrow's label goes where the line is not:
                // below it if the line rises to the right, above if it
                // falls. Of two arrows side by side, the left one's label
                // goes left.
                let lines = arrow.label.len() as f64;
                let slope = (end.1 - start.1) * (end.0 - start.0);
                let label = if start.0 != end.0 {
                    let first = if slope < 0.0 { middle.1 + 18.0 } else { middle.1 - 8.0 - 15.0 * (lines - 1.0) };
                    label_svg(&arrow.label, middle.0 + 8.0, first, "start")
                } else if offset < 0.0 {
                    label_svg(&arrow.label, middle.0 - 7.0, first, "end")
                } else {
                    label_svg(&arrow.label, middle.0 + 7.0, first, "start")
                };
                Ok((format!("{} {}", point(start.0, start.1), point(end.0, end.1)), label, end.1.max(start.1)))
            }
        }
    }
}

/// Where the line from the centre of `r` towards (`x`, `y`) leaves it.
fn clip(r: &Rect, x: f64, y: f64) -> (f64, f64) {
    let (dx, dy) = (x - r.cx(), y - r.cy());
    let scale = f64::min(if dx == 0.0 { f64::MAX } else { r.w / 2.0 / dx.abs() }, if dy == 0.0 { f64::MAX } else { r.h / 2.0 / dy.abs() });
    (r.cx() + dx * scale, r.cy() + dy * scale)
}

/// Lines of an arrow's label, the first at `y`, on a white halo so that
/// a line under them does not cross the letters.
fn label_svg(lines: &[String], x: f64, y: f64, anchor: &str) -> String {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            format!(
                "  <text x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\" font-size=\"12\" stroke=\"#ffffff\" stroke-width=\"4\" paint-order=\"stroke\">{}</text>\n",
                svg::num(x),
                svg::num(y + 15.0 * i as f64),
                svg::escape(line)
            )
        })
        .collect()
}

fn draw_node(node: &Node, rect: &Rect) -> Result<String, String> {
    let (_, fill, stroke) = STYLES[node.style];
    let mut out = format!(
        "  <rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"/>\n",
        svg::num(rect.x),
        svg::num(rect.y),
        svg::num(rect.w),
        svg::num(rect.h)
    );
    let room = rect.w - 14.0;
    let text_top = rect.cy() - (17.0 * node.lines.len() as f64 + 18.0) / 2.0;
    for (i, (text, bold)) in std::iter::once((&node.title, true)).chain(node.lines.iter().map(|l| (l, false))).enumerate() {
        let size = if bold { 14.0 } else { 12.0 };
        if svg::text_width(text, size, bold, false) > room {
            return Err(format!("line {}: `{text}` is too wide for box `{}`; break the line", node.line, node.id));
        }
        let y = if i == 0 { text_top + 14.0 } else { text_top + 18.0 + 17.0 * i as f64 };
        let weight = if bold { " font-weight=\"bold\"" } else { " font-size=\"12\"" };
        out.push_str(&format!(
            "  <text x=\"{}\" y=\"{}\" text-anchor=\"middle\"{weight}>{}</text>\n",
            svg::num(rect.cx()),
            svg::num(y),
            svg::escape(text)
        ));
    }
    Ok(out)
}

/// `ID COL,ROW [span N] [STYLE]: TITLE`.
fn parse_node(statement: &Statement, rest: &str) -> Result<Node, String> {
    let (spec, title) = rest.split_once(':').ok_or(statement.error("a box is `box ID COL,ROW [span N] [STYLE]: title`"))?;
    let words: Vec<&str> = spec.split_whitespace().collect();
    let [id, place, options @ ..] = &words[..] else { return Err(statement.error("a box needs an id and a place COL,ROW")) };
    let bad_place = || statement.error(format!("`{place}` is not COL,ROW (from 1)"));
    let (col, row) = place.split_once(',').ok_or_else(bad_place)?;
    let (col, row): (usize, usize) = (col.parse().map_err(|_| bad_place())?, row.parse().map_err(|_| bad_place())?);
    if col == 0 || row == 0 {
        return Err(bad_place());
    }
    let mut node = Node { id: id.to_string(), col, row, span: 1, style: 0, title: title.trim().to_string(), lines: Vec::new(), line: statement.line };
    let mut options = options.iter();
    while let Some(option) = options.next() {
        if *option == "span" {
            node.span = options.next().and_then(|n| n.parse().ok()).filter(|n| *n >= 1).ok_or(statement.error("`span` takes a number of columns"))?;
        } else if let Some(style) = STYLES.iter().position(|(name, _, _)| name == option) {
            node.style = style;
        } else {
            let names: Vec<&str> = STYLES.iter().map(|s| s.0).collect();
            return Err(statement.error(format!("`{option}` is neither `span N` nor a style ({})", names.join(", "))));
        }
    }
    node.lines = statement.more.iter().map(|l| l.to_string()).collect();
    Ok(node)
}

fn parse_band(statement: &Statement, band: &str) -> Result<Band, String> {
    let (rows, label) = band.split_once(' ').ok_or(statement.error("a band is `band: FIRST[-LAST] label`"))?;
    let bad = || statement.error(format!("`{rows}` is not a row or rows FIRST-LAST"));
    let (first, last) = rows.split_once('-').unwrap_or((rows, rows));
    let (first, last): (usize, usize) = (first.parse().map_err(|_| bad())?, last.parse().map_err(|_| bad())?);
    if first == 0 || last < first {
        return Err(bad());
    }
    Ok(Band { first, last, label: statement.joined(label) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::diagram::statements;

    fn parse(text: &str) -> Result<Flow, String> {
        Flow::parse(&statements(text).unwrap())
    }

    const TWO: &str = "columns: 3\nbox a 1,1: A\nbox b 3,1 guest: B\n  one line\n  two lines\nbox c 1,2 span 3 data: C\n";

    #[test]
    fn lays_boxes_out_on_the_grid() {
        let flow = parse(TWO).unwrap();
        let (rects, _, bottom) = flow.layout();
        // Three columns of (1000 - 48 - 160) / 3 = 264 pixels.
        assert_eq!(rects[0], Rect { x: 24.0, y: 48.0, w: 264.0, h: 74.0 });
        assert_eq!(rects[1], Rect { x: 712.0, y: 48.0, w: 264.0, h: 74.0 });
        assert_eq!(rects[2], Rect { x: 24.0, y: 172.0, w: 952.0, h: 40.0 });
        assert_eq!(bottom, 212.0);
    }

    #[test]
    fn arrows_meet_the_boxes_edges() {
        let flow = parse(&format!("{TWO}arrow a -> b: across\narrow b -> a: back\narrow a -> c\narrow c -> b below: round\n")).unwrap();
        let (rects, _, _) = flow.layout();
        let route = |i: usize| flow.route(&flow.arrows[i], &rects, flow.offset(i)).unwrap();
        assert_eq!(route(0).0, "288,77 712,77", "across, 8 pixels above the middle");
        assert_eq!(route(1).0, "712,93 288,93", "and back, 8 below");
        assert_eq!(route(2).0, "156,122 156,172", "down from the middle of the overlap");
        assert_eq!(route(3).0, "500,212 500,228.7 844,228.7 844,122", "under the row, then up");
        assert!(route(0).1.contains(">across</text>"));
    }

    #[test]
    fn refuses_what_cannot_be_drawn() {
        let cases = [
            ("box a 1,1: A\n", "no `columns:`"),
            ("columns: 2\nbox a 2,1 span 2: A\n", "goes past column 2"),
            ("columns: 2\nbox a 1,1: A\nbox a 2,1: B\n", "a second box `a`"),
            ("columns: 2\nbox a 1,1 span 2: A\nbox b 2,1: B\n", "box `b` covers box `a`"),
            ("columns: 2\nbox a 1,1: A\narrow a -> z\n", "no box `z`"),
            ("columns: 2\nbox a 1,1: A\narrow a -> a\n", "from a box to itself"),
            ("columns: 2\nbox a 1,1 pink: A\n", "`pink` is neither"),
            ("columns: 2\nbox a 0,1: A\n", "is not COL,ROW"),
            ("columns: 2\nbox a 1,1: A\narrow a -> a sideways\n", "`sideways`"),
            ("columns: 2\ncircle\n", "`circle` is not a box"),
            ("columns: 9\n", "columns: 1 to 6"),
            ("columns: 2\nband: 2-1 x\n", "is not a row or rows"),
        ];
        for (text, want) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    #[test]
    fn text_too_wide_is_an_error() {
        let flow = parse("columns: 6\nbox a 1,1: A title far too long for a sixth of the page\n").unwrap();
        assert!(flow.render(&[]).unwrap_err().contains("line 2: `A title far too long"));
        let flow = parse("columns: 2\ngaps: 20 50\nbox a 1,1: A\nbox b 2,1: B\narrow a -> b: a label wider than twenty pixels\n").unwrap();
        assert!(flow.render(&[]).unwrap_err().contains("line 5: the label is"));
    }

    #[test]
    fn bands_label_their_rows() {
        let flow = parse("columns: 1\nband: 1 the host\nband: 2 the guest\nbox a 1,1: A\nbox b 1,2: B\n").unwrap();
        let (rects, bands, _) = flow.layout();
        assert_eq!(rects[0].y, 48.0 + BAND_LABEL);
        assert_eq!(rects[1].y, 48.0 + BAND_LABEL + 40.0 + 50.0 + BAND_LABEL);
        assert!(bands.contains(">the host</text>") && bands.contains(">the guest</text>"));
        assert_eq!(bands.matches("<line").count(), 1, "one separator, between the bands");
    }
}
