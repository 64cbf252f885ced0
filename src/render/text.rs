//! Text on figures from an embedded 8x8 bitmap font (ASCII; other characters show as `?`),
//! so figures need no font file on the machine.

use image::{Rgb, RgbImage};

/// Pixels per glyph side at scale 1.
pub(crate) const GLYPH: u32 = 8;

/// Width in pixels of `text` drawn at `scale`.
pub(crate) fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * GLYPH * scale
}

/// Draws `text` with its top-left corner at (`x`, `y`), each font pixel a `scale` square,
/// clipped to the image.
pub(crate) fn draw_text(image: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, colour: Rgb<u8>) {
    let scale = i64::from(scale.max(1));
    for (i, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() && !ch.is_ascii_control() { ch as usize } else { '?' as usize };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        let left = x + i as i64 * i64::from(GLYPH) * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for column in 0..8 {
                if bits >> column & 1 == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let (px, py) = (left + column * scale + dx, y + row as i64 * scale + dy);
                        if px >= 0 && py >= 0 && (px as u32) < image.width() && (py as u32) < image.height() {
                            image.put_pixel(px as u32, py as u32, colour);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glyphs_land_where_asked_and_clip() {
        let mut image = RgbImage::new(40, 12);
        draw_text(&mut image, 2, 2, "Hi", 1, Rgb([255, 255, 255]));
        let lit = |image: &RgbImage, x0: u32, x1: u32| {
            (x0..x1).flat_map(|x| (0..12).map(move |y| (x, y))).filter(|&(x, y)| image.get_pixel(x, y)[0] > 0).count()
        };
        assert!(lit(&image, 2, 10) > 5 && lit(&image, 10, 18) > 3);
        assert_eq!(lit(&image, 0, 2) + lit(&image, 18, 40), 0);
        draw_text(&mut image, 35, -3, "W\u{e9}", 2, Rgb([255, 0, 0]));
        assert_eq!(text_width("ab", 3), 48);
    }
}
