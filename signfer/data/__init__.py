"""Dataset adapters: every source becomes a :class:`SampleTable`.

One registry, one factory: :func:`load_dataset` picks the adapter by name and
passes it the adapter's own keyword options, refusing any it does not take.

Example:
    >>> table = load_dataset("feph", "~/data/FePh", keep_multilabel=True)  # doctest: +SKIP
    >>> table = load_dataset("folder", "../shared/data/fer2013", split="train")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable

from signfer.data.feph import load_feph
from signfer.data.folder import load_folder
from signfer.data.manifest import load_manifest
from signfer.data.table import SampleTable
from signfer.errors import SignferError

_ADAPTERS: dict[str, Callable[..., SampleTable]] = {
    "feph": load_feph,
    "folder": load_folder,
    "manifest": load_manifest,
}

#: Names that :func:`load_dataset` accepts as ``kind``.
DATASETS: tuple[str, ...] = tuple(_ADAPTERS)


def dataset_options(kind: str) -> tuple[str, ...]:
    """The keyword options that the adapter ``kind`` takes.

    Example:
        >>> dataset_options("feph")
        ('keep_multilabel', 'keep_none', 'signers')
    """
    adapter = _adapter(kind)
    return tuple(
        p.name for p in inspect.signature(adapter).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


def _adapter(kind: str) -> Callable[..., SampleTable]:
    if kind not in _ADAPTERS:
        raise SignferError(
            f"unknown dataset kind {kind!r}; valid kinds: {', '.join(DATASETS)}"
        )
    return _ADAPTERS[kind]


def load_dataset(kind: str, root: str | os.PathLike, **options: object) -> SampleTable:
    """Load a dataset of kind ``kind`` from ``root`` as a :class:`SampleTable`.

    Args:
        kind: one of :data:`DATASETS`: ``"feph"`` (:func:`load_feph`),
            ``"folder"`` (:func:`load_folder`) or ``"manifest"``
            (:func:`load_manifest`, ``root`` being the CSV file).
        root: the dataset folder, or the manifest file.
        **options: the adapter's keyword options, e.g. ``keep_multilabel=True``
            for FePh or ``split="train"`` for folders; and, for every kind,
            ``exclude``: a duplicate list (a built-in name such as
            ``"fer2013-validation"`` or a CSV path) whose faces are dropped
            and counted as skipped (:func:`signfer.data.duplicates.drop_listed`).

    Raises:
        SignferError: for an unknown kind or option (listing the valid ones),
            and whatever the adapter raises.

    Example:
        >>> load_dataset("folder", "faces", split="train").name  # doctest: +SKIP
        'faces/train'
        >>> load_dataset("feph", "FePh", split="train")  # doctest: +SKIP
        Traceback (most recent call last):
        ...
        signfer.errors.SignferError: unknown option(s) split for dataset kind 'feph'; ...
    """
    adapter = _adapter(kind)
    exclude = options.pop("exclude", None)
    valid = dataset_options(kind)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise SignferError(
            f"unknown option(s) {', '.join(unknown)} for dataset kind {kind!r}; "
            f"valid options: {', '.join([*valid, 'exclude'])}"
        )
    table = adapter(root, **options)
    if exclude is None:
        return table
    from signfer.data.duplicates import drop_listed

    return drop_listed(table, exclude)


__all__ = [
    "DATASETS", "SampleTable", "dataset_options", "load_dataset",
    "load_feph", "load_folder", "load_manifest",
]
