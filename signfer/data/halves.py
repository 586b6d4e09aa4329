"""Two fixed halves of a validation set: one to select on, one to report.

Whatever chose a model's epoch, its teachers or its hyper-parameters on a
validation set makes that set's figure optimistic. Splitting the set once
gives a *selection* half to choose on and a *report* half that nothing was
chosen on. A half is the parity of a SHA-256 (:func:`half_of`), so the halves
are the same on every machine, whatever folder holds the data. What is hashed
keeps related faces together (:func:`halves_of`):

* with groups (a video, a subject), the group: no subject is in both halves;
* without, the first file name (in sort order) of its cluster of copies:
  faces that repeat one another, directly or through other copies
  (:func:`~signfer.data.duplicates.copy_clusters`: exact or near, mirrored
  too), are one cluster, and a cluster is never split. The clusters, and so
  the halves, do not depend on the order of the rows.

A face keeps its half when other faces are added or dropped, unless that
changes its cluster's first name; so compute the halves on the very faces you
use (after ``--exclude``), as ``pretrain`` and ``evaluate --halves`` do.

Example:
    >>> half_of("PublicTest_99999.jpg") in HALVES
    True
    >>> selection, report = split_halves(table)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from signfer.data.table import SampleTable

HALVES = ("selection", "report")
#: How :func:`halves_of` makes the halves, recorded with every model chosen on a
#: selection half: a model chosen on the halves of another scheme (before copies
#: were kept together) may have chosen on faces now in the report half.
SCHEME = "copy-clusters-1"


def half_of(path: str) -> str:
    """``"selection"`` or ``"report"``: the parity of the SHA-256 of the file name of ``path``."""
    return _parity(Path(str(path)).name)


def _parity(text: str) -> str:
    return HALVES[hashlib.sha256(text.encode("utf-8")).digest()[-1] & 1]


def halves_of(table: SampleTable) -> np.ndarray:
    """The half of each row of ``table``, by group, or by cluster of copies (see the module).

    Without groups, every face is hashed and compared with every other
    (:func:`~signfer.data.duplicates.copy_clusters`), a few seconds for
    FER2013's 3,589 validation faces.
    """
    s = table.samples
    if table.has_groups and not table.groups_are_paths:
        return np.array([_parity(f"group {g}") for g in s["group"].astype(str)], dtype=object)  # all of it
    from signfer.data.duplicates import copy_clusters

    cluster = copy_clusters(table)
    names = [(Path(p).name, str(p)) for p in s["path"]]
    first: dict[int, tuple[str, str]] = {}
    for c, name in zip(cluster, names):
        first[c] = min(first.get(c, name), name)
    return np.array([half_of(first[c][0]) for c in cluster], dtype=object)


def split_halves(table: SampleTable) -> tuple[SampleTable, SampleTable]:
    """``table``'s selection half and report half (:func:`halves_of`), as two tables (classes kept)."""
    which = halves_of(table)
    return tuple(SampleTable(table.samples[which == h], name=f"{table.name}, {h} half",
                             classes=table.classes, groups_are_paths=table.groups_are_paths)
                 for h in HALVES)
