#!/usr/bin/env python3
"""Independent preprocessing reference: PIL (torchvision's classic ImageNet transform).

A development tool and a CI check (.ci/peer-checks), not run by cargo. For each image it
does what torchvision's `Resize(R)`, `CenterCrop(C)`, `ToTensor()`, `Normalize(mean, std)`
do on a PIL image: convert to RGB, resize the shorter side to R with PIL's antialiased
bilinear filter (the longer side truncated, as torchvision computes it), crop C x C at
torchvision's offsets (round half to even), scale to [0, 1], normalise. It then checks
lookalike's tensor (examples/preprocess_images.rs, N x 3 x C x C) against it.

PIL rounds to 8 bits after each of its two passes; lookalike keeps f32 throughout (like
torchvision's antialiased resize of float tensors). With non-negative filter weights
summing to 1 PIL is within one level (1/255) of the unrounded filter, half a level from
each rounding. So the script also runs PIL's filter unrounded, in float64 (the taps as
PIL's C code computes them), and checks lookalike against both: within 1e-3 levels of the
unrounded filter, within one level of PIL. A wrong tap, weight or offset moves samples by
far more.

Needs only PyPI packages:  pip install numpy pillow

Usage:
    cargo run --release --example preprocess_images -- --resize R --crop C IMAGE... -o x.npy
    python3 tests/reference/pil_reference.py --resize R --crop C --compare x.npy IMAGE...
"""
import argparse
import sys

import numpy as np
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float64)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float64)


def resized_size(w, h, resize):
    """torchvision: the shorter side becomes `resize`, the longer int(resize * long / short)."""
    return (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)


def crop_box(w, h, crop):
    left, top = int(round((w - crop) / 2.0)), int(round((h - crop) / 2.0))
    return left, top, left + crop, top + crop


def normalise(x):
    """H x W x 3 in [0, 1] -> 3 x H x W normalised."""
    return ((x - MEAN) / STD).transpose(2, 0, 1)


def preprocess_pil(path, resize, crop):
    img = Image.open(path).convert("RGB")
    size = resized_size(*img.size, resize)
    if size != img.size:
        img = img.resize(size, Image.BILINEAR)
    img = img.crop(crop_box(*img.size, crop))
    return normalise(np.asarray(img, dtype=np.float64) / 255.0)


def bilinear_taps(in_len, out_len):
    """PIL's antialiased triangle filter (precompute_coeffs in Resample.c), in float64."""
    scale = in_len / out_len
    support = max(scale, 1.0)
    taps = []
    for o in range(out_len):
        centre = (o + 0.5) * scale
        first, end = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_len)
        w = np.maximum(0.0, 1.0 - np.abs((np.arange(first, end) - centre + 0.5) / support))
        taps.append((first, w / w.sum()))
    return taps


def preprocess_unrounded(path, resize, crop):
    """PIL's filter, horizontal pass then vertical, without rounding to 8 bits."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    x = np.asarray(img, dtype=np.float64) / 255.0
    new_w, new_h = resized_size(w, h, resize)
    if (new_w, new_h) != (w, h):
        x = np.stack([(x[:, f:f + len(t), :] * t[None, :, None]).sum(1) for f, t in bilinear_taps(w, new_w)], 1)
        x = np.stack([(x[f:f + len(t), :, :] * t[:, None, None]).sum(0) for f, t in bilinear_taps(h, new_h)], 0)
    left, top, right, bottom = crop_box(new_w, new_h, crop)
    return normalise(x[top:bottom, left:right, :])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--resize", type=int, required=True)
    ap.add_argument("--crop", type=int, required=True)
    ap.add_argument("--compare", required=True, help="lookalike's N x 3 x C x C .npy")
    args = ap.parse_args()

    got = np.load(args.compare).astype(np.float64)
    want_shape = (len(args.images), 3, args.crop, args.crop)
    if got.shape != want_shape:
        sys.exit(f"{args.compare}: shape {got.shape}, expected {want_shape}")
    # In levels (1/255): PIL's two roundings of half a level, f32 sums against float64.
    pil_limit, exact_limit = 1.0 + 1e-3, 1e-3
    failed = 0
    for path, x in zip(args.images, got):
        levels = lambda ref: np.abs(x - ref) * STD[:, None, None] * 255.0
        vs_pil = levels(preprocess_pil(path, args.resize, args.crop))
        vs_exact = levels(preprocess_unrounded(path, args.resize, args.crop))
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(vs_exact), vs_exact.shape))
        ok = vs_pil.max() <= pil_limit and vs_exact.max() <= exact_limit
        failed += not ok
        print(f"  {path}: unrounded filter max {vs_exact.max():.1e} levels at {worst};"
              f" PIL max {vs_pil.max():.3f}, mean {vs_pil.mean():.3f} levels {'OK' if ok else 'FAIL'}")
    print(f"pil-reference: {len(args.images) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
