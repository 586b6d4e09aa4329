"""The per-frame table's column names, and writing tables to disk atomically.

Video inference returns one row per kept frame with the columns

``video``       file name of the video
``frame``       decoded frame index (see :mod:`signfer.inference.video`)
``time_s``      presentation time in seconds
``face``        whether a face was found (bool)
``x y w h``     the face box used (the largest one), NaN without a face
``box_source``  ``detected``, ``tracked`` (box carried from the last detection,
               ``--detect-every N``) or empty when there is no face
``det_score``   the score of the detection the box came from
``n_faces``     how many faces that detection returned
``prob_<class>`` the classifier's probability per class, in the model's
                label order; NaN without a face
``label``       the most probable class, ``""`` without a face
``confidence``  its probability, NaN without a face

and :func:`signfer.inference.annotate.annotate_video` adds smoothed columns.
CSV, ELAN and plots only read this table.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from signfer.errors import SignferError
from signfer.io import atomic_path

PROB_PREFIX = "prob_"


def prob_columns(table: pd.DataFrame) -> list[str]:
    """The ``prob_<class>`` columns of a per-frame table, in the model's label order."""
    return [c for c in table.columns if str(c).startswith(PROB_PREFIX)]


def class_names(table: pd.DataFrame) -> list[str]:
    """The class names behind :func:`prob_columns`, in the same order."""
    return [c[len(PROB_PREFIX):] for c in prob_columns(table)]


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
