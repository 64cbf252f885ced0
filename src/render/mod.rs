//! PNG figures: neighbour collages, confusion-matrix heat maps (bare, or with class names)
//! and loss curves.
//!
//! The command line's figures, so this module is built only with the `cli` feature (on by
//! default); `default-features = false` leaves it and its font out.

use std::io::{Cursor, Write};
use std::path::Path;

use image::imageops::{self, FilterType};
use image::{ImageFormat, Rgb, RgbImage};
use rayon::prelude::*;

use crate::atomic::write_atomic;
use crate::classify::ConfusionMatrix;
use crate::error::{Error, Result};

mod plot;
mod text;

pub use plot::{labelled_confusion_png, loss_curve_png};

/// Colour between and around tiles.
// for the tests
#[doc(hidden)]
pub const CANVAS: Rgb<u8> = Rgb([16, 16, 16]);
/// Colour of a tile's square behind its (aspect-preserved) image.
// for the tests
#[doc(hidden)]
pub const TILE_BACKGROUND: Rgb<u8> = Rgb([56, 56, 56]);
/// Border of a neighbour marked `Some(true)`.
pub(crate) const MARK_TRUE: Rgb<u8> = Rgb([40, 180, 70]);
/// Border of a neighbour marked `Some(false)`.
pub(crate) const MARK_FALSE: Rgb<u8> = Rgb([210, 50, 50]);
/// Pixels between tiles and around the collage.
// for the tests
#[doc(hidden)]
pub const TILE_GAP: u32 = 4;
/// Pixels between a row's query tile and its first neighbour.
// for the tests
#[doc(hidden)]
pub const QUERY_GAP: u32 = 16;
/// Width of the band around every tile's square that a mark colours.
pub(crate) const MARK_WIDTH: u32 = 3;

/// One row per query (the query image first, then its neighbours), each image scaled to fit
/// a `thumb` x `thumb` square, centred on [`TILE_BACKGROUND`]. Shorter rows are padded with
/// [`CANVAS`]. Same layout as [`collage_with_marks`] without marks.
pub fn collage(rows: &[Vec<RgbImage>], thumb: u32) -> RgbImage {
    collage_with_marks(rows, thumb, &[])
}

/// [`collage`] with a border on neighbour tiles: `marks[r][j]` marks neighbour `j` of row
/// `r` (the image `rows[r][j + 1]`): `Some(true)` green, `Some(false)` red, `None` (or a
/// missing entry) no border.
///
/// Each tile is a `thumb` square inside a `MARK_WIDTH` band; tiles are [`TILE_GAP`] apart
/// and the query is [`QUERY_GAP`] from its first neighbour, so for `r` rows of at most
/// `c >= 2` images the result is `TILE_GAP + c * (tile + TILE_GAP) + QUERY_GAP - TILE_GAP`
/// wide and `TILE_GAP + r * (tile + TILE_GAP)` high, with `tile = thumb + 2 * MARK_WIDTH`.
pub fn collage_with_marks(rows: &[Vec<RgbImage>], thumb: u32, marks: &[Vec<Option<bool>>]) -> RgbImage {
    let layout = CollageLayout { tile: thumb.saturating_add(2 * MARK_WIDTH) };
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut canvas = RgbImage::from_pixel(layout.width(columns), layout.height(rows.len()), CANVAS);

    let tiles: Vec<(usize, usize, &RgbImage)> = rows
        .iter()
        .enumerate()
        .flat_map(|(row, images)| images.iter().enumerate().map(move |(column, image)| (row, column, image)))
        .collect();
    let thumbnails: Vec<Option<RgbImage>> = tiles.par_iter().map(|(_, _, image)| fit_within(image, thumb)).collect();

    for (&(row, column, _), thumbnail) in tiles.iter().zip(&thumbnails) {
        let (x, y) = (layout.x(column), layout.y(row));
        let mark =
            column.checked_sub(1).and_then(|neighbor| marks.get(row).and_then(|m| m.get(neighbor)).copied().flatten());
        if let Some(correct) = mark {
            let colour = if correct { MARK_TRUE } else { MARK_FALSE };
            fill_rect(&mut canvas, x, y, layout.tile, layout.tile, colour);
        }
        let (square_x, square_y) = (x + MARK_WIDTH, y + MARK_WIDTH);
        fill_rect(&mut canvas, square_x, square_y, thumb, thumb, TILE_BACKGROUND);
        if let Some(thumbnail) = thumbnail {
            let left = square_x + (thumb - thumbnail.width()) / 2;
            let top = square_y + (thumb - thumbnail.height()) / 2;
            imageops::replace(&mut canvas, thumbnail, i64::from(left), i64::from(top));
        }
    }
    canvas
}

/// Pixel positions of a collage's tiles.
struct CollageLayout {
    /// Side of a tile: the thumbnail square plus its mark band.
    tile: u32,
}

impl CollageLayout {
    fn x(&self, column: usize) -> u32 {
        let query_extra = if column > 0 { QUERY_GAP - TILE_GAP } else { 0 };
        TILE_GAP + column as u32 * (self.tile + TILE_GAP) + query_extra
    }

    fn y(&self, row: usize) -> u32 {
        TILE_GAP + row as u32 * (self.tile + TILE_GAP)
    }

    fn width(&self, columns: usize) -> u32 {
        match columns {
            0 => TILE_GAP,
            _ => self.x(columns - 1) + self.tile + TILE_GAP,
        }
    }

    fn height(&self, rows: usize) -> u32 {
        self.y(rows)
    }
}

/// `image` scaled (up or down, aspect preserved) to fit a `side` square; `None` when either
/// is empty.
fn fit_within(image: &RgbImage, side: u32) -> Option<RgbImage> {
    let (width, height) = image.dimensions();
    if side == 0 || width == 0 || height == 0 {
        return None;
    }
    let scale = f64::from(side) / f64::from(width.max(height));
    let fit = |length: u32| ((f64::from(length) * scale).round() as u32).clamp(1, side);
    let (new_width, new_height) = (fit(width), fit(height));
    if (new_width, new_height) == (width, height) {
        return Some(image.clone());
    }
    Some(imageops::resize(image, new_width, new_height, FilterType::Triangle))
}

/// Fills the rectangle at (`x`, `y`) of `width` x `height`, clipped to the image.
pub(crate) fn fill_rect(image: &mut RgbImage, x: u32, y: u32, width: u32, height: u32, colour: Rgb<u8>) {
    let right = x.saturating_add(width).min(image.width());
    let bottom = y.saturating_add(height).min(image.height());
    for py in y..bottom {
        for px in x..right {
            image.put_pixel(px, py, colour);
        }
    }
}

/// Colour of an empty confusion cell.
pub(crate) const HEAT_ZERO: Rgb<u8> = Rgb([255, 255, 255]);
/// Colour of a diagonal (correct) cell holding its whole row.
pub(crate) const HEAT_CORRECT: Rgb<u8> = Rgb([33, 102, 172]);
/// Colour of an off-diagonal (wrong or missing prediction) cell holding its whole row.
pub(crate) const HEAT_WRONG: Rgb<u8> = Rgb([178, 24, 43]);
/// Colour of the one-pixel lines between confusion cells.
pub(crate) const GRID_LINE: Rgb<u8> = Rgb([150, 150, 150]);

/// A heat map of `matrix`: one `cell` x `cell` square per (true row, predicted column),
/// shaded from `HEAT_ZERO` towards `HEAT_CORRECT` (diagonal) or `HEAT_WRONG` by the
/// count over its row's total, between one-pixel `GRID_LINE`s. The no-prediction column
/// is drawn (last) only when some sample has no prediction. With `n` rows and `m` columns the
/// result is `m * (cell + 1) + 1` wide and `n * (cell + 1) + 1` high.
pub fn confusion_png(matrix: &ConfusionMatrix, cell: u32) -> RgbImage {
    let rows = matrix.labels.len();
    let columns = rows + usize::from(matrix.unpredicted() > 0);
    let span = |cells: usize| cells as u32 * (cell + 1) + 1;
    let mut image = RgbImage::from_pixel(span(columns), span(rows), GRID_LINE);
    for row in 0..rows {
        let counts = matrix.counts.get(row).map(Vec::as_slice).unwrap_or_default();
        let row_total: usize = counts.iter().sum();
        for column in 0..columns {
            let count = counts.get(column).copied().unwrap_or(0);
            let share = if row_total == 0 { 0.0 } else { count as f32 / row_total as f32 };
            let full = if row == column { HEAT_CORRECT } else { HEAT_WRONG };
            let (x, y) = (span(column), span(row));
            fill_rect(&mut image, x, y, cell, cell, blend(HEAT_ZERO, full, share));
        }
    }
    image
}

/// `from` moved the fraction `t` (0..=1) of the way to `to`.
pub(crate) fn blend(from: Rgb<u8>, to: Rgb<u8>, t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    Rgb(std::array::from_fn(|i| {
        let (a, b) = (f32::from(from.0[i]), f32::from(to.0[i]));
        (a + (b - a) * t).round() as u8
    }))
}

/// Writes `image` to `path` as PNG, atomically (an existing file is replaced only once the
/// new one is complete).
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    let mut png = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| Error::Image { path: path.to_path_buf(), reason: format!("PNG encoding failed: {e}") })?;
    write_atomic(path, |writer: &mut dyn Write| writer.write_all(&png))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(width: u32, height: u32, colour: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(width, height, Rgb(colour))
    }

    const TILE: u32 = 20 + 2 * MARK_WIDTH;

    #[test]
    fn collage_size_follows_the_longest_row() {
        let rows = vec![vec![solid(5, 5, [1, 2, 3]); 3], vec![solid(8, 4, [9, 9, 9])]];
        let image = collage(&rows, 20);
        let width = TILE_GAP + 3 * (TILE + TILE_GAP) + QUERY_GAP - TILE_GAP;
        assert_eq!(image.dimensions(), (width, TILE_GAP + 2 * (TILE + TILE_GAP)));
        // The second row is padded with canvas after its query.
        let layout = CollageLayout { tile: TILE };
        assert_eq!(*image.get_pixel(layout.x(2) + TILE / 2, layout.y(1) + TILE / 2), CANVAS);
    }

    #[test]
    fn empty_collage_is_a_small_canvas() {
        assert_eq!(collage(&[], 32).dimensions(), (TILE_GAP, TILE_GAP));
        assert_eq!(collage(&[vec![], vec![]], 0).dimensions().0, TILE_GAP);
    }

    #[test]
    fn tile_shows_the_resized_image_centred() {
        // 40 x 20 scales to 20 x 10: rows 5..15 of the square are image, the rest background.
        let rows = vec![vec![solid(40, 20, [200, 10, 10])]];
        let image = collage(&rows, 20);
        let (x, y) = (TILE_GAP + MARK_WIDTH, TILE_GAP + MARK_WIDTH);
        assert_eq!(*image.get_pixel(x + 10, y + 10), Rgb([200, 10, 10]));
        assert_eq!(*image.get_pixel(x, y + 5), Rgb([200, 10, 10]));
        assert_eq!(*image.get_pixel(x + 10, y + 2), TILE_BACKGROUND);
        assert_eq!(*image.get_pixel(x + 10, y + 17), TILE_BACKGROUND);
    }

    #[test]
    fn fit_within_preserves_aspect() {
        assert_eq!(fit_within(&solid(100, 50, [0; 3]), 32).map(|i| i.dimensions()), Some((32, 16)));
        assert_eq!(fit_within(&solid(3, 9, [0; 3]), 18).map(|i| i.dimensions()), Some((6, 18)));
        assert_eq!(fit_within(&solid(1000, 1, [0; 3]), 10).map(|i| i.dimensions()), Some((10, 1)));
        assert!(fit_within(&solid(0, 5, [0; 3]), 10).is_none());
    }

    #[test]
    fn marks_colour_neighbour_borders() {
        let rows = vec![vec![solid(4, 4, [0; 3]); 4]];
        let marks = vec![vec![Some(true), Some(false)]];
        let image = collage_with_marks(&rows, 20, &marks);
        let layout = CollageLayout { tile: TILE };
        let border = |column: usize| *image.get_pixel(layout.x(column), layout.y(0) + TILE / 2);
        assert_eq!(border(0), CANVAS);
        assert_eq!(border(1), MARK_TRUE);
        assert_eq!(border(2), MARK_FALSE);
        assert_eq!(border(3), CANVAS);
    }

    #[test]
    fn confusion_diagonal_is_blue_and_rows_are_normalised() {
        let mut matrix = ConfusionMatrix::new(["cat", "dog"]);
        matrix.add("cat", Some("cat"));
        matrix.add("dog", Some("dog"));
        matrix.add("dog", Some("cat"));
        let cell = 10;
        let image = confusion_png(&matrix, cell);
        assert_eq!(image.dimensions(), (2 * (cell + 1) + 1, 2 * (cell + 1) + 1));
        let centre = |row: u32, column: u32| *image.get_pixel(column * (cell + 1) + 5, row * (cell + 1) + 5);
        assert_eq!(centre(0, 0), HEAT_CORRECT);
        assert_eq!(centre(0, 1), HEAT_ZERO);
        assert_eq!(centre(1, 0), blend(HEAT_ZERO, HEAT_WRONG, 0.5));
        assert_eq!(centre(1, 1), blend(HEAT_ZERO, HEAT_CORRECT, 0.5));
        assert_eq!(*image.get_pixel(0, 0), GRID_LINE);
        assert_eq!(*image.get_pixel(cell + 1, 5), GRID_LINE);
    }

    #[test]
    fn confusion_shows_the_no_prediction_column_only_when_used() {
        let mut matrix = ConfusionMatrix::new(["cat"]);
        matrix.add("cat", Some("cat"));
        assert_eq!(confusion_png(&matrix, 4).dimensions(), (6, 6));
        matrix.add("cat", None);
        assert_eq!(confusion_png(&matrix, 4).dimensions(), (11, 6));
    }

    #[test]
    fn save_png_round_trips() {
        let dir = std::env::temp_dir().join(format!("lookalike-render-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("collage.png");
        let image = collage(&[vec![solid(7, 3, [1, 2, 3]), solid(3, 7, [4, 5, 6])]], 12);
        save_png(&image, &path).unwrap();
        let loaded = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(loaded, image);
    }

    #[test]
    fn save_png_reports_the_path() {
        let path = std::env::temp_dir().join("lookalike-no-such-dir").join("x.png");
        let error = save_png(&solid(2, 2, [0; 3]), &path).unwrap_err();
        assert!(error.to_string().contains("lookalike-no-such-dir"), "{error}");
    }
}
