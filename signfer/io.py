"""Atomic file writes (a killed run never leaves a half-written result behind), checks that
outputs can be written before the work starts, and the cache folder."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from signfer.errors import SignferError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, rename it onto ``path``.

    The temporary file lives in the same folder, so :func:`os.replace` is a
    rename on one file system, hence atomic. On error it is removed and ``path``
    is left as it was. A file replaced keeps its permission bits.

    >>> with atomic_path("out.csv") as tmp:
    ...     df.to_csv(tmp)                                   # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # os.open with 0o666 honours the umask; tempfile.mkstemp would leave 0600
    # files that other users of a shared run folder cannot read.
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        try:  # a file replaced keeps its permissions (e.g. one its owner made private)
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_out_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Create folder ``path`` if needed and prove that files can be written in it.

    Called before a command starts its work, so that an output it cannot
    write fails in one line first, not with a traceback at the end.

    Raises:
        SignferError: ``path`` is a file, cannot be created (a file on the
            way, a read-only or virtual file system such as ``/proc``), or
            refuses new files; the message names it.
    """
    path = Path(path)
    if path.is_file():
        raise SignferError(f"{path}: is a file, not a folder (the {what}); choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".signfer-write-test.{os.getpid()}.{secrets.token_hex(4)}"
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        os.unlink(probe)
    except OSError as e:
        raise SignferError(f"{path}: cannot write the {what} there ({e.strerror or e})") from None
    return path


def check_out_files(paths: Iterable[str | os.PathLike], what: str = "output") -> None:
    """Each of ``paths`` can be written: it is no folder and its folder takes new files.

    >>> check_out_files(["ann/clip.frames.csv", "ann/clip.eaf"])  # doctest: +SKIP
    """
    for path in map(Path, paths):
        if path.is_dir():
            raise SignferError(f"{path}: is a folder, but the {what} file is to be written there; "
                               "move it away or choose another --out")
        ensure_out_dir(path.parent, f"folder of the {what}")


def cache_dir() -> Path:
    """signfer's cache folder: ``$SIGNFER_CACHE``, default ``~/.cache/signfer``."""
    return Path(os.environ.get("SIGNFER_CACHE", Path.home() / ".cache" / "signfer"))


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
