"""Atomic file writes (a killed run never leaves a half-written result behind) and the cache folder."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success, rename it onto ``path``.

    The temporary file lives in the same folder, so :func:`os.replace` is a
    rename on one file system, hence atomic. On error it is removed and ``path``
    is left as it was.

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
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cache_dir() -> Path:
    """signfer's cache folder: ``$SIGNFER_CACHE``, default ``~/.cache/signfer``."""
    return Path(os.environ.get("SIGNFER_CACHE", Path.home() / ".cache" / "signfer"))


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
