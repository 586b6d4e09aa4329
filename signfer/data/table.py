"""The sample table: what every dataset adapter yields.

A :class:`SampleTable` is a DataFrame with one row per sample and the columns

``path``   absolute path of the image file (str)
``label``  canonical class name (str), see :mod:`signfer.labels`
``group``  id of the unit that must stay on one side of a split, e.g. the
           PHOENIX video (str), or ``None`` when the dataset has no groups
           (a manifest without groups uses the image path instead, so that
           copies of one image under two labels stay together)
``source`` where the row came from, for error messages, e.g. ``FePh_labels.csv:17``

plus the rows that the adapter skipped, each with its reason, and the ordered
class names that size the classifier head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from signfer.errors import SignferError
from signfer.labels import ordered_classes

COLUMNS = ("path", "label", "group", "source")


@dataclass
class SampleTable:
    samples: pd.DataFrame
    name: str = "dataset"
    skipped: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["source", "reason"])
    )
    classes: tuple[str, ...] = ()
    #: the adapter had no groups and made each image its own group (its path)
    groups_are_paths: bool = False

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.samples.columns]
        if missing:
            raise ValueError(f"sample table lacks columns {missing}")
        if len(self.samples) == 0:
            raise SignferError(f"{self.name}: the dataset is empty (no usable rows)")
        self.samples = self.samples.reset_index(drop=True)
        if not self.classes:
            self.classes = ordered_classes(self.samples["label"])

    @property
    def has_groups(self) -> bool:
        return bool(self.samples["group"].notna().all())

    def y(self):
        """Integer class indices in the order of :attr:`classes`."""
        index = {c: i for i, c in enumerate(self.classes)}
        return self.samples["label"].map(index).to_numpy()

    def summary(self) -> str:
        counts = self.samples["label"].value_counts()
        lines = [f"{self.name}: {len(self.samples)} samples, {len(self.classes)} classes"]
        for c in self.classes:
            lines.append(f"  {c:<10} {int(counts.get(c, 0)):>6}")
        if self.groups_are_paths:
            lines.append("groups: none given, each image is its own group; frames of one video "
                         "need a `group` column, else they leak across folds")
        elif self.has_groups:
            lines.append(f"groups: {self.samples['group'].nunique()}")
        else:
            lines.append("groups: none (samples are split independently)")
        lines.append(f"skipped: {len(self.skipped)}")
        for _, row in self.skipped.iterrows():
            lines.append(f"  {row['source']}: {row['reason']}")
        return "\n".join(lines)


def fingerprint(table: SampleTable) -> dict:
    """What a model was trained on, for its metadata: samples per class and a
    SHA-256 of the (path, label) pairs, paths relative to their common folder
    so that the same dataset gives the same hash on another machine.

    >>> fingerprint(table)  # doctest: +SKIP
    {'n_samples': 2480, 'per_class': {'anger': 201, ...}, 'sha256': '9f2c...'}
    """
    import hashlib
    import os

    paths = table.samples["path"].astype(str).tolist()
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    h = hashlib.sha256()
    for rel, label in sorted(zip((os.path.relpath(p, root) for p in paths), table.samples["label"])):
        h.update(f"{rel}\t{label}\n".encode())
    counts = table.samples["label"].value_counts()
    return {"n_samples": len(paths), "per_class": {c: int(counts.get(c, 0)) for c in table.classes},
            "sha256": h.hexdigest()}
