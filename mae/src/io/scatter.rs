//! Scatter plots: points coloured by class in square panels side by side, each with its title
//! lines and axis names, one class legend under them all. Drawn straight onto an
//! `image::RgbImage` with the built-in font, like `plot.rs`.
//!
//! The picture's size depends only on the number of panels, the panel size, the caption's
//! presence and the class names ([`scatter_size`]), never on the points.

use image::{Rgb, RgbImage};

use super::font::{GLYPH_H, LINE_H, draw_text, draw_text_oriented, text_width};
use super::plot::{blend, fill_rect, rect_outline};

/// Ten distinguishable colours, one per class (matplotlib's `tab10`); more classes reuse them.
pub const CLASS_PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The colour of class `c`.
pub fn class_color(c: u32) -> [u8; 3] {
    CLASS_PALETTE[c as usize % CLASS_PALETTE.len()]
}

/// One panel: labelled 2-D points and the words around them.
#[derive(Clone, Debug, Default)]
pub struct ScatterPanel {
    /// Up to [`TITLE_LINES`] lines above the plot, the first drawn twice as large (lines too
    /// long for the panel are drawn smaller, then cut with `...`; further lines are dropped).
    pub title: Vec<String>,
    /// The horizontal axis's name, under the plot.
    pub x_label: String,
    /// The vertical axis's name, left of the plot, reading upwards.
    pub y_label: String,
    /// The points, `[N, 2]` row-major (`x, y`); non-finite ones are not drawn.
    pub points: Vec<f64>,
    /// Each point's class, `[N]`: its colour.
    pub classes: Vec<u32>,
}

/// Title lines a panel has room for.
pub const TITLE_LINES: usize = 3;

const WHITE: [u8; 3] = [255, 255, 255];
const TEXT: [u8; 3] = [30, 30, 30];
const FRAME: [u8; 3] = [60, 60, 60];
const SEPARATOR: [u8; 3] = [210, 210, 210];
/// Space around a panel's contents and the legend's.
const MARGIN: u32 = 10;
/// The legend's colour swatch, and the gaps beside its names.
const SWATCH: u32 = 9;
const SWATCH_GAP: u32 = 5;
const ENTRY_GAP: u32 = 16;
const LEGEND_ROW: u32 = 15;
/// Characters of a class name shown in the legend.
const NAME_CHARS: usize = 24;
/// Opacity of a dot over what is already drawn: dense regions darken, so overlap shows.
const DOT_ALPHA: f32 = 0.7;

/// Height of the title block: a large line, then the small ones.
fn title_height() -> u32 {
    MARGIN + 2 * GLYPH_H + 6 + (TITLE_LINES as u32 - 1) * LINE_H
}

fn caption_height(caption: &str) -> u32 {
    if caption.is_empty() { 0 } else { MARGIN + GLYPH_H + 4 }
}

/// The legend's entries (`"3 triangle"`, or `"3"` without names) and the width of one cell.
fn legend_entries(class_names: &[String]) -> (Vec<String>, u32) {
    let entries: Vec<String> = class_names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let n: String = n.chars().take(NAME_CHARS).collect();
            if n.is_empty() { i.to_string() } else { format!("{i} {n}") }
        })
        .collect();
    let cell = entries.iter().map(|e| SWATCH + SWATCH_GAP + text_width(e, 1) + ENTRY_GAP).max().unwrap_or(0);
    (entries, cell)
}

/// `(cells per row, rows)` of the legend in a picture `width` wide.
fn legend_grid(classes: usize, cell: u32, width: u32) -> (u32, u32) {
    if classes == 0 {
        return (1, 0);
    }
    let per_row = ((width.saturating_sub(2 * MARGIN)) / cell.max(1)).max(1);
    (per_row, (classes as u32).div_ceil(per_row))
}

/// `(width, height)` of [`scatter_panels`]' picture: panels `panel_size` square side by side,
/// the caption above them (when not empty), the legend under them (a row of equal cells per
/// `width / cell` classes).
pub fn scatter_size(panels: usize, panel_size: u32, caption: &str, class_names: &[String]) -> (u32, u32) {
    let width = panels.max(1) as u32 * panel_size;
    let (_, cell) = legend_entries(class_names);
    let (_, rows) = legend_grid(class_names.len(), cell, width);
    let legend = if rows == 0 { 0 } else { rows * LEGEND_ROW + MARGIN };
    (width, caption_height(caption) + panel_size + legend)
}

/// The panels side by side, `panel_size` pixels square each (at least 120), with `caption` above
/// them and a legend of `class_names` (class `i` is `class_names[i]`; give `"0"`, `"1"`... or
/// empty names when the classes have none) under them.
pub fn scatter_panels(panels: &[ScatterPanel], caption: &str, class_names: &[String], panel_size: u32) -> RgbImage {
    let panel_size = panel_size.max(120);
    let (w, h) = scatter_size(panels.len(), panel_size, caption, class_names);
    let mut img = RgbImage::from_pixel(w, h, Rgb(WHITE));
    let top = caption_height(caption);
    if !caption.is_empty() {
        draw_text(&mut img, MARGIN as i32, MARGIN as i32, &fit(caption, w - 2 * MARGIN, 1), TEXT, 1);
    }
    for (i, p) in panels.iter().enumerate() {
        let x0 = i as u32 * panel_size;
        if i > 0 {
            fill_rect(&mut img, x0 as i64, top as i64 + MARGIN as i64, 1, (panel_size - 2 * MARGIN) as i64, SEPARATOR);
        }
        draw_panel(&mut img, p, x0, top, panel_size);
    }
    let (entries, cell) = legend_entries(class_names);
    let (per_row, _) = legend_grid(entries.len(), cell, w);
    for (i, e) in entries.iter().enumerate() {
        let (col, row) = (i as u32 % per_row, i as u32 / per_row);
        let x = MARGIN + col * cell;
        let y = top + panel_size + row * LEGEND_ROW;
        fill_rect(&mut img, x as i64, y as i64, SWATCH as i64, SWATCH as i64, class_color(i as u32));
        draw_text(&mut img, (x + SWATCH + SWATCH_GAP) as i32, y as i32 + 1, e, TEXT, 1);
    }
    img
}

/// `text` as it fits in `width` pixels at `scale`: whole, or cut and ended with `...`.
fn fit(text: &str, width: u32, scale: u32) -> String {
    if text_width(text, scale) <= width {
        return text.to_string();
    }
    let mut s: String = text.to_string();
    while !s.is_empty() && text_width(&format!("{s}..."), scale) > width {
        s.pop();
    }
    format!("{s}...")
}

fn draw_panel(img: &mut RgbImage, p: &ScatterPanel, x0: u32, y0: u32, size: u32) {
    let inner = size - 2 * MARGIN;
    // Title: the first line large when it fits, the others small.
    let mut y = y0 + MARGIN;
    for (k, line) in p.title.iter().take(TITLE_LINES).enumerate() {
        let scale = if k == 0 && text_width(line, 2) <= inner { 2 } else { 1 };
        draw_text(img, (x0 + MARGIN) as i32, y as i32, &fit(line, inner, scale), TEXT, scale);
        y += if k == 0 { 2 * GLYPH_H + 6 } else { LINE_H };
    }
    // The plot's frame: room on the left for the rotated y label, below for the x label.
    let left = x0 + MARGIN + GLYPH_H + 5;
    let right = x0 + size - MARGIN;
    let top = y0 + title_height() + 4;
    let bottom = y0 + size - MARGIN - GLYPH_H - 5;
    let (fw, fh) = (right - left, bottom - top);
    rect_outline(img, left as i64, top as i64, fw as i64, fh as i64, FRAME);
    let xl = fit(&p.x_label, fw, 1);
    draw_text(img, (left + (fw - text_width(&xl, 1).min(fw)) / 2) as i32, (bottom + 4) as i32, &xl, TEXT, 1);
    let yl = fit(&p.y_label, fh, 1);
    let yw = text_width(&yl, 1).min(fh);
    draw_text_oriented(img, (x0 + MARGIN) as i32, (top + (fh - yw) / 2) as i32, &yl, TEXT, 1, true);
    draw_points(img, p, (left + 1, top + 1, fw.saturating_sub(2), fh.saturating_sub(2)), size);
}

/// The panel's points inside `(left, top, width, height)`, the data's range over it less a thin
/// border, in a fixed shuffled order so that no class is always drawn over the others.
fn draw_points(img: &mut RgbImage, p: &ScatterPanel, area: (u32, u32, u32, u32), size: u32) {
    let (left, top, w, h) = area;
    let n = (p.points.len() / 2).min(p.classes.len());
    let finite: Vec<usize> =
        (0..n).filter(|&i| p.points[2 * i].is_finite() && p.points[2 * i + 1].is_finite()).collect();
    if finite.is_empty() {
        return;
    }
    let range = |axis: usize| {
        let (lo, hi) = finite
            .iter()
            .map(|&i| p.points[2 * i + axis])
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if hi > lo { (lo, hi) } else { (lo - 1.0, hi + 1.0) }
    };
    let ((xlo, xhi), (ylo, yhi)) = (range(0), range(1));
    let dot = (size / 200).max(2);
    let border = dot + 2;
    let (span_w, span_h) = (w.saturating_sub(2 * border + dot) as f64, h.saturating_sub(2 * border + dot) as f64);
    let mut order = finite;
    engine::Rng::new(0x5ca7).shuffle(&mut order);
    for i in order {
        let fx = (p.points[2 * i] - xlo) / (xhi - xlo);
        let fy = (p.points[2 * i + 1] - ylo) / (yhi - ylo);
        let px = left + border + (fx * span_w).round() as u32;
        let py = top + border + ((1.0 - fy) * span_h).round() as u32;
        let color = class_color(p.classes[i]);
        for dy in 0..dot {
            for dx in 0..dot {
                blend(img, px + dx, py + dy, color, DOT_ALPHA);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class {i}")).collect()
    }

    fn panel(points: Vec<f64>, classes: Vec<u32>) -> ScatterPanel {
        ScatterPanel {
            title: vec!["features".into(), "k-NN 50%".into()],
            x_label: "PC1".into(),
            y_label: "PC2".into(),
            points,
            classes,
        }
    }

    #[test]
    fn the_picture_has_the_size_it_announces_whatever_the_points() {
        let a = panel(vec![0.0, 0.0, 1.0, 1.0, -3.0, 2.0], vec![0, 1, 2]);
        let b = panel(vec![f64::NAN, 1.0, 1e30, -1e30], vec![3, 4]);
        let empty = panel(Vec::new(), Vec::new());
        for caption in ["", "test features"] {
            let img = scatter_panels(&[a.clone(), b.clone(), empty.clone()], caption, &names(10), 200);
            assert_eq!(img.dimensions(), scatter_size(3, 200, caption, &names(10)));
            assert_eq!(img.width(), 600);
        }
    }

    #[test]
    fn each_point_is_drawn_in_its_class_colour_inside_the_frame() {
        // Two points at opposite corners of their range.
        let img = scatter_panels(&[panel(vec![0.0, 0.0, 1.0, 1.0], vec![0, 3])], "", &[], 200);
        let has = |color: [u8; 3]| {
            let want = color.map(|c| (255.0 * (1.0 - DOT_ALPHA) + c as f32 * DOT_ALPHA).round() as u8);
            img.pixels().filter(|p| p.0 == want).count()
        };
        let dot = 2 * 2;
        assert_eq!(has(CLASS_PALETTE[0]), dot);
        assert_eq!(has(CLASS_PALETTE[3]), dot);
        assert_eq!(has(CLASS_PALETTE[1]), 0);
    }

    #[test]
    fn the_legend_wraps_to_rows_that_fit_the_width() {
        let (w1, h1) = scatter_size(1, 200, "", &names(10));
        let (_, h3) = scatter_size(3, 200, "", &names(10));
        assert_eq!(w1, 200);
        assert!(h1 > h3, "a narrower picture needs more legend rows: {h1} vs {h3}");
        assert_eq!(scatter_size(2, 200, "", &[]).1, 200, "no classes, no legend");
    }

    #[test]
    fn long_titles_are_cut_to_the_panel() {
        assert_eq!(fit("short", 100, 1), "short");
        let cut = fit(&"x".repeat(100), 60, 1);
        assert!(cut.ends_with("...") && text_width(&cut, 1) <= 60, "{cut}");
    }
}
