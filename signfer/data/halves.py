"""Two fixed halves of a validation set: one to select on, one to report.

Whatever chose a model's epoch, its teachers or its hyper-parameters on a
validation set makes that set's figure optimistic. Splitting the set once, by
a hash of each file name, gives a *selection* half to choose on and a *report*
half that nothing was chosen on. The hash (SHA-256 of the file name, not the
path) gives the same halves on every machine, whatever folder holds the data,
and a face keeps its half when other faces are added or dropped (e.g. by a
duplicate list).

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


def half_of(path: str) -> str:
    """``"selection"`` or ``"report"``: the parity of the SHA-256 of the file name."""
    digest = hashlib.sha256(Path(str(path)).name.encode("utf-8")).digest()
    return HALVES[digest[-1] & 1]


def halves(paths) -> np.ndarray:
    """:func:`half_of` of every path, as an array of strings."""
    return np.array([half_of(p) for p in paths], dtype=object)


def split_halves(table: SampleTable) -> tuple[SampleTable, SampleTable]:
    """``table``'s selection half and report half, as two tables (classes kept)."""
    which = halves(table.samples["path"])
    return tuple(SampleTable(table.samples[which == h], name=f"{table.name}, {h} half",
                             classes=table.classes, groups_are_paths=table.groups_are_paths)
                 for h in HALVES)
