"""Writing tables to disk atomically (CSV, TSV, Parquet) and reading them back.

The columns of the per-frame table are described where it is made,
:mod:`signfer.inference.schema`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from signfer.errors import SignferError
from signfer.io import atomic_path


def parquet_available() -> bool:
    """Whether pandas can write Parquet here (pyarrow is an optional extra)."""
    return importlib.util.find_spec("pyarrow") is not None


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` atomically: Parquet for ``.parquet``, TSV for ``.tsv``, else CSV.

    Args:
        df: the table; its index is not written.
        path: destination; its folder is created.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        SignferError: Parquet was asked for but pyarrow is not installed.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet" and not parquet_available():
        raise SignferError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow)")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, sep="\t" if suffix == ".tsv" else ",")
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table` (CSV, TSV or Parquet).

    Labels of no-face rows come back as ``""``, as they were written.
    """
    path = Path(path)
    if not path.is_file():
        raise SignferError(f"{path}: table not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    for column in ("label", "label_smoothed", "video"):
        if column in df.columns:
            df[column] = df[column].fillna("").astype(str)
    return df
