//! The geometry of resize-then-centre-crop (torchvision's rules), computed for the crop's
//! outputs only: what both preprocessing twins (`cpu::preprocess`, `ops::preprocess`) read.

use crate::cpu::filter_taps::{bilinear_taps_range, FilterTaps};
use crate::error::{Error, Result};
use crate::shape::Preprocess;

/// The size after resizing the shorter side to `target`, as `(height, width)`.
///
/// torchvision's rule: the long side becomes `int(target * long / short)`, truncated. This is
/// computed as exact integer division, which equals Python's float result for any real size.
pub fn resized_size(height: u32, width: u32, target: u32) -> (usize, usize) {
    let (short, long) = (height.min(width) as u64, height.max(width) as u64);
    let new_long = (target as u64 * long / short.max(1)) as usize;
    let target = target as usize;
    if height <= width {
        (target, new_long)
    } else {
        (new_long, target)
    }
}

/// What the centre crop of one image needs from the resize: the taps of the crop's columns
/// and rows only, and the source rows they read. Computing just these outputs gives the
/// very numbers of the whole resize followed by the crop, for any aspect ratio (a 20000x1
/// strip resized to shorter side 256 would be 5120000 wide; its crop needs 224 columns).
#[derive(Debug, Clone, PartialEq)]
pub struct CropWindow {
    /// Source rows `first_row..first_row + rows` are the only ones the crop reads.
    pub first_row: usize,
    /// How many source rows the crop reads.
    pub rows: usize,
    /// Taps of the crop's columns over the source columns.
    pub horizontal: FilterTaps,
    /// Taps of the crop's rows, starts counted from `first_row`.
    pub vertical: FilterTaps,
    /// `(height, width)` of the whole resized image.
    pub resized: (usize, usize),
}

/// An image with no pixels cannot be resized.
pub(crate) fn check_not_empty(height: u32, width: u32) -> Result<()> {
    if height == 0 || width == 0 {
        return Err(Error::InputTooSmall {
            height: height as usize,
            width: width as usize,
            min: 1,
            what: "resizing".into(),
        });
    }
    Ok(())
}

/// The [`CropWindow`] of a `height`×`width` image under `p`: identity taps when the shorter
/// side already is `p.resize` (the pass-through), else [`bilinear_taps_range`]. Fails on an
/// empty image ([`Error::InputTooSmall`]); `p` is assumed valid ([`Preprocess::validate`]).
pub fn crop_window(height: u32, width: u32, p: &Preprocess) -> Result<CropWindow> {
    check_not_empty(height, width)?;
    let (out_h, out_w) = resized_size(height, width, p.resize);
    let crop = p.crop as usize;
    if out_h < crop || out_w < crop {
        return Err(Error::InputTooSmall { height: out_h, width: out_w, min: crop, what: "the centre crop".into() });
    }
    let pass_through = height.min(width) == p.resize;
    let axis = |in_len: u32, out_len: usize| {
        let first = crop_offset(out_len, crop);
        match pass_through {
            true => FilterTaps::identity_range(first as u32, crop),
            false => bilinear_taps_range(in_len, out_len, first, crop),
        }
    };
    let horizontal = axis(width, out_w);
    let mut vertical = axis(height, out_h);
    let first_row = vertical.start.iter().copied().min().unwrap_or(0);
    let end_row = vertical.start.iter().zip(&vertical.count).map(|(s, c)| s + c).max().unwrap_or(0);
    vertical.start.iter_mut().for_each(|s| *s -= first_row);
    Ok(CropWindow {
        first_row: first_row as usize,
        rows: (end_row - first_row) as usize,
        horizontal,
        vertical,
        resized: (out_h, out_w),
    })
}

/// Offset of a centred crop of `crop` within `len`: torchvision's `int(round((len - crop) / 2))`,
/// where Python's `round` sends halves to the even neighbour (difference 1 → 0, 3 → 2, 5 → 2).
pub fn crop_offset(len: usize, crop: usize) -> usize {
    let diff = len.saturating_sub(crop);
    let half = diff / 2;
    // An odd difference leaves exactly .5; round it to whichever neighbour is even.
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}
