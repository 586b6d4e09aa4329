"""Class-folder image sets, FER2013 style: ``root/<class>/*.jpg``.

Optionally split first: ``root/train/<class>/...``, ``root/validation/<class>/...``
(or ``val/``), ``root/test/<class>/...``.

Example:
    >>> table = load_folder("../shared/data/fer2013", split="validation")  # doctest: +SKIP
    >>> table.classes  # doctest: +SKIP
    ('anger', 'disgust', 'fear', 'happiness', 'sadness', 'surprise', 'neutral')
"""

from __future__ import annotations

import os
from pathlib import Path

from signfer.data.manifest import build_table, path_problem, raise_missing
from signfer.data.table import SampleTable
from signfer.errors import SignferError
from signfer.labels import canonical

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

#: Split folder names (lower case) and the split each one stands for.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "train", "validation": "validation", "val": "validation", "test": "test",
}
SPLITS: tuple[str, ...] = ("train", "validation", "test")


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise SignferError(f"{folder}: cannot list the folder ({e.strerror or e})") from None


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder (following links); a broken or looping link is an error
    naming it, as a missing image is in the other adapters."""
    try:
        if entry.is_dir():
            return True
    except OSError:
        pass
    # is_symlink() comes from the listing; only a link is stat'ed here (load_folder checks the images)
    if entry.is_symlink() and (problem := path_problem(entry.path)):
        raise SignferError(f"{entry.path}: {problem}; remove or fix the link")
    return False


def _split_folders(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in _entries(root):
        split = SPLIT_FOLDERS.get(entry.name.lower())
        if split is None or not _is_dir(entry):
            continue
        if split in found:
            raise SignferError(
                f"{root}: both {found[split].name}/ and {entry.name}/ look like the "
                f"{split} split; keep one"
            )
        found[split] = Path(entry.path)
    return found


def _choose(root: Path, split: str | None) -> list[Path]:
    if split is not None and not isinstance(split, str):
        raise SignferError(f"option split must be a split name, got {split!r}")
    found = _split_folders(root)
    names = ", ".join(f"{p.name}/" for p in found.values())
    if not found:
        if split not in (None, "all"):
            raise SignferError(
                f"{root}: split={split!r} asked for, but the folder has no split folders "
                "(train/, validation/ or val/, test/); leave split unset"
            )
        return [root]
    choices = ", ".join(repr(s) for s in [*found, "all"])
    if split is None:
        raise SignferError(
            f"{root} holds split folders {names}; choose one with --split (split= in Python): {choices}"
        )
    if split == "all":
        return [found[s] for s in SPLITS if s in found]
    key = SPLIT_FOLDERS.get(split.lower())
    if key not in found:
        raise SignferError(f"{root}: no split {split!r} (found {names}); pass one of {choices}")
    return [found[key]]


def load_folder(root: str | os.PathLike, *, split: str | None = None) -> SampleTable:
    """Load a one-folder-per-class image set.

    Class folder names go through :func:`signfer.labels.canonical` (``angry``
    -> ``anger``, ``happy`` -> ``happiness``); unknown names are kept,
    lower-cased, as their own class. Files with a suffix other than
    .jpg/.jpeg/.png/.bmp (any case), hidden files and folders, files outside
    class folders and sub-folders inside class folders are skipped and listed
    with their reason. Samples have no group (each image is split on its own).

    Args:
        root: the dataset folder.
        split: which split folder to read when ``root`` holds ``train/``,
            ``validation/`` (or ``val/``) or ``test/``: ``"train"``,
            ``"validation"`` (or ``"val"``), ``"test"`` or ``"all"`` for every
            split together. Must be left unset (or ``"all"``) for a root
            without split folders, and is required for one with them, so
            that test images never enter training by accident.

    Returns:
        A :class:`SampleTable` with ``group`` = ``None`` and ``source`` = the
        image path.

    Raises:
        SignferError: if ``root`` is not a folder, ``split`` does not fit the
            layout, an entry is a broken or looping symbolic link (named), or
            no image is found.

    Example:
        >>> table = load_folder("faces", split="train")  # doctest: +SKIP
    """
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.is_dir():
        raise SignferError(f"{root}: not a folder (expected one sub-folder per class)")
    bases = _choose(root, split)

    rows: list[tuple[str, str, str | None, str]] = []
    skipped: list[tuple[str, str]] = []
    for base in bases:
        for class_entry in _entries(base):
            if class_entry.name.startswith("."):
                skipped.append((class_entry.path, "hidden file or folder"))
            elif not _is_dir(class_entry):
                skipped.append((class_entry.path, "file outside class folders"))
            else:
                _read_class(Path(class_entry.path), rows, skipped)
    # A named pipe or device named like an image would block the reader; a
    # broken link would fail later: refuse them now, naming the file.
    raise_missing([(os.path.relpath(path, root), path) for path, *_ in rows if path_problem(path)])
    name = root.name if split is None else f"{root.name}/{split}"
    return build_table(rows, skipped, name=name, where=root)


def _read_class(
    folder: Path, rows: list[tuple[str, str, None, str]], skipped: list[tuple[str, str]]
) -> None:
    label = canonical(folder.name)
    for entry in _entries(folder):
        if entry.name.startswith("."):
            skipped.append((entry.path, "hidden file or folder"))
        elif _is_dir(entry):
            skipped.append((entry.path, "sub-folder inside a class folder (not read)"))
        elif not entry.name.lower().endswith(IMAGE_SUFFIXES):
            suffix = os.path.splitext(entry.name)[1] or "no suffix"
            skipped.append((entry.path, f"not an image ({suffix})"))
        else:
            rows.append((entry.path, label, None, entry.path))
