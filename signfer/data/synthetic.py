"""A small labelled face set that signfer draws itself, in FePh's file format.

``make demo`` needs labelled faces, and no labelled sign-language faces may be
shipped. So the demo draws cartoon faces whose expression is given by brows,
eyes and mouth (a smile for happiness, an open "O" for surprise, ...), with
random pose, size, skin tone and noise, and writes them exactly as the FePh
download is laid out (``FePh_labels.csv`` + ``FePh_images/``, PHOENIX-style
frame names grouped into "videos"). Everything downstream is the real pipeline.

These faces are SYNTHETIC: numbers measured on them say that the pipeline
runs, not how well a model recognises human expressions.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from signfer.labels import FEPH_CODES

_CODE = {name: code for code, name in FEPH_CODES.items()}


def draw_face(expression: str, rng: np.random.Generator, size: int = 96) -> Image.Image:
    """One cartoon face showing ``expression`` (a canonical class name)."""
    s = 4 * size  # draw large, then downsample: smooth edges
    bg = tuple(int(v) for v in rng.integers(40, 200, 3))
    im = Image.new("RGB", (s, s), bg)
    d = ImageDraw.Draw(im)
    skin = tuple(int(v) for v in np.clip(np.array([224, 172, 140]) * rng.uniform(0.45, 1.1), 0, 255))
    cx, cy = s / 2 + rng.uniform(-0.04, 0.04) * s, s / 2 + rng.uniform(-0.04, 0.04) * s
    fw, fh = s * rng.uniform(0.30, 0.36), s * rng.uniform(0.38, 0.44)
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    dark = (30, 25, 25)
    lw = max(3, s // 60)
    ey, ex, er = cy - 0.18 * fh * 2, 0.42 * fw, s * 0.035
    wide = expression in ("surprise", "fear")
    narrow = expression in ("anger", "disgust")
    for side in (-1, 1):
        x = cx + side * ex
        h = er * (1.5 if wide else 0.55 if narrow else 1.0)
        d.ellipse([x - er * 1.3, ey - h, x + er * 1.3, ey + h], fill=(245, 245, 245))
        d.ellipse([x - er * 0.6, ey - er * 0.6, x + er * 0.6, ey + er * 0.6], fill=dark)
        # brows: (inner height, outer height) above the eye, in units of er
        inner, outer = {"anger": (1.2, 2.6), "sadness": (3.2, 1.8), "fear": (3.6, 2.6),
                        "surprise": (3.8, 3.8), "disgust": (1.6, 2.2)}.get(expression, (2.4, 2.4))
        xi, xo = x - side * er * 1.4, x + side * er * 1.6
        d.line([(xi, ey - inner * er), (xo, ey - outer * er)], fill=dark, width=lw * 2)
    my, mw = cy + 0.45 * fh, fw * rng.uniform(0.45, 0.6)
    lips = (120, 40, 50)
    if expression == "happiness":
        d.arc([cx - mw, my - 0.5 * mw, cx + mw, my + 0.5 * mw], 10, 170, fill=lips, width=lw * 2)
    elif expression == "sadness":
        d.arc([cx - mw, my, cx + mw, my + 0.8 * mw], 200, 340, fill=lips, width=lw * 2)
    elif expression == "surprise":
        d.ellipse([cx - 0.35 * mw, my - 0.45 * mw, cx + 0.35 * mw, my + 0.45 * mw], fill=(60, 20, 25))
    elif expression == "fear":
        d.ellipse([cx - mw, my - 0.25 * mw, cx + mw, my + 0.25 * mw], fill=(60, 20, 25))
    elif expression == "disgust":
        pts = [(cx - mw, my + 0.1 * mw), (cx - 0.3 * mw, my - 0.15 * mw), (cx + 0.3 * mw, my + 0.15 * mw),
               (cx + mw, my - 0.3 * mw)]
        d.line(pts, fill=lips, width=lw * 2)
        d.line([(cx - 0.2 * fw, cy - 0.05 * fh), (cx, cy + 0.05 * fh), (cx + 0.2 * fw, cy - 0.05 * fh)],
               fill=dark, width=lw)
    elif expression == "anger":
        d.rectangle([cx - mw, my - lw * 1.5, cx + mw, my + lw * 1.5], fill=lips)
    else:  # neutral
        d.line([(cx - mw, my), (cx + mw, my)], fill=lips, width=lw * 2)
    im = im.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR, fillcolor=bg)
    im = im.resize((size, size), Image.LANCZOS).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))
    noise = rng.normal(0, rng.uniform(2, 10), (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(im, np.float64) + noise, 0, 255).astype(np.uint8))


def make_synthetic_feph(root: str | Path, *, per_class: int = 24, n_videos: int = 8,
                        size: int = 96, seed: int = 0) -> Path:
    """Write a synthetic FePh-format dataset under ``root``; return ``root``.

    ``per_class`` faces of each of the seven classes, spread over ``n_videos``
    pseudo-PHOENIX videos (so that grouped cross-validation has groups).
    """
    root = Path(root)
    images = root / "FePh_images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    frame = 0
    classes = ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    for c in classes:
        for i in range(per_class):
            video = f"{1 + i % n_videos:02d}January_2000_Monday_synthetic_default-{i % n_videos}"
            frame += 1
            name = f"{video}.avi_pid0_fn{frame:06d}-0.png"
            draw_face(c, rng, size).save(images / name)
            rows.append((name, _CODE[c]))
    with open(root / "FePh_labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["External ID", "Facial_label"])
        w.writerows(rows)
    (root / "README.txt").write_text(
        "SYNTHETIC cartoon faces drawn by signfer.data.synthetic, in FePh's file format.\n"
        "Not sign-language data; results on them only show that the pipeline runs.\n")
    return root
