"""Manifest CSVs: any image set described by ``path,label[,group]`` rows.

Also home of the CSV and path helpers that the FePh and folder adapters share,
so that every adapter reads text the same way, names rows the same way
(``file.csv:LINE``) and refuses paths that leave the dataset the same way.

Example:
    A manifest beside its images::

        path,label,group
        clips/a/0001.png,happy,a
        clips/a/0002.png,neutral,a
        clips/b/0001.png,,b

    >>> table = load_manifest("faces/manifest.csv")  # doctest: +SKIP
    >>> table.samples["label"].tolist()  # doctest: +SKIP
    ['happiness', 'neutral']
"""

from __future__ import annotations

import csv
import difflib
import errno
import os
import stat
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from signfer.data.table import COLUMNS, SampleTable
from signfer.errors import SignferError
from signfer.labels import CANONICAL, EXTRA, SYNONYMS, canonical, is_known

Record = tuple[int, dict[str, str]]


def read_csv_records(
    path: Path, required: Sequence[str], optional: Sequence[str] = ()
) -> tuple[list[Record], list[str]]:
    """Read a CSV as text, keeping each record's line number.

    Every value stays a string (``04`` is not ``4``). Column names match after
    stripping blanks and ignoring case; a UTF-8 byte-order mark is ignored.
    Rows whose fields are all empty (spreadsheet padding) are dropped.

    The csv module is used rather than pandas because pandas drops blank
    lines, which would shift the line numbers that error messages cite.

    Args:
        path: the CSV file.
        required: column names that must be present.
        optional: column names read when present.

    Returns:
        ``(records, present)``: ``records`` is a list of ``(line, values)``,
        ``line`` being the 1-based line where the record starts (the header is
        line 1) and ``values`` mapping each present requested name to its text
        (missing trailing fields read as ``""``); ``present`` lists the optional
        names that the file has.

    Raises:
        SignferError: on missing columns (naming the file, the missing and
            the found columns), on undecodable text, or on a row with more
            fields than the header (an unquoted ``4,5`` would otherwise shift
            silently into a neighbouring column), or on malformed quoting (a quote
            left open would otherwise swallow every row after it).
    """
    start = 1  # the line where the record being read starts
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            # strict: a stray quote is an error, not a field that swallows
            # every row after it.
            reader = csv.reader(f, strict=True)
            try:
                header = next(reader)
            except StopIteration:
                raise SignferError(f"{path}: the file is empty (expected a header row)") from None
            index = {name.strip().lower(): i for i, name in enumerate(header)}
            missing = [c for c in required if c.lower() not in index]
            if missing:
                raise SignferError(
                    f"{path}: missing column(s) {missing}; columns found: {header}"
                )
            present = [c for c in optional if c.lower() in index]
            wanted = {c: index[c.lower()] for c in [*required, *present]}
            records: list[Record] = []
            start = reader.line_num + 1
            for row in reader:
                line, start = start, reader.line_num + 1
                if not any(field.strip() for field in row):
                    continue
                if len(row) > len(header):
                    raise SignferError(
                        f"{path.name}:{line}: {len(row)} fields but the header has "
                        f"{len(header)} (quote values that contain commas, e.g. \"4,5\")"
                    )
                records.append(
                    (line, {c: row[i] if i < len(row) else "" for c, i in wanted.items()})
                )
    except UnicodeDecodeError as e:
        raise SignferError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise SignferError(
            f"{path.name}:{start}: unreadable CSV row ({e}; is a quote left open?)"
        ) from None
    return records, present


def path_inside(base: str | os.PathLike, relative: str, where: str) -> str:
    """Join ``relative`` to ``base``, refusing any result outside ``base``.

    The check is lexical (``..`` and absolute paths are refused) rather than
    through :func:`os.path.realpath`, so that a dataset whose folder or files
    are symlinks into a shared store still loads: the threat is the text of a
    CSV, not links that the dataset's owner made.

    Args:
        base: the folder that paths must stay inside.
        relative: the path as written in the file.
        where: ``file.csv:LINE`` of the row, for the error message.

    Returns:
        The absolute, normalised path (str).

    Raises:
        SignferError: for an absolute path or one that leaves ``base``.

    Example:
        >>> path_inside("/data/FePh_images", "a.png", "x.csv:2")
        '/data/FePh_images/a.png'
    """
    base_abs = os.path.abspath(base)
    if "\0" in relative:
        raise SignferError(f"{where}: path {relative!r} contains a NUL character")
    if os.path.isabs(relative):
        raise SignferError(
            f"{where}: absolute path {relative!r} refused; paths must be relative to {base_abs}"
        )
    full = os.path.normpath(os.path.join(base_abs, relative))
    if os.path.commonpath([full, base_abs]) != base_abs:
        raise SignferError(f"{where}: path {relative!r} leaves the dataset folder {base_abs}")
    return full


def path_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a readable image file, in a few words; ``None`` when it is a file.

    Tells a missing file from a broken or looping symbolic link and a folder,
    so that a message never says "not found" of a file that is there.

    >>> path_problem("/no/such/file.png")
    'image not found'
    """
    try:
        st = os.stat(path)
    except ValueError:  # e.g. an embedded NUL
        return "not a valid path"
    except (FileNotFoundError, NotADirectoryError):
        if os.path.islink(path):
            return f"broken symbolic link (to {os.readlink(path)})"
        return "image not found"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop, not an image"
        return (e.strerror or type(e).__name__).lower()
    if stat.S_ISDIR(st.st_mode):
        return "a folder, not an image"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def raise_missing(missing: list[tuple[str, str]]) -> None:
    """Raise one error for rows whose image file is absent: the first, and how many."""
    if not missing:
        return
    where, path = missing[0]
    more = f" (and {len(missing) - 1} more rows with missing images)" if len(missing) > 1 else ""
    raise SignferError(f"{where}: {path_problem(path) or 'image not found'}: {path}{more}")


def build_table(
    rows: list[tuple[str, str, str | None, str]],
    skipped: Iterable[tuple[str, str]],
    *,
    name: str,
    where: str | os.PathLike,
    hint: str = "",
    groups_are_paths: bool = False,
) -> SampleTable:
    """Assemble a :class:`SampleTable`, or explain why nothing was usable.

    Args:
        rows: ``(path, label, group, source)`` tuples.
        skipped: ``(source, reason)`` tuples.
        name: the table's name.
        where: the file or folder to name if no row is usable.
        hint: advice appended to that error, e.g. which option keeps more.
        groups_are_paths: the groups are the image paths, for want of given ones.

    Raises:
        SignferError: when ``rows`` is empty; the message names ``where`` and
            counts the skipped rows by reason.
    """
    skipped = pd.DataFrame(list(skipped), columns=["source", "reason"])
    if not rows:
        counts = Counter(r.split(" (")[0] for r in skipped["reason"])
        detail = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
        detail = f" ({len(skipped)} skipped: {detail})" if detail else ""
        raise SignferError(f"{where}: no usable samples{detail}{hint}")
    samples = pd.DataFrame(rows, columns=list(COLUMNS)).astype({"group": object})
    return SampleTable(samples=samples, name=name, skipped=skipped, groups_are_paths=groups_are_paths)


#: Group values that spreadsheets and pandas write for a missing value: never a group name.
MISSING_VALUES = frozenset({"nan", "na", "n/a", "null", "none", "<na>"})


def unknown_label_error(label: str, where: str) -> SignferError:
    """A typo in a label would silently become a class of its own: say so, with the known names."""
    close = difflib.get_close_matches(label.strip().lower(), list(SYNONYMS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return SignferError(
        f"{where}: unknown label {label!r}{hint}; known: {', '.join(CANONICAL + EXTRA)} (and synonyms "
        "such as happy, sad, angry); allow_new_labels=True (--allow-new-labels) keeps it as a class of its own"
    )


def load_manifest(csv_path: str | os.PathLike, *, allow_new_labels: bool = False) -> SampleTable:
    """Load images listed in a CSV with columns ``path``, ``label`` and optional ``group``.

    Path policy: a relative path is read from the CSV's folder and must stay
    inside it (``../`` escapes are refused); an absolute path is taken as
    written, since only the manifest's author can have written it.

    Labels go through :func:`signfer.labels.canonical` (``happy`` ->
    ``happiness``). A name that is neither a canonical class nor a synonym
    (a typo such as ``hapy``) is an error listing the known names, unless
    ``allow_new_labels``, which keeps it lower-cased as a class of its own. A
    row with an empty label is skipped and counted. When the ``group`` column
    is present, every used row must fill it (and an image listed on several
    rows must name the same group on each): a half-grouped table would let
    frames of one video land on both sides of a split; a group written as a
    missing value (``NaN``, ``NA``, ``null``, ``None``, any case) counts as
    empty, since a spreadsheet's blanks would otherwise all become one group.
    Without it, each image
    is its own group (its path), so that an image listed under two labels
    never lands on both sides of a split; frames of one video are then split
    apart, which ``data summary`` points out.

    Args:
        csv_path: the manifest file.
        allow_new_labels: keep labels that are not known class names as
            classes of their own (another label set) instead of refusing them.

    Returns:
        A :class:`SampleTable` named after the file's stem, with
        ``source`` = ``manifest.csv:LINE`` and ``group`` = the path when the
        file has no group column.

    Raises:
        SignferError: if the file is absent or lacks ``path``/``label``, a
            path is empty, leaves the folder or names no file, a group is
            empty (or a missing value), an image is in two groups, a label is unknown (without
            ``allow_new_labels``), or no row is usable.

    Example:
        >>> table = load_manifest("faces/manifest.csv")  # doctest: +SKIP
        >>> table.has_groups  # doctest: +SKIP
        True
    """
    if not isinstance(allow_new_labels, bool):
        raise SignferError(f"option allow_new_labels must be true or false, got {allow_new_labels!r}")
    csv_path = Path(csv_path).expanduser()
    if csv_path.is_dir():
        raise SignferError(f"{csv_path}: is a folder; pass the manifest CSV file itself")
    if not csv_path.is_file():
        raise SignferError(f"manifest not found: {csv_path.absolute()}")
    records, present = read_csv_records(csv_path, ("path", "label"), ("group",))
    has_group = "group" in present
    base = csv_path.absolute().parent

    rows: list[tuple[str, str, str | None, str]] = []
    skipped: list[tuple[str, str]] = []
    missing: list[tuple[str, str]] = []
    first_group: dict[str, tuple[str, str]] = {}  # path -> (group, where) of its first row
    for line, values in records:
        where = f"{csv_path.name}:{line}"
        written = values["path"].strip()
        if not written:
            raise SignferError(f"{where}: empty path")
        if os.path.isabs(written):
            path = os.path.normpath(written)
        else:
            path = path_inside(base, written, where)
        label = values["label"].strip()
        if not label:
            skipped.append((where, "empty label"))
            continue
        if not (allow_new_labels or is_known(label)):
            raise unknown_label_error(label, where)
        group = path
        if has_group:
            group = values["group"].strip()
            if not group or group.lower() in MISSING_VALUES:
                what = f"group {group!r} is a missing value" if group else "empty group"
                raise SignferError(
                    f"{where}: {what} (when the group column is present, "
                    "every row must name its group)"
                )
            seen_group, seen_where = first_group.setdefault(path, (group, where))
            if seen_group != group:
                raise SignferError(
                    f"{where}: {written} is in group {group!r} here but in {seen_group!r} on "
                    f"{seen_where}; one image belongs to one group, or it could land on both "
                    "sides of a split"
                )
        if path_problem(path):
            missing.append((where, path))
            continue
        rows.append((path, canonical(label), group, where))
    raise_missing(missing)
    return build_table(rows, skipped, name=csv_path.stem, where=csv_path, groups_are_paths=not has_group)
