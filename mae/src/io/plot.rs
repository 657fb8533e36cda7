//! Pictures drawn straight onto `image::RgbImage`, with no plotting crate: line plots (training
//! loss, probe accuracy against mask ratio or steps) with round ticks and legends, and image grids
//! (original | masked | reconstruction ...) with column titles.

use image::{Rgb, RgbImage};

use super::font::{ADVANCE, GLYPH_H, LINE_H, draw_text, draw_text_oriented, text_height, text_width};

const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const AXIS: [u8; 3] = [60, 60, 60];
const GRID: [u8; 3] = [228, 228, 228];
const TEXT: [u8; 3] = [30, 30, 30];

/// Mixes `color` into pixel `(x, y)` with weight `alpha`; a pixel outside the image is skipped.
pub(crate) fn blend(img: &mut RgbImage, x: u32, y: u32, color: [u8; 3], alpha: f32) {
    if x >= img.width() || y >= img.height() {
        return;
    }
    let p = img.get_pixel_mut(x, y);
    for (c, &target) in p.0.iter_mut().zip(&color) {
        *c = (*c as f32 * (1.0 - alpha) + target as f32 * alpha).round() as u8;
    }
}

/// Fills the part of the rectangle that lies inside the image.
pub(crate) fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, w: i64, h: i64, color: [u8; 3]) {
    let (x1, y1) = ((x0 + w).min(img.width() as i64), (y0 + h).min(img.height() as i64));
    for y in y0.max(0)..y1 {
        for x in x0.max(0)..x1 {
            img.put_pixel(x as u32, y as u32, Rgb(color));
        }
    }
}

/// A one-pixel frame around the rectangle.
pub(crate) fn rect_outline(img: &mut RgbImage, x0: i64, y0: i64, w: i64, h: i64, color: [u8; 3]) {
    fill_rect(img, x0, y0, w, 1, color);
    fill_rect(img, x0, y0 + h - 1, w, 1, color);
    fill_rect(img, x0, y0, 1, h, color);
    fill_rect(img, x0 + w - 1, y0, 1, h, color);
}

// ---------------------------------------------------------------------------------------------
// Line plots

/// One line of a plot: its legend name, its (x, y) points in drawing order, its colour.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's name for it.
    pub name: String,
    /// `(x, y)` points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// RGB colour of the line.
    pub color: [u8; 3],
}

/// A palette of distinguishable colours for series (cycled).
pub const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [214, 39, 40],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

/// One axis: the drawn range (in plot space, log10 for a log axis) and its ticks with labels.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// The fraction 0..1 of the axis at plot-space value `v` (halved to stay finite for any
    /// finite range).
    fn frac(&self, v: f64) -> f64 {
        let span = self.hi / 2.0 - self.lo / 2.0;
        if span > 0.0 { (v / 2.0 - self.lo / 2.0) / span } else { 0.5 }
    }
}

/// A step of 1, 2 or 5 times a power of ten near `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let n = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * p
}

/// Expands an empty range around its value.
fn widen(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if hi > lo {
        (lo, hi)
    } else if log {
        (lo - 0.5, hi + 0.5)
    } else if lo == 0.0 {
        (-1.0, 1.0)
    } else {
        let d = lo.abs() * 0.1;
        (lo - d, hi + d)
    }
}

/// A linear axis on nice round ticks covering [lo, hi].
fn linear_axis(lo: f64, hi: f64, target: usize) -> Axis {
    let (lo, hi) = widen(lo, hi, false);
    let raw = (hi / 2.0 - lo / 2.0) * 2.0 / target.max(1) as f64;
    if !raw.is_finite() || raw <= 0.0 {
        return Axis { lo, hi, ticks: vec![(lo, fmt_number(lo)), (hi, fmt_number(hi))] };
    }
    let step = nice_step(raw);
    let (a, b) = ((lo / step).floor(), (hi / step).ceil());
    let (nlo, nhi) = (a * step, b * step);
    if !(nlo.is_finite() && nhi.is_finite()) || b - a > 100.0 {
        return Axis { lo, hi, ticks: vec![(lo, fmt_number(lo)), (hi, fmt_number(hi))] };
    }
    let ticks = (0..=(b - a) as i64)
        .map(|k| {
            let v = (a + k as f64) * step;
            let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
            (v, fmt_tick(v, step))
        })
        .collect();
    Axis { lo: nlo, hi: nhi, ticks }
}

/// A log10 axis over [lo, hi] given in log10 space: decades, or 1-2-5 (then 1..9) steps when
/// the range spans less than three decades.
fn log_axis(lo: f64, hi: f64) -> Axis {
    let (lo, hi) = widen(lo, hi, true);
    let (flo, fhi) = (lo.floor(), hi.ceil());
    if fhi - flo >= 3.0 {
        let every = ((fhi - flo) / 8.0).ceil().max(1.0);
        let first = (flo / every).floor() * every;
        let last = (fhi / every).ceil() * every;
        let n = ((last - first) / every).round() as i64;
        let ticks = (0..=n).map(|k| first + k as f64 * every).map(|e| (e, fmt_pow(1, e as i64))).collect();
        return Axis { lo: first, hi: last, ticks };
    }
    for mantissas in [&[1, 2, 5][..], &[1, 2, 3, 4, 5, 6, 7, 8, 9][..]] {
        let mut cands: Vec<(f64, String)> = Vec::new();
        for e in (flo as i64 - 1)..=(fhi as i64 + 1) {
            for &m in mantissas {
                cands.push(((m as f64).log10() + e as f64, fmt_pow(m, e)));
            }
        }
        let start = cands.iter().rposition(|c| c.0 <= lo + 1e-12).unwrap_or(0);
        let end = cands.iter().position(|c| c.0 >= hi - 1e-12).unwrap_or(cands.len() - 1);
        if end - start >= 3 || mantissas.len() == 9 {
            let (a, b) = (cands[start].0, cands[end].0);
            return Axis { lo: a, hi: b, ticks: cands.drain(start..=end).collect() };
        }
    }
    unreachable!("the 1..9 mantissas always return")
}

/// `m * 10^e` as a label: plain for 0.001 to 90000, else `2e-5`.
fn fmt_pow(m: i64, e: i64) -> String {
    match e {
        0..=4 => (m * 10i64.pow(e as u32)).to_string(),
        -3..=-1 => format!("{:.*}", (-e) as usize, m as f64 * 10f64.powi(e as i32)),
        _ => format!("{m}e{e}"),
    }
}

/// A tick label at the precision of the tick step.
fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).clamp(0.0, 10.0) as usize;
    let mag = v.abs();
    if v == 0.0 {
        return if step < 1e-3 { "0".into() } else { format!("{:.decimals$}", 0.0) };
    }
    if !(1e-3..1e5).contains(&mag) {
        let digits = (mag.log10().floor() - step.log10().floor()).clamp(0.0, 6.0) as usize;
        return trim_exp(format!("{:.*e}", digits, v));
    }
    format!("{v:.decimals$}")
}

/// A number with up to 6 significant digits, plain or in `1.5e-4` form.
fn fmt_number(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let mag = v.abs();
    if (1e-3..1e5).contains(&mag) {
        let s = format!("{v:.6}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        trim_exp(format!("{v:.5e}"))
    }
}

/// "2.50000e4" -> "2.5e4", "1.0e-3" -> "1e-3".
fn trim_exp(s: String) -> String {
    match s.split_once('e') {
        Some((m, e)) if m.contains('.') => format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.')),
        _ => s,
    }
}

/// Draws `series` as lines on axes with nice ticks, grid, title, axis labels and a legend;
/// `log_y` puts y on a log10 scale (then non-positive y are skipped, like non-finite points).
/// Series with up to 30 points also get point markers; a single point is a marker. With no
/// drawable point, empty axes over 0..1 are drawn.
pub fn line_plot(
    series: &[Series],
    title: &str,
    x_label: &str,
    y_label: &str,
    width: u32,
    height: u32,
    log_y: bool,
) -> RgbImage {
    let (width, height) = (width.max(1), height.max(1));
    let mut img = RgbImage::from_pixel(width, height, Rgb(WHITE));
    let s = if width.min(height) >= 900 { 2 } else { 1 };
    let ty = |y: f64| if log_y { y.log10() } else { y };
    // Points in plot space, per series.
    let pts: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|se| {
            se.points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                .map(|&(x, y)| (x, ty(y)))
                .collect()
        })
        .collect();
    let all = pts.iter().flatten();
    let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        (xlo, xhi, ylo, yhi) = (xlo.min(x), xhi.max(x), ylo.min(y), yhi.max(y));
    }
    if xlo > xhi {
        (xlo, xhi, ylo, yhi) = (0.0, 1.0, 0.0, 1.0);
    }
    let x_axis = linear_axis(xlo, xhi, 6);
    let y_axis = if log_y { log_axis(ylo, yhi) } else { linear_axis(ylo, yhi, 6) };

    // Layout.
    let (adv, line) = ((ADVANCE * s) as i64, (LINE_H * s) as i64);
    let y_tick_w = y_axis.ticks.iter().map(|(_, l)| text_width(l, s)).max().unwrap_or(0) as i64;
    let left = 8 + if y_label.is_empty() { 0 } else { line + 4 } + y_tick_w + 8;
    let title_scale = if width >= 400 { s + 1 } else { s };
    let top = 10 + if title.is_empty() { 0 } else { text_height(title, title_scale) as i64 + 8 };
    let right = 10 + adv * 2;
    let bottom = 6 + line + if x_label.is_empty() { 0 } else { line + 4 } + 4;
    let (w, h) = (width as i64, height as i64);
    let pw = (w - left - right).max(1);
    let ph = (h - top - bottom).max(1);
    let px = |x: f64| left as f64 + x_axis.frac(x) * pw as f64;
    let py = |y: f64| top as f64 + (1.0 - y_axis.frac(y)) * ph as f64;

    // Grid and ticks.
    for (v, label) in &x_axis.ticks {
        let x = px(*v).round() as i64;
        fill_rect(&mut img, x, top, 1, ph, GRID);
        fill_rect(&mut img, x, top + ph, 1, 4, AXIS);
        let lw = text_width(label, s) as i64;
        draw_text(&mut img, (x - lw / 2) as i32, (top + ph + 6) as i32, label, TEXT, s);
    }
    for (v, label) in &y_axis.ticks {
        let y = py(*v).round() as i64;
        fill_rect(&mut img, left, y, pw, 1, GRID);
        fill_rect(&mut img, left - 4, y, 4, 1, AXIS);
        let lw = text_width(label, s) as i64;
        draw_text(&mut img, (left - 7 - lw) as i32, (y - (GLYPH_H * s) as i64 / 2) as i32, label, TEXT, s);
    }
    fill_rect(&mut img, left, top, 1, ph + 1, AXIS);
    fill_rect(&mut img, left, top + ph, pw + 1, 1, AXIS);

    // Title and axis labels.
    if !title.is_empty() {
        let tw = text_width(title, title_scale) as i64;
        draw_text(&mut img, ((w - tw) / 2).max(0) as i32, 8, title, BLACK, title_scale);
    }
    if !x_label.is_empty() {
        let lw = text_width(x_label, s) as i64;
        draw_text(&mut img, (left + (pw - lw) / 2) as i32, (top + ph + 6 + line + 2) as i32, x_label, TEXT, s);
    }
    if !y_label.is_empty() {
        let lw = text_width(y_label, s) as i64;
        draw_text_oriented(&mut img, 8, (top + (ph - lw) / 2) as i32, y_label, TEXT, s, true);
    }

    // Lines: per series, anti-aliased coverage (max over segments, so joints do not darken),
    // then one blend.
    let hw = s as f64; // half width: 2 px lines at scale 1
    let mut cov = vec![0f32; (width as usize) * (height as usize)];
    for (se, p) in series.iter().zip(&pts) {
        cov.iter_mut().for_each(|c| *c = 0.0);
        let dev: Vec<(f64, f64)> = p.iter().map(|&(x, y)| (px(x), py(y))).collect();
        for pair in dev.windows(2) {
            stroke(&mut cov, width, height, pair[0], pair[1], hw);
        }
        if dev.len() <= 30 {
            for &q in &dev {
                stroke(&mut cov, width, height, q, q, hw + 1.5 * s as f64);
            }
        }
        for (i, &c) in cov.iter().enumerate() {
            if c > 0.0 {
                blend(&mut img, (i % width as usize) as u32, (i / width as usize) as u32, se.color, c);
            }
        }
    }

    // Legend, in the plot corner with the fewest points under it.
    let named: Vec<&Series> = series.iter().filter(|se| !se.name.is_empty()).collect();
    if !named.is_empty() {
        let lw = named.iter().map(|se| text_width(&se.name, s)).max().unwrap_or(0) as i64 + 24 * s as i64 + 12;
        let lh = named.len() as i64 * (line + 3) + 8;
        let corners = [
            (left + pw - lw - 6, top + 6),
            (left + 8, top + 6),
            (left + pw - lw - 6, top + ph - lh - 6),
            (left + 8, top + ph - lh - 6),
        ];
        let inside = |&(cx, cy): &(i64, i64)| {
            dev_points(&pts, &px, &py)
                .filter(|&(x, y)| x >= cx as f64 && x <= (cx + lw) as f64 && y >= cy as f64 && y <= (cy + lh) as f64)
                .count()
        };
        let &(lx, ly) = corners.iter().min_by_key(|c| inside(c)).unwrap_or(&corners[0]);
        fill_rect(&mut img, lx, ly, lw, lh, WHITE);
        rect_outline(&mut img, lx, ly, lw, lh, [180, 180, 180]);
        for (i, se) in named.iter().enumerate() {
            let y = ly + 5 + i as i64 * (line + 3);
            let mid = y + (GLYPH_H * s) as i64 / 2;
            fill_rect(&mut img, lx + 6, mid - s as i64, 20 * s as i64, 2 * s as i64, se.color);
            draw_text(&mut img, (lx + 10 + 20 * s as i64) as i32, y as i32, &se.name, TEXT, s);
        }
    }
    img
}

/// `panels` left to right on white, top-aligned: as wide as their widths' sum, as tall as the
/// tallest (one figure of several plots, e.g. a linear-probe panel beside a k-NN panel).
pub fn side_by_side(panels: &[RgbImage]) -> RgbImage {
    let width = panels.iter().map(RgbImage::width).sum::<u32>().max(1);
    let height = panels.iter().map(RgbImage::height).max().unwrap_or(1).max(1);
    let mut img = RgbImage::from_pixel(width, height, Rgb(WHITE));
    let mut x = 0i64;
    for p in panels {
        image::imageops::replace(&mut img, p, x, 0);
        x += p.width() as i64;
    }
    img
}

fn dev_points<'a>(
    pts: &'a [Vec<(f64, f64)>],
    px: &'a impl Fn(f64) -> f64,
    py: &'a impl Fn(f64) -> f64,
) -> impl Iterator<Item = (f64, f64)> + 'a {
    pts.iter().flatten().map(move |&(x, y)| (px(x), py(y)))
}

/// Adds the coverage of a round-capped segment of half width `hw` (pixel units, pixel centres
/// at +0.5) to `cov`, taking the maximum with what is there.
fn stroke(cov: &mut [f32], w: u32, h: u32, a: (f64, f64), b: (f64, f64), hw: f64) {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let dist = |x: f64, y: f64| {
        let t = if len2 > 0.0 { (((x - a.0) * dx + (y - a.1) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
        let (cx, cy) = (a.0 + t * dx, a.1 + t * dy);
        ((x - cx).powi(2) + (y - cy).powi(2)).sqrt()
    };
    let mut add = |x: i64, y: i64| {
        if x < 0 || y < 0 || x >= w as i64 || y >= h as i64 {
            return;
        }
        let c = (hw + 0.5 - dist(x as f64 + 0.5, y as f64 + 0.5)).clamp(0.0, 1.0) as f32;
        let slot = &mut cov[y as usize * w as usize + x as usize];
        *slot = slot.max(c);
    };
    let reach = hw + 1.5;
    // Sweep the major axis; cover a band around the segment on the minor one.
    let steep = dy.abs() > dx.abs();
    let (a0, a1, d_major, d_minor, m0) = if steep { (a.1, b.1, dy, dx, a.0) } else { (a.0, b.0, dx, dy, a.1) };
    let band = if d_major != 0.0 { reach * (len2.sqrt() / d_major.abs()) } else { reach };
    let limit = if steep { h } else { w } as f64;
    let lo = (a0.min(a1) - reach).floor().max(-1.0) as i64;
    let hi = (a0.max(a1) + reach).ceil().min(limit + 1.0) as i64;
    for i in lo..=hi {
        let t = if d_major != 0.0 { ((i as f64 + 0.5 - a0) / d_major).clamp(0.0, 1.0) } else { 0.0 };
        let center = m0 + t * d_minor;
        for j in (center - band).floor() as i64..=(center + band).ceil() as i64 {
            if steep { add(j, i) } else { add(i, j) }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Image grids

/// Splits `title` into lines no wider than `max_w` pixels at scale 1 (a word longer than that
/// gets a line of its own).
fn wrap(title: &str, max_w: u32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in title.split_whitespace() {
        match lines.last_mut() {
            Some(l) if text_width(&format!("{l} {word}"), 1) <= max_w => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// Lays out `tiles` (rows of columns) upscaled `scale` times (nearest neighbour) on a white
/// background, `pad` pixels around and between cells, with `column_titles` above the columns.
///
/// Column `c` is as wide as its widest scaled tile, or its title's longest word if wider; row `r`
/// as tall as its tallest scaled tile; tiles are centred in their cells. Titles are drawn at
/// font scale 1, wrapped to the column width and bottom-aligned; the title band is `9 * lines` pixels tall (the most
/// lines of any title) plus `pad`, and absent when there are no titles. So for equal `w`x`h`
/// tiles and short titles: width = `pad + cols * (w * scale + pad)`, height =
/// `pad + [9 * lines + pad] + rows * (h * scale + pad)`.
pub fn image_grid(tiles: &[Vec<RgbImage>], column_titles: &[&str], scale: u32, pad: u32) -> RgbImage {
    let scale = scale.max(1);
    let ncols = tiles.iter().map(Vec::len).max().unwrap_or(0).max(column_titles.len());
    let mut col_w = vec![0u32; ncols];
    for row in tiles {
        for (c, t) in row.iter().enumerate() {
            col_w[c] = col_w[c].max(t.width().saturating_mul(scale));
        }
    }
    for (c, title) in column_titles.iter().enumerate() {
        let longest_word = title.split_whitespace().map(|w| text_width(w, 1)).max().unwrap_or(0);
        col_w[c] = col_w[c].max(longest_word);
    }
    let titles: Vec<Vec<String>> = (0..ncols).map(|c| wrap(column_titles.get(c).unwrap_or(&""), col_w[c])).collect();
    let title_lines = titles.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let title_band = if title_lines > 0 { title_lines * LINE_H + pad } else { 0 };
    let row_h: Vec<u32> =
        tiles.iter().map(|row| row.iter().map(|t| t.height().saturating_mul(scale)).max().unwrap_or(0)).collect();

    let width = col_w.iter().fold(pad, |a, &cw| a.saturating_add(cw).saturating_add(pad)).max(1);
    let height =
        row_h.iter().fold(pad.saturating_add(title_band), |a, &rh| a.saturating_add(rh).saturating_add(pad)).max(1);
    let mut img = RgbImage::from_pixel(width, height, Rgb(WHITE));

    let col_x: Vec<u32> = col_w
        .iter()
        .scan(pad, |x, &cw| {
            let here = *x;
            *x = x.saturating_add(cw).saturating_add(pad);
            Some(here)
        })
        .collect();
    for (c, lines) in titles.iter().enumerate() {
        for (k, l) in lines.iter().enumerate() {
            let lw = text_width(l, 1);
            let x = col_x[c] as i64 + (col_w[c] as i64 - lw as i64) / 2;
            // Bottom-aligned, next to the images.
            let line_no = title_lines - lines.len() as u32 + k as u32;
            draw_text(&mut img, x as i32, (pad + line_no * LINE_H) as i32, l, TEXT, 1);
        }
    }
    let mut y = pad.saturating_add(title_band);
    for (r, row) in tiles.iter().enumerate() {
        for (c, t) in row.iter().enumerate() {
            let (tw, th) = (t.width() * scale, t.height() * scale);
            let x0 = col_x[c] + (col_w[c] - tw) / 2;
            let y0 = y + (row_h[r] - th) / 2;
            for ty in 0..th {
                for tx in 0..tw {
                    let p = *t.get_pixel(tx / scale, ty / scale);
                    if x0 + tx < width && y0 + ty < height {
                        img.put_pixel(x0 + tx, y0 + ty, p);
                    }
                }
            }
        }
        y = y.saturating_add(row_h[r]).saturating_add(pad);
    }
    img
}

// ---------------------------------------------------------------------------------------------
// Heat maps

/// Viridis at five stops (dark purple, blue, teal, green, yellow), interpolated linearly: low to
/// high reads at a glance and stays ordered in grey.
const HEAT_STOPS: [[f32; 3]; 5] =
    [[68.0, 1.0, 84.0], [59.0, 82.0, 139.0], [33.0, 145.0, 140.0], [94.0, 201.0, 98.0], [253.0, 231.0, 37.0]];

/// The colour of `t` in `0..=1` (clamped; NaN is 0) on the heat map's scale.
pub fn heat_color(t: f32) -> [u8; 3] {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) } * (HEAT_STOPS.len() - 1) as f32;
    let k = (t.floor() as usize).min(HEAT_STOPS.len() - 2);
    let f = t - k as f32;
    let (a, b) = (HEAT_STOPS[k], HEAT_STOPS[k + 1]);
    [0, 1, 2].map(|c| (a[c] + (b[c] - a[c]) * f).round() as u8)
}

/// `image` in grey with the map `values: [grid_h, grid_w]` (row-major, e.g. one value per patch)
/// laid over it: the values scaled to `0..=1` by their own minimum and maximum (a constant map is
/// all 0; non-finite values count as the minimum), each cell stretched over its share of the image
/// (nearest neighbour, so a patch's value covers exactly its patch), coloured with [`heat_color`]
/// and blended in with weight `alpha`. The result has the image's size.
pub fn heat_overlay(image: &RgbImage, values: &[f32], grid_w: usize, grid_h: usize, alpha: f32) -> RgbImage {
    let finite = || values.iter().copied().filter(|v| v.is_finite());
    let lo = finite().fold(f32::INFINITY, f32::min);
    let hi = finite().fold(f32::NEG_INFINITY, f32::max);
    let span = hi - lo;
    let unit = |v: f32| if v.is_finite() && span > 0.0 { (v - lo) / span } else { 0.0 };
    let (w, h) = (image.width().max(1) as usize, image.height().max(1) as usize);
    let mut out = image.clone();
    for (x, y, p) in out.enumerate_pixels_mut() {
        let grey = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round().clamp(0.0, 255.0);
        let (gx, gy) = (x as usize * grid_w / w, y as usize * grid_h / h);
        let v = values.get(gy * grid_w + gx).copied().unwrap_or(f32::NAN);
        let color = heat_color(unit(v));
        *p = Rgb([0, 1, 2].map(|c| (grey * (1.0 - alpha) + color[c] as f32 * alpha).round() as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_labelled_at_their_precision() {
        let a = linear_axis(0.13, 0.87, 6);
        let labels: Vec<&str> = a.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let a = linear_axis(0.0, 1000.0, 6);
        assert_eq!(
            a.ticks.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
            ["0", "200", "400", "600", "800", "1000"]
        );
        let a = linear_axis(-3e-5, 3e-5, 6);
        assert!(a.ticks.iter().any(|(_, l)| l == "-2e-5"), "{:?}", a.ticks.iter().map(|t| &t.1).collect::<Vec<_>>());
        let a = log_axis(-3.2, 0.4);
        let labels: Vec<&str> = a.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["1e-4", "0.001", "0.01", "0.1", "1", "10"]);
        let a = log_axis(0.3f64.log10(), 0.9f64.log10());
        let labels: Vec<&str> = a.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]);
        let a = linear_axis(-f64::MAX, f64::MAX, 6);
        assert!(a.ticks.len() >= 2);
    }
}
