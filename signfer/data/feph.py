"""FePh: facial expressions in PHOENIX-2014 sign-language frames.

The dataset (Harvard Dataverse, doi:10.7910/DVN/358QMQ) unpacks to::

    root/
      FePh_labels.csv   columns "External ID" (a PHOENIX-2014 frame name) and
                        "Facial_label" (digits, one per label; empty = face not visible)
      FePh_images/      one PNG per "External ID"

The label format is known from the dataset's users' code, not from the file:
``Facial_label`` is read as text (``04`` is neutral + happiness, not ``4``),
harmless variants (``4, 5``, ``[4]``, ``'45'``) are accepted and anything else
is refused with the file and line.

Example:
    >>> table = load_feph("~/data/FePh")  # doctest: +SKIP
    >>> table.samples.loc[0, ["label", "group", "source"]].tolist()  # doctest: +SKIP
    ['happiness', '02August_2010_Monday_heute_default-7', 'FePh_labels.csv:2']
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from signfer.data.manifest import (
    build_table,
    path_inside,
    path_problem,
    raise_missing,
    read_csv_records,
)
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.labels import FEPH_CODES

CSV_NAME = "FePh_labels.csv"
IMAGE_DIR = "FePh_images"
ID_COLUMN = "External ID"
LABEL_COLUMN = "Facial_label"

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_WRAPPERS = {"[": "]", "(": ")", '"': '"', "'": "'"}
_LEGEND = ", ".join(f"{code} {name}" for code, name in sorted(FEPH_CODES.items()))
# Everything before ".avi" is the PHOENIX video, e.g.
# 02August_2010_Monday_heute_default-7.avi_pid0_fn000008-0 -> 02August_2010_Monday_heute_default-7
_PHOENIX = re.compile(r"^(?P<video>.+?)\.avi(?:_|$)", re.IGNORECASE)
_FRAME = re.compile(r"^(?P<video>.+)_fn\d")


def parse_facial_label(value: str, where: str = LABEL_COLUMN) -> tuple[str, ...]:
    """Decode one ``Facial_label`` value into canonical class names.

    Args:
        value: the text of the cell.
        where: ``file.csv:LINE`` for the error message.

    Returns:
        The distinct classes in code order (a repeated digit counts once);
        ``()`` for an empty value, which FePh uses for "face not visible".

    Raises:
        SignferError: for anything but digits 0-7 separated by nothing, commas
            or blanks, optionally wrapped in brackets or quotes.

    Example:
        >>> parse_facial_label("54")
        ('happiness', 'sadness')
        >>> parse_facial_label("[4]")
        ('happiness',)
        >>> parse_facial_label("04")
        ('neutral', 'happiness')
    """
    text = value.strip()
    while len(text) >= 2 and _WRAPPERS.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    codes: set[str] = set()
    for token in re.split(r"[,\s]+", text):
        token = token.strip("'\"")
        if not token:
            continue
        if not re.fullmatch(r"[0-7]+", token):
            raise SignferError(
                f"{where}: unknown label code {value!r} (expected digits 0-7, one per label: "
                f"{_LEGEND}; e.g. '4', or '45' for two labels)"
            )
        codes.update(token)
    return tuple(FEPH_CODES[c] for c in sorted(codes))


def phoenix_video_id(file_name: str) -> str:
    """The PHOENIX-2014 video that a frame file belongs to: the split group.

    Frames of one video are near-duplicates, so they must stay on one side of
    a split. The video is everything before ``.avi``. Names without ``.avi``
    fall back to the stem up to its last ``_fn<digits>`` (the frame number),
    and failing that to the whole stem, which makes the frame its own group
    (no grouping for that file).

    Args:
        file_name: an ``External ID``, with or without ``.png`` or folders.

    Example:
        >>> phoenix_video_id("02August_2010_Monday_heute_default-7.avi_pid0_fn000008-0.png")
        '02August_2010_Monday_heute_default-7'
        >>> phoenix_video_id("clip12_fn000003")
        'clip12'
        >>> phoenix_video_id("face_0001.png")
        'face_0001'
    """
    name = file_name.replace("\\", "/").rsplit("/", 1)[-1]
    stem = name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            stem = name[: -len(suffix)]
            break
    for pattern in (_PHOENIX, _FRAME):
        match = pattern.match(stem)
        if match:
            return match["video"]
    return stem


#: Column names of a PHOENIX corpus file: the video id, and who signs it
#: (PHOENIX-2014 ``id|folder|signer|annotation``; PHOENIX-2014-T ``name|...|speaker|...``).
CORPUS_ID_COLUMNS = ("id", "name")
CORPUS_SIGNER_COLUMNS = ("signer", "speaker")


def read_signers(corpus_files) -> dict[str, str]:
    """Video id -> signer, from PHOENIX corpus files (``|``-separated, as released).

    Each line is split at its first ``|`` signs only as far as the header has
    columns, so a ``|`` in the gloss or translation text at the end of a line
    cannot shift the id or the signer.

    Args:
        corpus_files: one path or several, e.g. the ``train``, ``dev`` and
            ``test`` ``.corpus.csv`` files of ``phoenix-2014-multisigner/annotations/manual/``.

    Raises:
        SignferError: a file that is missing or lacks the columns, a line
            without an id or signer, or a video listed with two signers.
    """
    files = [corpus_files] if isinstance(corpus_files, (str, os.PathLike)) else list(corpus_files)
    if not files:
        raise SignferError("signers: no PHOENIX corpus file given")
    signers: dict[str, str] = {}
    where: dict[str, str] = {}
    for file in map(Path, files):
        try:
            lines = file.expanduser().read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise SignferError(f"{file}: PHOENIX corpus file not found (--signers)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise SignferError(f"{file}: not a readable PHOENIX corpus file ({e})") from None
        header = [c.strip().lower() for c in lines[0].split("|")] if lines else []
        id_col = next((header.index(c) for c in CORPUS_ID_COLUMNS if c in header), None)
        signer_col = next((header.index(c) for c in CORPUS_SIGNER_COLUMNS if c in header), None)
        if id_col is None or signer_col is None:
            raise SignferError(
                f"{file}: a PHOENIX corpus file has '|'-separated columns id|folder|signer|annotation "
                f"(or name|...|speaker|...); this one starts {lines[0][:80] if lines else 'empty'!r}")
        last = max(id_col, signer_col)
        for line_no, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            fields = line.split("|", len(header) - 1)
            if len(fields) <= last:
                raise SignferError(f"{file}:{line_no}: {len(fields)} field(s), the header has {len(header)}")
            video, signer = fields[id_col].strip(), fields[signer_col].strip()
            if not video or not signer:
                raise SignferError(f"{file}:{line_no}: empty {header[id_col] if not video else header[signer_col]}")
            if signers.get(video, signer) != signer:
                raise SignferError(f"{file}:{line_no}: video {video} is signed by {signer} here but by "
                                   f"{signers[video]} in {where[video]}")
            signers[video], where[video] = signer, f"{file}:{line_no}"
    return signers


def _check_flag(value: object, name: str) -> bool:
    # A YAML "false" that arrives as a string would otherwise be truthy.
    if not isinstance(value, bool):
        raise SignferError(f"option {name} must be true or false, got {value!r}")
    return value


def _locate(root: str | os.PathLike) -> tuple[Path, Path]:
    given = Path(os.path.abspath(Path(root).expanduser()))
    if given.is_file():
        return given.parent, given
    csv_path = given / CSV_NAME
    if not csv_path.is_file():
        raise SignferError(
            f"FePh labels not found: looked for {csv_path} (pass the folder that holds "
            f"{CSV_NAME} and {IMAGE_DIR}/)"
        )
    return given, csv_path


def load_feph(
    root: str | os.PathLike, *, keep_multilabel: bool = False, keep_none: bool = False,
    signers=None,
) -> SampleTable:
    """Load FePh as a sample table grouped by PHOENIX video, or by signer.

    The default is the target paper's protocol: single-label rows only, class
    ``none`` (code 7) left out. Rows with an empty label (face not visible) are
    always skipped. Every skipped row is listed in ``table.skipped`` with its
    reason.

    Multi-label policy (``keep_multilabel=True``): a row with several labels
    becomes one sample per label, all with the same path and group, so the
    image counts once for each of its classes. Whether a row is multi-label is
    decided on all its codes, ``7`` included: with the defaults, ``47`` is
    skipped as multi-label; with ``keep_multilabel=True`` and
    ``keep_none=False`` it yields one ``happiness`` sample and a skip entry for
    the dropped ``none``.

    Duplicates: an image listed again with the same label is skipped as a
    duplicate row (the first row counts); an image listed with different
    labels is skipped on every row, as conflicting. Both are listed in
    ``table.skipped``.

    Image paths are ``FePh_images/<External ID>``, with ``.png`` appended when
    the id has no image suffix. Ids must stay inside ``FePh_images/``. Only the
    existence of the images of kept rows is checked; decoding happens later.

    Args:
        root: the folder holding ``FePh_labels.csv`` and ``FePh_images/``, or
            the CSV file itself.
        keep_multilabel: keep multi-label rows, one sample per label.
        keep_none: keep class ``none`` (code 7).
        signers: PHOENIX corpus file(s) (:func:`read_signers`): group by the
            signer of each frame's video instead, so that no signer is on
            both sides of a fold (PHOENIX-2014 has 9 signers: a test fold of
            unseen people, as when annotating a new signer). Every kept
            frame's video must be in them.

    Returns:
        A :class:`SampleTable` named ``FePh``; ``group`` is the PHOENIX video
        (see :func:`phoenix_video_id`), or with ``signers`` its signer;
        ``source`` is ``FePh_labels.csv:LINE`` with the header as line 1.

    Raises:
        SignferError: if the CSV is not found (naming where it was looked
            for), lacks a column, holds an unknown label code, an empty id or
            an id that leaves the image folder, if an image is missing, or if
            no row is usable.

    Example:
        >>> table = load_feph("FePh", keep_multilabel=True)  # doctest: +SKIP
        >>> print(table.summary())  # doctest: +SKIP
    """
    keep_multilabel = _check_flag(keep_multilabel, "keep_multilabel")
    keep_none = _check_flag(keep_none, "keep_none")
    root, csv_path = _locate(root)
    images = root / IMAGE_DIR
    if not images.is_dir():
        raise SignferError(f"FePh images not found: looked for {images}/ beside {csv_path.name}")
    records, _ = read_csv_records(csv_path, (ID_COLUMN, LABEL_COLUMN))

    parsed = []
    for line, values in records:
        where = f"{csv_path.name}:{line}"
        labels = parse_facial_label(values[LABEL_COLUMN], where)
        ident = values[ID_COLUMN].strip()
        if not ident:
            raise SignferError(f"{where}: empty {ID_COLUMN!r}")
        if not ident.lower().endswith(_IMAGE_SUFFIXES):
            ident += ".png"
        # Checked on every row, skipped or not: a hostile id is an error in the file.
        parsed.append((where, ident, path_inside(images, ident, where), labels))
    # An image listed twice counts once: a repeated row is skipped; rows that
    # give one image different labels are all skipped (which one is right?).
    labelled: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for where, _, path, labels in parsed:
        labelled.setdefault(path, []).append((where, labels))

    rows: list[tuple[str, str, str | None, str]] = []
    skipped: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    for where, ident, path, labels in parsed:
        listed = labelled[path]
        if len({ls for _, ls in listed}) > 1:
            detail = ", ".join(f"{w} {'+'.join(ls) or 'empty'}" for w, ls in listed)
            skipped.append((where, f"conflicting labels for one image ({detail})"))
            continue
        if listed[0][0] != where:
            skipped.append((where, f"duplicate row (same image as {listed[0][0]})"))
            continue
        if not labels:
            skipped.append((where, "empty label (face not visible)"))
            continue
        if len(labels) > 1 and not keep_multilabel:
            skipped.append((where, f"multi-label ({', '.join(labels)})"))
            continue
        kept = [label for label in labels if keep_none or label != "none"]
        if len(kept) < len(labels):
            what = "class none dropped from a multi-label row" if kept else "class none"
            skipped.append((where, f"{what} (--keep-none, keep_none=True in Python, keeps it)"))
        if not kept:
            continue
        if path_problem(path):
            missing.append((where, path))
            continue
        group = phoenix_video_id(ident)
        rows.extend((path, label, group, where) for label in kept)
    raise_missing(missing)
    if signers is not None:
        rows = _by_signer(rows, read_signers(signers))
    hint = "" if keep_multilabel else "; keep_multilabel=True keeps multi-label rows"
    return build_table(rows, skipped, name="FePh", where=csv_path, hint=hint)


def _by_signer(rows: list[tuple], signer_of: dict[str, str]) -> list[tuple]:
    unknown = sorted({group for _, _, group, _ in rows if group not in signer_of})
    if unknown:
        videos = len({group for _, _, group, _ in rows})
        raise SignferError(
            f"--signers: {len(unknown)} of the {videos} FePh videos are in none of the corpus files "
            f"(e.g. {unknown[0]}); pass the corpus files of every PHOENIX-2014 split (train, dev and test)")
    return [(path, label, signer_of[group], where) for path, label, group, where in rows]
