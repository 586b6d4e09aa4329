"""Canonical expression names, their synonyms, and the label maps of known datasets.

Label order is data, never an assumption: every map here is explicit and every
model carries its own ordered label names.
"""

from __future__ import annotations

from collections.abc import Iterable

from signfer.errors import SignferError

#: The six Ekman expressions plus neutral, in signfer's canonical order.
CANONICAL: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral",
)

#: Other classes that real datasets carry; kept, never silently dropped.
EXTRA: tuple[str, ...] = ("contempt", "none")

SYNONYMS: dict[str, str] = {
    "angry": "anger", "anger": "anger", "ang": "anger",
    "disgust": "disgust", "disgusted": "disgust", "dis": "disgust",
    "fear": "fear", "fearful": "fear", "afraid": "fear", "scared": "fear",
    "happiness": "happiness", "happy": "happiness", "joy": "happiness", "hap": "happiness",
    "sadness": "sadness", "sad": "sadness",
    "surprise": "surprise", "surprised": "surprise", "sur": "surprise",
    "neutral": "neutral", "neu": "neutral", "calm": "neutral",
    "contempt": "contempt",
    "none": "none",
}

#: FePh ``Facial_label`` digits (see the dataset's users' loaders).
FEPH_CODES: dict[str, str] = {
    "0": "neutral", "1": "anger", "2": "disgust", "3": "fear",
    "4": "happiness", "5": "sadness", "6": "surprise", "7": "none",
}

#: FER2013 folder names, in the dataset's own (alphabetical) order.
FER2013_ORDER: tuple[str, ...] = (
    "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
)

#: HSEmotion / EmotiEffLib 7-class checkpoints (alphabetical).
HSEMOTION_ORDER: tuple[str, ...] = FER2013_ORDER

#: AffectNet's own integer codes.
AFFECTNET_CODES: dict[int, str] = {
    0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise",
    4: "fear", 5: "disgust", 6: "anger", 7: "contempt",
}


def canonical(name: str) -> str:
    """Map a label name or synonym to its canonical name.

    >>> canonical("Happy")
    'happiness'

    Unknown names are kept (lower-cased, stripped) so that datasets with other
    label sets still work; use :func:`is_known` to tell them apart.
    """
    key = str(name).strip().lower()
    return SYNONYMS.get(key, key)


def is_known(name: str) -> bool:
    return str(name).strip().lower() in SYNONYMS


def ordered_classes(labels: Iterable[str]) -> tuple[str, ...]:
    """The classes present in ``labels``, canonical ones first in canonical order.

    >>> ordered_classes(["neutral", "happiness", "owl"])
    ('happiness', 'neutral', 'owl')
    """
    present = set(labels)
    known = [c for c in CANONICAL + EXTRA if c in present]
    return tuple(known + sorted(present - set(known)))


def mapping_by_name(source: Iterable[str], target: Iterable[str]) -> list[int | None]:
    """For each name in ``source``, its index in ``target`` (``None`` where absent).

    Used to evaluate a model on a dataset whose label set differs, matching
    classes by canonical name and never by position.

    >>> mapping_by_name(["anger", "happiness"], ["happiness", "neutral"])
    [None, 0]
    """
    index = {canonical(t): i for i, t in enumerate(target)}
    return [index.get(canonical(s)) for s in source]


def shared_columns(model_labels: Iterable[str], classes: Iterable[str]) -> tuple[list[int], list[int]]:
    """The model's output columns that name a dataset class, and those classes' indices.

    Model classes the dataset lacks are left out; dataset classes the model
    lacks never appear (they can never be predicted).

    >>> shared_columns(["anger", "happiness", "contempt"], ["happiness", "anger", "neutral"])
    ([0, 1], [1, 0])
    """
    target = mapping_by_name(model_labels, classes)
    keep = [i for i, t in enumerate(target) if t is not None]
    return keep, [target[i] for i in keep]


def require_overlap(model_labels: Iterable[str], data_labels: Iterable[str]) -> None:
    shared = set(map(canonical, model_labels)) & set(map(canonical, data_labels))
    if not shared:
        raise SignferError(
            f"the model's labels {sorted(model_labels)} share no class with the data's "
            f"{sorted(data_labels)}"
        )
