//! `simulate --svg`: the picture of every scheduler on one service, drawn with `plotters`'
//! SVG backend (text is written as `<text>` elements: no fonts are needed to draw it).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A real server of the compared service.
pub struct Server {
    /// Its weight.
    pub weight: u32,
}

/// One scheduler's numbers.
pub struct Row {
    /// The `ipvsadm -s` name.
    pub name: &'static str,
    /// Per real server (as [`Picture::servers`]): flow share / weight share, if it has weight.
    pub ratios: Vec<Option<f64>>,
    /// Percent of the service's flows whose real server changes on removal.
    pub moved: f64,
    /// Percent that were on a removed server (the least that can move).
    pub must: f64,
}

/// Everything the picture shows.
pub struct Picture {
    /// The title line.
    pub title: String,
    /// The real servers, in the order of their dots in each column.
    pub servers: Vec<Server>,
    /// One column per scheduler.
    pub rows: Vec<Row>,
    /// What is removed, for the second panel's caption.
    pub removed: String,
    /// Footnotes, one line each.
    pub notes: Vec<String>,
}

const WIDTH: u32 = 1200;
const PANEL: u32 = 490;
const FONT: &str = "sans-serif";
// plotters writes `font-size` as these / 1.24.
const TITLE: u32 = 31;
const CAPTION: u32 = 27;
const LABEL: u32 = 21;
const SMALL: u32 = 19;
/// Ratios above this are drawn as triangles at the top, their values written above them.
const RATIO_CAP: f64 = 3.0;
/// Tableau 10: distinguishable, and readable on white.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(214, 39, 40),
];
/// Flows that had to move, and flows that moved needlessly.
const MUST: RGBColor = RGBColor(150, 150, 150);
const NEEDLESS: RGBColor = RGBColor(214, 39, 40);
const GRID: RGBColor = RGBColor(225, 225, 225);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Error = DrawingAreaErrorKind<std::io::Error>;

/// Draws `p` as an SVG document.
pub fn render(p: &Picture) -> Result<String, String> {
    let notes: Vec<String> = p.notes.iter().flat_map(|n| wrap(n, NOTE_CHARS)).collect();
    let height = 60 + 2 * PANEL + 16 + 26 * notes.len() as u32;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        draw(&root, p, &notes).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Footnote lines are wrapped at this many characters (about 9 pixels each).
const NOTE_CHARS: usize = 130;

/// `text` in lines of at most `width` characters, broken at spaces, the first one bulleted.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = "•".to_string();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    lines
}

fn draw(root: &Area<'_>, p: &Picture, notes_text: &[String]) -> Result<(), Error> {
    root.fill(&WHITE)?;
    let root = root.titled(&p.title, (FONT, TITLE).into_font().style(FontStyle::Bold))?;
    let (top, rest) = root.split_vertically(PANEL);
    let (bottom, notes) = rest.split_vertically(PANEL);
    shares(&top, p)?;
    moves(&bottom, p)?;
    for (i, n) in notes_text.iter().enumerate() {
        // Continuation lines line up with the text after the bullet.
        let x = if n.starts_with('•') { 20 } else { 36 };
        notes.draw(&Text::new(
            n.as_str(),
            (x, 16 + 26 * i as i32),
            (FONT, SMALL).into_font().color(&BLACK.mix(0.8)),
        ))?;
    }
    Ok(())
}

/// What a legend entry is drawn with.
enum Mark {
    Dot(RGBColor),
    Line,
    Bar(RGBColor),
}

/// A legend as one row of entries, left to right, centred in `area`.
fn legend(area: &Area<'_>, items: &[(Mark, String)]) -> Result<(), Error> {
    // About 0.55 em per character of a sans-serif font: good enough to space the entries.
    let px = SMALL as f64 / 1.24;
    let widths: Vec<i32> = items
        .iter()
        .map(|(_, t)| 28 + (t.chars().count() as f64 * px * 0.55) as i32 + 28)
        .collect();
    let (w, h) = area.dim_in_pixel();
    let mut x = (w as i32 - widths.iter().sum::<i32>()).max(0) / 2;
    let y = h as i32 / 2;
    for ((mark, text), width) in items.iter().zip(widths) {
        match mark {
            Mark::Dot(c) => area.draw(&Circle::new((x + 10, y), 6, c.filled()))?,
            Mark::Line => area.draw(&PathElement::new(
                vec![(x, y), (x + 20, y)],
                BLACK.stroke_width(2),
            ))?,
            Mark::Bar(c) => {
                area.draw(&Rectangle::new([(x, y - 8), (x + 20, y + 8)], c.filled()))?
            }
        }
        area.draw(&Text::new(
            text.as_str(),
            (x + 28, y),
            (FONT, SMALL)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += width;
    }
    Ok(())
}

/// The x axis: one column per scheduler, named at its centre.
fn columns(p: &Picture) -> std::ops::Range<f64> {
    -0.5..p.rows.len() as f64 - 0.5
}

fn column_name(p: &Picture, x: f64) -> String {
    let i = x.round();
    if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < p.rows.len() {
        p.rows[i as usize].name.to_string()
    } else {
        String::new()
    }
}

/// A panel's caption and legend rows; the area left for the chart.
fn head<'a>(area: &Area<'a>, caption: &str, items: &[(Mark, String)]) -> Result<Area<'a>, Error> {
    let area = area.titled(caption, (FONT, CAPTION))?;
    let (row, rest) = area.split_vertically(34);
    legend(&row, items)?;
    Ok(rest)
}

/// Panel 1: a dot per real server and scheduler at its flow share / weight share, coloured by
/// the server's weight.
fn shares(area: &Area<'_>, p: &Picture) -> Result<(), Error> {
    // Weight classes, heaviest first: the colours of the dots.
    let mut weights: Vec<u32> = p.servers.iter().map(|s| s.weight).collect();
    weights.sort_unstable_by(|a, b| b.cmp(a));
    weights.dedup();
    let color = |w: u32| {
        let class = weights.iter().position(|&x| x == w).unwrap_or(0);
        COLORS[class % COLORS.len()]
    };
    let mut items = vec![(Mark::Line, "1.0: flow share = weight share".to_string())];
    for &w in &weights {
        let count = p.servers.iter().filter(|s| s.weight == w).count();
        let s = if count == 1 { "" } else { "s" };
        items.push((
            Mark::Dot(color(w)),
            format!("weight {w} ({count} server{s})"),
        ));
    }
    let area = head(
        area,
        "Each real server's share of the flows ÷ its share of the weight",
        &items,
    )?;
    let max = p
        .rows
        .iter()
        .flat_map(|r| r.ratios.iter().flatten())
        .fold(0.0f64, |m, &x| m.max(x));
    let clipping = max > RATIO_CAP;
    let top = if clipping {
        RATIO_CAP + 0.6
    } else {
        (max * 1.1).max(2.0)
    };
    let mut chart = ChartBuilder::on(&area)
        .margin(10)
        .margin_right(24)
        .x_label_area_size(58)
        .y_label_area_size(78)
        .build_cartesian_2d(columns(p), 0.0..top)?;
    let name = |x: &f64| column_name(p, *x);
    let y_label = |y: &f64| {
        if clipping && *y > RATIO_CAP + 1e-9 {
            String::new()
        } else {
            format!("{y:.1}")
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(p.rows.len() + 1)
        .x_label_formatter(&name)
        .y_labels(8)
        .y_label_formatter(&y_label)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .x_desc("scheduler")
        .y_desc("flow share ÷ weight share")
        .label_style((FONT, LABEL))
        .axis_desc_style((FONT, LABEL))
        .draw()?;
    let last = p.rows.len() as f64 - 0.5;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(-0.5, 1.0), (last, 1.0)],
        BLACK.stroke_width(2),
    )))?;
    if clipping {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(-0.5, RATIO_CAP + 0.1), (last, RATIO_CAP + 0.1)],
            BLACK.mix(0.3).stroke_width(1),
        )))?;
    }
    let n = p.servers.len().max(1);
    let step = 0.84 / n as f64;
    for (i, row) in p.rows.iter().enumerate() {
        let mut above = Vec::new();
        let mut above_x = Vec::new();
        for (j, s) in p.servers.iter().enumerate() {
            let Some(r) = row.ratios[j] else { continue };
            let x = i as f64 + (j as f64 - (n - 1) as f64 / 2.0) * step;
            let c = color(s.weight);
            if r > RATIO_CAP {
                chart.draw_series(std::iter::once(TriangleMarker::new(
                    (x, RATIO_CAP + 0.2),
                    6,
                    c.filled(),
                )))?;
                above_x.push(x);
                let v = format!("{r:.1}");
                if !above.contains(&v) {
                    above.push(v);
                }
            } else {
                chart.draw_series(std::iter::once(Circle::new((x, r), 4, c.filled())))?;
            }
        }
        if !above.is_empty() {
            chart.draw_series(std::iter::once(Text::new(
                above.join(" "),
                (
                    above_x.iter().sum::<f64>() / above_x.len() as f64,
                    RATIO_CAP + 0.33,
                ),
                (FONT, SMALL)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom)),
            )))?;
        }
    }
    Ok(())
}

/// Panel 2: per scheduler, the flows that move on removal, stacked: those that were on the
/// removed server (the minimum) under those that moved although their server stayed.
fn moves(area: &Area<'_>, p: &Picture) -> Result<(), Error> {
    let area = head(
        area,
        &format!("Flows that change real server when removing {}", p.removed),
        &[
            (
                Mark::Bar(MUST),
                "were on the removed server: must move (the minimum)".to_string(),
            ),
            (
                Mark::Bar(NEEDLESS),
                "moved although their server stayed".to_string(),
            ),
        ],
    )?;
    let mut chart = ChartBuilder::on(&area)
        .margin(10)
        .margin_right(24)
        .x_label_area_size(58)
        .y_label_area_size(78)
        .build_cartesian_2d(columns(p), 0.0..110.0)?;
    let name = |x: &f64| column_name(p, *x);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(p.rows.len() + 1)
        .x_label_formatter(&name)
        .y_labels(6)
        .y_label_formatter(&|y| {
            if *y <= 100.0 {
                format!("{y:.0}%")
            } else {
                String::new()
            }
        })
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .x_desc("scheduler")
        .y_desc("flows of the service")
        .label_style((FONT, LABEL))
        .axis_desc_style((FONT, LABEL))
        .draw()?;
    let half = 0.34;
    for (i, r) in p.rows.iter().enumerate() {
        let x = i as f64;
        chart.draw_series([
            Rectangle::new([(x - half, 0.0), (x + half, r.must)], MUST.filled()),
            Rectangle::new([(x - half, r.must), (x + half, r.moved)], NEEDLESS.filled()),
        ])?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{:.1}%", r.moved),
            (x, r.moved + 1.5),
            (FONT, SMALL)
                .into_font()
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    Ok(())
}
