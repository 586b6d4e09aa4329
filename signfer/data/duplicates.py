"""Exact and near-exact duplicate faces, within a sample table and across tables.

Public face sets repeat faces: 280 of FER2013's 3,589 validation faces are
pixel-identical to training faces (13 of them under another label), and about
as many again are the same photograph re-cropped, re-compressed or retouched.
A model scores far higher on faces it trained on, so a validation figure that
keeps them flatters; within one table, copies of a face in two different
groups can land on both sides of a fold.

Two faces are

* **exact** duplicates when their pixels are identical after grayscale
  conversion (PIL's ``L``), and
* **near** duplicates when their perceptual hashes differ in at most
  ``max_distance`` of 256 bits. The hash (a DCT pHash, as in Zauner 2010 and the
  ``imagehash`` package, with 16 x 16 coefficients instead of 8 x 8): the face in
  grayscale, resized to 64 x 64 (Lanczos), 2-D DCT, the 16 x 16
  lowest-frequency coefficients, each bit = coefficient above their median.
  Brightness, contrast, JPEG noise and a few pixels of re-cropping hardly
  move it.

With ``mirror`` (the default) a face also matches the mirror image of another,
because training with horizontal flips sees both.

The default threshold, 64 bits (a quarter), was set by looking at FER2013:
among validation faces whose nearest training face lies 56-63 bits away,
36 of 36 sampled pairs were the same photograph, at 64-66 bits 22 of 24,
at 68-70 bits about half, at 72-79 bits 6 of 36; below 56 all were.

The FER2013 list kept in the repository (``fer2013-validation``, see
:data:`LISTS`) is regenerated with::

    signfer data duplicates --dataset folder --root ../shared/data/fer2013 \\
        --split validation --against train --out signfer/data/lists/fer2013_validation_duplicates.csv

Example:
    >>> val = load_dataset("folder", "../shared/data/fer2013", split="validation")  # doctest: +SKIP
    >>> train = load_dataset("folder", "../shared/data/fer2013", split="train")  # doctest: +SKIP
    >>> dups = find_duplicates(val, against=train)  # doctest: +SKIP
    >>> dups["kind"].value_counts()  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dctn

from signfer.data.cache import read_rgb
from signfer.data.table import SampleTable
from signfer.errors import SignferError, first_line

#: Near duplicates: at most this many of the 256 hash bits differ (see the module docstring).
NEAR_DISTANCE = 64
HASH_SIDE = 64  # the face is resized to this before the DCT
HASH_FREQS = 16  # 16 x 16 coefficients = 256 bits
HASH_WORDS = HASH_FREQS * HASH_FREQS // 64

#: Duplicate lists that ship with signfer, by name (``--exclude NAME``).
LISTS: dict[str, Path] = {
    "fer2013-validation": Path(__file__).parent / "lists" / "fer2013_validation_duplicates.csv",
}

#: Columns of :func:`find_duplicates`' table.
COLUMNS = ("path", "label", "group", "match_path", "match_label", "match_group", "kind", "distance")
#: Columns of a duplicate list file (paths relative to the dataset root).
LIST_COLUMNS = ("file", "label", "reason", "distance", "match", "match_label")


@dataclass(frozen=True)
class ImageHashes:
    """What :func:`hash_images` computes for N images."""

    exact: np.ndarray  #: (N,) SHA-1 of the grayscale pixels and shape, as text
    exact_mirror: np.ndarray  #: (N,) the same of the mirror image
    phash: np.ndarray  #: (N, 4) uint64: the 256-bit perceptual hash
    phash_mirror: np.ndarray  #: (N, 4) uint64: that of the mirror image


def _gray(path: str, source: str) -> np.ndarray:
    # read_rgb names the file (and row) when it cannot be read; RGB -> L is
    # PIL's own conversion, the identity on images that were grey already
    return np.asarray(Image.fromarray(read_rgb(path, source)).convert("L"))


def _bits(coeffs: np.ndarray) -> np.ndarray:
    """(n, F, F) DCT coefficients -> (n, 4) uint64: each bit = coefficient above the image's median."""
    flat = coeffs.reshape(len(coeffs), -1)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64)


def hash_images(paths, sources=None, chunk: int = 2048) -> ImageHashes:
    """Exact and perceptual hashes of each image file, and of its mirror image.

    Args:
        paths: image files.
        sources: where each path came from, for error messages (default: the paths).
        chunk: images per batched DCT.

    Raises:
        SignferError: naming the first file that cannot be read.
    """
    paths = [str(p) for p in paths]
    sources = list(sources) if sources is not None else paths
    exact, exact_m, ph, ph_m = [], [], [], []
    # odd horizontal frequencies change sign when the image is mirrored (DCT-II)
    sign = np.where(np.arange(HASH_FREQS) % 2, -1.0, 1.0)[None, None, :]
    for start in range(0, len(paths), chunk):
        small = []
        for path, source in zip(paths[start:start + chunk], sources[start:start + chunk]):
            g = _gray(path, source)
            shape = f"{g.shape[0]}x{g.shape[1]}|".encode()
            exact.append(hashlib.sha1(shape + g.tobytes()).hexdigest())
            exact_m.append(hashlib.sha1(shape + np.ascontiguousarray(g[:, ::-1]).tobytes()).hexdigest())
            im = Image.fromarray(g).resize((HASH_SIDE, HASH_SIDE), Image.LANCZOS)
            small.append(np.asarray(im, np.float64))
        if not small:
            continue
        coeffs = dctn(np.stack(small), axes=(1, 2), norm="ortho")[:, :HASH_FREQS, :HASH_FREQS]
        ph.append(_bits(coeffs))
        ph_m.append(_bits(coeffs * sign))
    empty = np.zeros((0, HASH_WORDS), np.uint64)
    return ImageHashes(np.asarray(exact, object), np.asarray(exact_m, object),
                       np.concatenate(ph) if ph else empty, np.concatenate(ph_m) if ph_m else empty)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    table = np.array([i.bit_count() for i in range(256)], np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between (n, 4) and (m, 4) uint64 hashes, as an (n, m) int array."""
    return _popcount(a[:, None, :] ^ b[None, :, :]).sum(-1, dtype=np.int64)


def _nearest(a: np.ndarray, b: np.ndarray, b_mirror: np.ndarray | None, earlier_only: bool,
             chunk: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``a``: index of the nearest hash in ``b`` (or its mirror), the
    distance and whether the mirror matched; with ``earlier_only`` (a is b), among
    the rows before it only (row 0 gets distance 257)."""
    n = len(a)
    index = np.zeros(n, np.int64)
    dist = np.full(n, 257, np.int64)
    mirrored = np.zeros(n, bool)
    if len(b) == 0:
        return index, dist, mirrored
    cols = np.arange(len(b))
    for s in range(0, n, chunk):
        d = hamming(a[s:s + chunk], b)
        m = np.zeros_like(d, bool)
        if b_mirror is not None:
            dm = hamming(a[s:s + chunk], b_mirror)
            m = dm < d
            d = np.where(m, dm, d)
        if earlier_only:
            d[cols[None, :] >= np.arange(s, s + len(d))[:, None]] = 257
        j = d.argmin(1)
        rows = np.arange(len(d))
        index[s:s + chunk], dist[s:s + chunk], mirrored[s:s + chunk] = j, d[rows, j], m[rows, j]
    return index, dist, mirrored


def find_duplicates(table: SampleTable, against: SampleTable | None = None, *,
                    max_distance: int = NEAR_DISTANCE, mirror: bool = True) -> pd.DataFrame:
    """Faces of ``table`` that repeat a face of ``against``, or an earlier face of ``table``.

    Each face of ``table`` gets at most one row: its best match, an exact one
    before a near one, the nearest near one otherwise (ties: the first).
    Without ``against``, a face is matched with the faces listed before it, so
    ``n`` copies of a face give ``n - 1`` rows, each naming the first copy;
    a file listed on several rows (a face under several labels) is not a copy
    of itself.

    Args:
        table: the faces to check.
        against: other faces (another split); ``None``: ``table`` itself.
        max_distance: near duplicates differ in at most this many of the 256
            hash bits; 0 keeps only faces whose hashes agree, -1 exact copies only.
        mirror: also match the mirror image of each face.

    Returns:
        A DataFrame with :data:`COLUMNS`: the face (``path``, ``label``,
        ``group``), its match (``match_*``), ``kind`` (``exact``, ``near``,
        ``exact, mirrored``, ``near, mirrored``) and ``distance`` (hash bits
        that differ; 0 for exact copies), in ``table`` order.

    Raises:
        SignferError: naming the first image that cannot be read.
    """
    if not isinstance(max_distance, (int, np.integer)) or not -1 <= max_distance <= 256:
        raise SignferError(f"max_distance must be a whole number of hash bits from -1 to 256, "
                           f"got {max_distance!r}")
    s = table.samples
    h = hash_images(s["path"], s["source"])
    other = table if against is None else against
    o = other.samples
    ho = h if against is None else hash_images(o["path"], o["source"])

    # exact: the first face of `other` with the same pixels (or mirrored pixels)
    first: dict[str, int] = {}
    for j, key in enumerate(ho.exact):
        first.setdefault(key, j)
    match = np.full(len(s), -1, np.int64)
    kind = np.empty(len(s), object)
    keys = [(h.exact, "exact")] + ([(h.exact_mirror, "exact, mirrored")] if mirror else [])
    for i in range(len(s)):
        for column, name in keys:
            j = first.get(column[i], -1)
            # within one table only an earlier face counts (not the face itself)
            if j >= 0 and (against is not None or j < i):
                match[i], kind[i] = j, name
                break
    near_j, near_d, near_m = _nearest(h.phash, ho.phash, ho.phash_mirror if mirror else None,
                                      earlier_only=against is None)
    distance = np.where(match >= 0, 0, near_d)
    take_near = (match < 0) & (near_d <= max_distance)
    match = np.where(take_near, near_j, match)
    kind[take_near] = np.where(near_m[take_near], "near, mirrored", "near")
    found = match >= 0
    if against is None:
        # one file on several rows (a face under several labels) is not a copy of itself
        found &= s["path"].to_numpy() != s["path"].to_numpy()[np.maximum(match, 0)]
    rows = np.flatnonzero(found)
    j = match[rows]
    return pd.DataFrame({
        "path": s["path"].to_numpy()[rows], "label": s["label"].to_numpy()[rows],
        "group": s["group"].to_numpy()[rows], "match_path": o["path"].to_numpy()[j],
        "match_label": o["label"].to_numpy()[j], "match_group": o["group"].to_numpy()[j],
        "kind": kind[rows].astype(str), "distance": distance[rows],
    }, columns=list(COLUMNS))


def copy_clusters(table: SampleTable, *, max_distance: int = NEAR_DISTANCE, mirror: bool = True,
                  chunk: int = 256) -> np.ndarray:
    """A cluster number for each row of ``table``: faces that are copies of one another, directly
    or through other copies, share one.

    Unlike :func:`find_duplicates`, which gives each face its one best match,
    every pair counts: exact copies (mirrored too) and every pair of hashes
    within ``max_distance`` bits. So the clusters do not depend on the order of
    the rows. Rows of one file (a face under several labels) are one cluster.

    >>> copy_clusters(table)  # doctest: +SKIP
    array([0, 1, 0, 2])
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    s = table.samples
    n = len(s)
    h = hash_images(s["path"], s["source"])
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    first: dict[str, int] = {}
    for i, key in enumerate(h.exact):
        first.setdefault(key, i)
    keys = [h.exact] + ([h.exact_mirror] if mirror else [])
    links = [(i, first[k[i]]) for k in keys for i in range(n) if k[i] in first and first[k[i]] != i]
    if links:
        rows.append(np.array([a for a, _ in links]))
        cols.append(np.array([b for _, b in links]))
    for start in range(0, n, chunk):
        d = hamming(h.phash[start:start + chunk], h.phash)
        if mirror:
            d = np.minimum(d, hamming(h.phash[start:start + chunk], h.phash_mirror))
        r, c = np.nonzero(d <= max_distance)
        rows.append(r + start)
        cols.append(c)
    r, c = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (rows, cols))
    graph = coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _split_of(path: str) -> str | None:
    """The split folder above the class folder (``.../validation/happy/x.jpg``), if any."""
    from signfer.data.folder import SPLIT_FOLDERS

    return SPLIT_FOLDERS.get(Path(path).parent.parent.name.lower())


def describe(dups: pd.DataFrame, table: SampleTable, against: SampleTable | None = None,
             max_distance: int = NEAR_DISTANCE) -> list[str]:
    """Counts of :func:`find_duplicates`' rows, as lines for ``signfer data summary``."""
    n = len(table.samples)
    where = f"in {against.name}" if against is not None else "earlier in the table"
    if dups.empty:
        return [(f"duplicates: none of the {n} faces repeats a face {where} "
                 f"(exact pixels, or perceptual hash within {max_distance} of 256 bits)")]
    kinds = dups["kind"].str.split(",").str[0].value_counts()
    mirrored = int(dups["kind"].str.contains("mirrored").sum())
    relabelled = int((dups["label"] != dups["match_label"]).sum())
    lines = [(f"duplicates: {len(dups)} of the {n} faces repeat a face {where}: "
              f"{int(kinds.get('exact', 0))} exact (same pixels in grayscale), "
              f"{int(kinds.get('near', 0))} near (perceptual hash within {max_distance} of 256 bits)"
              + (f", {mirrored} of them mirrored" if mirrored else "")
              + f"; {relabelled} under another label")]
    if against is None:
        crossing = sum(1 for p, q in zip(dups["path"], dups["match_path"])
                       if _split_of(p) and _split_of(q) and _split_of(p) != _split_of(q))
        if crossing:
            lines.append(f"  {crossing} of them across splits (faces of one split repeated in another)")
        if table.groups_are_paths or not table.has_groups:
            lines.append("  every face is its own group, so each copy can land in another fold than "
                         "its original")
        else:
            crossing = int((dups["group"].astype(str) != dups["match_group"].astype(str)).sum())
            lines.append(f"  {crossing} of them in another group than their original "
                         "(such copies can land on both sides of a fold)")
    return lines


# ---------------------------------------------------------------- lists of faces to leave out

def to_list(dups: pd.DataFrame, root: str | os.PathLike) -> pd.DataFrame:
    """:func:`find_duplicates`' rows as a duplicate list: paths relative to
    ``root``, or to its folder when ``root`` is a file (a manifest CSV)."""
    root = Path(root).expanduser().resolve()
    if root.is_file():
        root = root.parent

    def rel(p: str) -> str:
        return Path(os.path.relpath(p, root)).as_posix()

    return pd.DataFrame({
        "file": [rel(p) for p in dups["path"]], "label": dups["label"].to_numpy(),
        "reason": dups["kind"].to_numpy(), "distance": dups["distance"].to_numpy(),
        "match": [rel(p) for p in dups["match_path"]], "match_label": dups["match_label"].to_numpy(),
    }, columns=list(LIST_COLUMNS))


def read_list(name_or_path: str | os.PathLike) -> tuple[pd.DataFrame, str]:
    """A duplicate list (a CSV with a ``file`` column) by built-in name or path; also its name.

    Raises:
        SignferError: not a built-in name and not a readable CSV with a ``file``
            column, or a file listed twice.
    """
    name = str(name_or_path)
    path = LISTS.get(name, Path(name).expanduser())
    if not path.is_file():
        raise SignferError(f"{name}: no such duplicate list (a CSV file with a `file` column, "
                           f"or a built-in one: {', '.join(LISTS)})")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise SignferError(f"{path}: not a readable CSV: {first_line(e)}") from None
    if "file" not in df.columns:
        raise SignferError(f"{path}: lacks the `file` column (has {', '.join(df.columns)})")
    twice = df["file"][df["file"].duplicated()]
    if len(twice):
        raise SignferError(f"{path}: {twice.iloc[0]!r} is listed twice")
    return df, name


def _rows_named(paths: pd.Series, entries: pd.Series) -> dict[int, int]:
    """Which rows of a table the entries of a duplicate list name: row position -> entry position.

    An entry names the one row with its file name (FER2013's
    ``PublicTest_<id>.jpg`` names are unique), so a list works whichever folder
    holds the dataset and whether the table was read from the dataset root or
    from a split folder. Where several rows share the file name
    (``a/0001.png``, ``b/0001.png``), it names those whose path ends with the
    entry's whole path.
    """
    parts = [Path(p).parts for p in paths]
    by_name: dict[str, list[int]] = {}
    for i, row_parts in enumerate(parts):
        by_name.setdefault(row_parts[-1], []).append(i)
    named: dict[int, int] = {}
    for k, entry in enumerate(entries):
        if not entry:
            continue
        entry_parts = Path(entry).parts
        rows = by_name.get(entry_parts[-1], [])
        if len(rows) > 1:
            rows = [i for i in rows if parts[i][-len(entry_parts):] == entry_parts]
        named.update((i, k) for i in rows)
    return named


def _mask(n: int, rows: dict[int, int]) -> np.ndarray:
    drop = np.zeros(n, bool)
    drop[list(rows)] = True
    return drop


def drop_listed(table: SampleTable, name_or_path: str | os.PathLike) -> SampleTable:
    """``table`` without the faces on a duplicate list, which join its skipped rows.

    Entries name faces as :func:`_rows_named` says: by file name, or by their
    whole path where file names repeat.

    Raises:
        SignferError: when the list names none of the table's files (the wrong
            list for this dataset).
    """
    listed, name = read_list(name_or_path)
    reasons = listed.get("reason", pd.Series([""] * len(listed))).tolist()
    matches = listed.get("match", pd.Series([""] * len(listed))).tolist()
    named = _rows_named(table.samples["path"], listed["file"])
    if not named:
        raise SignferError(f"{name}: lists {len(listed)} files, none of them in {table.name}; "
                           "is it the list for this dataset?")
    drop = _mask(len(table.samples), named)
    why = [f"on duplicate list {name} ({reasons[k] or 'listed'}"
           + (f" duplicate of {matches[k]})" if matches[k] else ")")
           for k in (named[i] for i in np.flatnonzero(drop))]
    return _without(table, drop, why, f"{table.name} without {name}")


def drop_matched(table: SampleTable, name_or_path: str | os.PathLike) -> SampleTable:
    """``table`` without the faces a duplicate list names as *matches* (its
    ``match`` column: e.g. the training faces that a validation face repeats),
    which join its skipped rows. With :func:`drop_listed` on the other split,
    neither split then holds a face of the other.

    Raises:
        SignferError: the list has no ``match`` column, or none of its matches
            is in ``table``.
    """
    listed, name = read_list(name_or_path)
    if "match" not in listed.columns:
        raise SignferError(f"{name}: has no `match` column, so it cannot say which faces of "
                           f"{table.name} to drop")
    named = _rows_named(table.samples["path"], listed["match"])
    if not named:
        n_matches = int((listed["match"] != "").sum())
        raise SignferError(f"{name}: none of its {n_matches} matched files is in {table.name}; "
                           "is it the list for this dataset?")
    drop = _mask(len(table.samples), named)
    files = listed["file"].tolist()
    why = [f"on duplicate list {name} (repeated by {files[named[i]]})" for i in np.flatnonzero(drop)]
    return _without(table, drop, why, f"{table.name} without {name}'s matches")


def _without(table: SampleTable, drop: np.ndarray, reasons: list[str], name: str) -> SampleTable:
    """``table`` without the rows where ``drop`` is set; they join its skipped
    rows, each with its reason."""
    s = table.samples
    skipped = pd.DataFrame({"source": s["source"].to_numpy()[drop], "reason": reasons})
    return SampleTable(s[~drop], name=name, skipped=pd.concat([table.skipped, skipped], ignore_index=True),
                       classes=table.classes, groups_are_paths=table.groups_are_paths)
