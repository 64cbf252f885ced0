//! Figures with words: the confusion heat map with class names, and the training loss curve.

use image::{Rgb, RgbImage};

use super::text::{draw_text, text_width, GLYPH};
use super::{blend, fill_rect, GRID_LINE, HEAT_CORRECT, HEAT_WRONG, HEAT_ZERO};
use crate::classify::ConfusionMatrix;

const PAPER: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const FAINT: Rgb<u8> = Rgb([225, 225, 225]);
const CURVE: Rgb<u8> = Rgb([33, 102, 172]);
const MARGIN: u32 = 10;

/// The heat map of [`super::confusion_png`] with the class names down the left (true class)
/// and numbered columns (predicted class; the numbers are the rows' order, listed with the
/// names), each cell showing its count.
pub fn labelled_confusion_png(matrix: &ConfusionMatrix, cell: u32) -> RgbImage {
    let rows = matrix.labels.len();
    let columns = rows + usize::from(matrix.unpredicted() > 0);
    let names: Vec<String> = matrix.labels.iter().enumerate().map(|(i, l)| format!("{i} {l}")).collect();
    let label_width = names.iter().map(|n| text_width(n, 1)).max().unwrap_or(0) + MARGIN;
    let cell = cell.max(3 * GLYPH + 4);
    let header = GLYPH + 2 * MARGIN;
    let span = |cells: usize| cells as u32 * (cell + 1) + 1;
    let (width, height) = (MARGIN + label_width + span(columns) + MARGIN, header + span(rows) + MARGIN);
    let mut image = RgbImage::from_pixel(width, height, PAPER);
    let (left, top) = (MARGIN + label_width, header);
    fill_rect(&mut image, left, top, span(columns), span(rows), GRID_LINE);
    for column in 0..columns {
        let title = if column < rows { column.to_string() } else { "none".into() };
        let x = left + span(column) + (cell.saturating_sub(text_width(&title, 1))) / 2;
        draw_text(&mut image, i64::from(x), i64::from(MARGIN), &title, 1, INK);
    }
    for (row, name) in names.iter().enumerate() {
        let y = top + span(row) + (cell - GLYPH) / 2;
        draw_text(&mut image, i64::from(MARGIN), i64::from(y), name, 1, INK);
        let counts = matrix.counts.get(row).map(Vec::as_slice).unwrap_or_default();
        let total: usize = counts.iter().sum();
        for column in 0..columns {
            let count = counts.get(column).copied().unwrap_or(0);
            let share = if total == 0 { 0.0 } else { count as f32 / total as f32 };
            let full = if row == column { HEAT_CORRECT } else { HEAT_WRONG };
            let (x, y) = (left + span(column), top + span(row));
            fill_rect(&mut image, x, y, cell, cell, blend(HEAT_ZERO, full, share));
            if count > 0 {
                let text = count.to_string();
                let ink = if share > 0.5 { PAPER } else { INK };
                let tx = x + cell.saturating_sub(text_width(&text, 1)) / 2;
                draw_text(&mut image, i64::from(tx), i64::from(y + (cell - GLYPH) / 2), &text, 1, ink);
            }
        }
    }
    image
}

/// A line plot of `losses` (one point per epoch, epoch 1 first) on axes from 0 to the
/// largest loss, with the first and last values and the axis ends written out.
pub fn loss_curve_png(losses: &[f32], title: &str) -> RgbImage {
    let (plot_w, plot_h) = (480u32, 240u32);
    let (left, top) = (MARGIN + 6 * GLYPH, 2 * MARGIN + GLYPH);
    let (width, height) = (left + plot_w + 2 * MARGIN, top + plot_h + 2 * MARGIN + 2 * GLYPH);
    let mut image = RgbImage::from_pixel(width, height, PAPER);
    draw_text(&mut image, i64::from(left), i64::from(MARGIN), title, 1, INK);
    let finite: Vec<f32> = losses.iter().copied().filter(|l| l.is_finite()).collect();
    let top_value = finite.iter().copied().fold(0.0f32, f32::max).max(f32::MIN_POSITIVE);
    for tick in 0..=4 {
        let y = top + plot_h - plot_h * tick / 4;
        fill_rect(&mut image, left, y, plot_w, 1, FAINT);
        let label = format!("{:.2}", top_value * tick as f32 / 4.0);
        draw_text(&mut image, i64::from(MARGIN), i64::from(y) - i64::from(GLYPH / 2), &label, 1, INK);
    }
    fill_rect(&mut image, left, top, 1, plot_h + 1, INK);
    fill_rect(&mut image, left, top + plot_h, plot_w, 1, INK);
    let point = |i: usize, loss: f32| -> (f64, f64) {
        let x = if losses.len() < 2 { 0.5 } else { i as f64 / (losses.len() - 1) as f64 };
        let y = if loss.is_finite() { f64::from(loss / top_value) } else { 1.0 };
        (f64::from(left) + x * f64::from(plot_w - 1), f64::from(top + plot_h) - y * f64::from(plot_h))
    };
    for i in 0..losses.len() {
        let (x0, y0) = point(i, losses[i]);
        let (x1, y1) = if i + 1 < losses.len() { point(i + 1, losses[i + 1]) } else { (x0, y0) };
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            fill_rect(&mut image, x.round() as u32 - 1, y.round().max(1.0) as u32 - 1, 3, 3, CURVE);
        }
    }
    let axis = format!("epoch 1..{}", losses.len());
    let axis_x = left + plot_w.saturating_sub(text_width(&axis, 1)) / 2;
    draw_text(&mut image, i64::from(axis_x), i64::from(top + plot_h + MARGIN), &axis, 1, INK);
    if let (Some(first), Some(last)) = (losses.first(), losses.last()) {
        let summary = format!("first {first:.3}  last {last:.3}");
        let x = left + plot_w.saturating_sub(text_width(&summary, 1));
        draw_text(&mut image, i64::from(x), i64::from(top + plot_h + MARGIN + GLYPH + 4), &summary, 1, INK);
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_figure_grows_with_names_and_shades_cells() {
        let mut m = ConfusionMatrix::new(["shirt", "bag"]);
        for _ in 0..9 {
            m.add("shirt", Some("shirt"));
        }
        m.add("shirt", Some("bag"));
        let image = labelled_confusion_png(&m, 30);
        let bare = super::super::confusion_png(&m, 30);
        assert!(image.width() > bare.width() && image.height() > bare.height());
        // Some pixel carries the strong diagonal colour blend (mostly HEAT_CORRECT).
        assert!(image.pixels().any(|p| p.0[2] > 150 && p.0[0] < 80));
    }

    #[test]
    fn loss_curve_draws_every_epoch_and_survives_odd_values() {
        let image = loss_curve_png(&[2.0, 1.0, 0.5], "loss");
        let blue = image.pixels().filter(|p| **p == CURVE).count();
        assert!(blue > 480, "{blue}");
        for odd in [vec![], vec![f32::NAN], vec![0.0, 0.0], vec![1.0]] {
            let _ = loss_curve_png(&odd, "x");
        }
    }
}
