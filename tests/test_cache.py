"""The uint8 image cache: decoded once, reused, keyed by content; face cropping for frame datasets."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from signfer.data.cache import cache_dir, load_images
from signfer.data.spec import equalize
from signfer.data.table import SampleTable
from signfer.errors import SignferError


def table_of(paths, labels=None):
    labels = labels or ["happiness"] * len(paths)
    return SampleTable(pd.DataFrame({"path": [str(p) for p in paths], "label": labels,
                                     "group": [None] * len(paths),
                                     "source": [f"t.csv:{i + 2}" for i in range(len(paths))]}))


def test_images_are_decoded_once_and_reused(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(paths[-1])
    t = table_of(paths)
    a = load_images(t, 16)
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    assert [int(a[i].mean()) for i in range(3)] == [0, 40, 80]
    cached = sorted(cache_dir().glob("images-16px-*.npy"))
    assert len(cached) >= 1
    b = load_images(t, 16)
    assert np.array_equal(a, b)
    # a changed file is a new cache entry, never a stale read
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(paths[0])
    c = load_images(t, 16)
    assert int(c[0].mean()) == 200
    # even when the copy keeps size and mtime, as cp -p or rsync -a do
    before = os.stat(paths[1])
    Image.fromarray(np.full((20, 30, 3), 7, np.uint8)).save(tmp_path / "new.png")
    os.replace(tmp_path / "new.png", paths[1])
    os.utime(paths[1], ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(paths[1]).st_size == before.st_size
    assert int(load_images(t, 16)[1].mean()) == 7


def test_a_damaged_cache_entry_is_made_again(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SIGNFER_CACHE", str(tmp_path / "cache"))  # this test's entry alone
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((20, 30, 3), 50 * (i + 1), np.uint8)).save(paths[-1])
    t = table_of(paths)
    first = load_images(t, 12)
    (entry,) = cache_dir().glob("images-12px-*.npy")
    entry.write_bytes(entry.read_bytes()[:100])  # cut short, as by a full disk
    assert np.array_equal(load_images(t, 12), first)
    assert "is damaged" in capsys.readouterr().err
    np.save(entry, np.zeros((5, 12, 12, 3), np.uint8))  # another table's array
    assert np.array_equal(load_images(t, 12), first)
    assert "not uint8 (2, 12, 12, 3)" in capsys.readouterr().err
    assert np.array_equal(np.load(entry), first)  # and written again


def test_unreadable_image_names_the_file_and_row(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad.write_bytes(b"not a png at all")
    with pytest.raises(SignferError, match=r"t\.csv:3.*bad\.png"):
        load_images(table_of([good, bad]), 8, use_cache=False)


def test_crop_faces_finds_the_face_in_a_frame(tmp_path):
    skdata = pytest.importorskip("skimage.data")
    pytest.importorskip("yuface")
    frame = np.zeros((400, 640, 3), np.uint8)
    face = skdata.astronaut()[40:220, 150:290]          # the astronaut's head
    frame[150:330, 400:540] = face                       # placed off-centre in a larger frame
    path = tmp_path / "frame.png"
    Image.fromarray(frame).save(path)
    whole = load_images(table_of([path]), 32, use_cache=False)
    cropped = load_images(table_of([path]), 32, crop_faces="yunet", use_cache=False)
    # the whole frame is mostly black; the face crop is mostly face
    assert whole.mean() < 40 < cropped.mean()


def test_equalize_spreads_the_histogram():
    rng = np.random.default_rng(0)
    grey = rng.integers(100, 130, (2, 64, 64, 1)).astype(np.uint8)
    im = np.repeat(grey, 3, axis=3)
    out = equalize(im)
    assert out.shape == im.shape and out.dtype == np.uint8
    assert out.max() - out.min() > 200 > im.max() - im.min()
    # grey stays grey: only luminance is equalised (YCbCr rounding may move a channel by a level or two)
    assert np.abs(out[..., 0].astype(int) - out[..., 2]).max() <= 3
