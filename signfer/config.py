"""Configuration: frozen dataclasses, then a YAML file, then command-line overrides.

Unknown keys are errors. The resolved configuration is written into every run
folder (``config.yaml``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from signfer.errors import SignferError
from signfer.faces.crop import CropSpec

#: Each technique is one explicit switch (see README, "Techniques").
TECHNIQUES: dict[str, str] = {
    "ft": "fine-tune: warm up the new head with the backbone frozen, then train all layers",
    "head": "train the head only (backbone frozen, BatchNorm included)",
    "hf": "random horizontal flip",
    "cw": "class-balanced loss weights (training side only)",
    "ws": "class-balanced weighted sampler (alternative to cw)",
    "ip": "image normalisation with the checkpoint's (or training-side) mean/std",
    "he": "histogram equalisation of each face's luminance (colour kept)",
    "hec": "histogram equalisation of each colour channel of each face (the DFKI 2025 pipeline)",
}


def parse_techniques(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"ft,ip,hf"`` -> ``('ft', 'hf', 'ip')``; the empty set means no training (zero-shot).

    >>> parse_techniques("ft, ip,hf")
    ('ft', 'hf', 'ip')
    """
    if spec is None:
        return ()
    if not isinstance(spec, (str, list, tuple)) or not all(isinstance(t, str) for t in spec):
        raise SignferError(f"techniques must be a list of names such as [ft, ip, hf], got {spec!r}")
    items = spec.replace("+", ",").split(",") if isinstance(spec, str) else list(spec)
    items = [t.strip().lower() for t in items if t and t.strip() and t.strip().lower() != "none"]
    unknown = sorted(set(items) - set(TECHNIQUES))
    if unknown:
        raise SignferError(f"unknown technique(s) {unknown}; valid: {', '.join(TECHNIQUES)}")
    t = set(items)
    if {"ft", "head"} <= t:
        raise SignferError("techniques 'ft' and 'head' exclude each other")
    if {"he", "hec"} <= t:
        raise SignferError("techniques 'he' and 'hec' exclude each other (both equalise the histogram)")
    if {"cw", "ws"} <= t:
        raise SignferError("techniques 'cw' and 'ws' exclude each other (both balance classes)")
    if t and not t & {"ft", "head"}:
        raise SignferError(f"techniques {sorted(t)} need 'ft' or 'head' (the empty set is zero-shot)")
    return tuple(sorted(t))


def technique_label(techniques: tuple[str, ...]) -> str:
    """The paper's way of naming a configuration: ``FT+IP+HF``; zero-shot is ``no-FT``."""
    if not techniques:
        return "no-FT"
    order = ["ft", "head", "ip", "hf", "cw", "ws", "he", "hec"]
    return "+".join(t.upper() for t in order if t in techniques)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every configuration of a grid.

    ``shift``, ``rotate`` and ``scale`` apply to the all-layers stage of ``ft``
    only: the head warm-up of ``ft`` and technique ``head`` train on cached
    backbone features, where no image is transformed (a :class:`RunSpec` with
    ``head`` refuses them). ``tta`` averages each test face's prediction with
    its mirror image's (the model then keeps doing so, see ``ModelMeta.tta``).
    """

    head_epochs: int = 3          # warm-up of the new head, backbone frozen
    head_lr: float = 1e-3
    epochs: int = 5               # maximum epochs of the all-layers stage (budget: paper grid <= 60 min on 2 cores)
    lr: float = 2e-4
    weight_decay: float = 1e-4
    batch_size: int = 64
    patience: int = 2             # early stopping on the inner validation split
    val_fraction: float = 0.15    # carved from the training side, grouped
    label_smoothing: float = 0.0
    shift: int = 0                # random translation in pixels, all-layers stage only (see above)
    norm_stats: str = "checkpoint"  # 'checkpoint' or 'train': where ip's mean/std come from
    rotate: float = 0.0           # random rotation up to this many degrees, all-layers stage only
    scale: float = 0.0            # random zoom, e.g. 0.1 for 0.9x-1.1x, all-layers stage only
    tta: bool = False             # test-time augmentation: average with the mirror image's prediction

    def __post_init__(self) -> None:
        check_settings(self, TRAIN_RULES)


#: The allowed values of each TrainConfig setting (its type comes from the annotation).
TRAIN_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "head_epochs": (lambda v: v >= 0, ">= 0 (0: no warm-up of the head)"),
    "head_lr": (lambda v: 0 < v < math.inf, "> 0"),
    "epochs": (lambda v: v >= 1, ">= 1"),
    "lr": (lambda v: 0 < v < math.inf, "> 0"),
    "weight_decay": (lambda v: 0 <= v < math.inf, ">= 0"),
    "batch_size": (lambda v: v >= 2, ">= 2 (batch norm cannot train on one image)"),
    "patience": (lambda v: v >= 1, ">= 1"),
    "val_fraction": (lambda v: 0 < v < 0.5, "in (0, 0.5)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "shift": (lambda v: v >= 0, ">= 0 (pixels)"),
    "norm_stats": (lambda v: v in ("checkpoint", "train"), "'checkpoint' or 'train'"),
    "rotate": (lambda v: 0 <= v <= 180, "in [0, 180] (degrees)"),
    "scale": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "tta": (lambda v: True, "true or false"),
}

_KINDS = {"int": "a whole number", "float": "a number", "str": "text", "bool": "true or false"}


def check_settings(obj: Any, rules: dict[str, tuple[Callable[[Any], bool], str]]) -> None:
    """Check each field of the frozen dataclass ``obj``: its annotated type, then its rule.

    Whole numbers are accepted for ``float`` fields (and stored as floats);
    ``int`` fields take whole numbers only (``1.5`` and ``True`` are refused);
    ``tuple[str, ...]`` fields take a list or tuple of text (stored as a tuple).

    Raises:
        SignferError: naming the first setting that is wrong, what it must be,
            and the value given, e.g. ``epochs must be >= 1, got -1``.
    """
    for f in dataclasses.fields(obj):
        name, value, kind = f.name, getattr(obj, f.name), str(f.type)
        if kind == "int":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            value = int(value) if ok else value
        elif kind == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif kind == "str":
            ok = isinstance(value, str)
        elif kind == "bool":
            ok = isinstance(value, bool)
        elif kind.startswith("tuple[str"):
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            value = tuple(value) if ok else value
            kind = "list of text"
        else:
            ok = True
        if not ok:
            raise SignferError(f"{name} must be {_KINDS.get(kind, kind)}, got {value!r}")
        object.__setattr__(obj, name, value)
        rule = rules.get(name)
        if rule is not None and not rule[0](value):
            raise SignferError(f"{name} must be {rule[1]}, got {value!r}")


@dataclass(frozen=True)
class RunSpec:
    """One configuration of a grid: a name, an architecture, an init and techniques."""

    name: str
    arch: str
    init: str
    techniques: tuple[str, ...]
    train: TrainConfig = field(default_factory=TrainConfig)
    #: this configuration's own face cutting (None: the run's ``--crop-faces``
    #: and crop options), e.g. the DFKI 2025 steps of ``--grid dfki2025``
    crop_faces: str | None = None
    crop: CropSpec | None = None

    def __post_init__(self) -> None:
        # 'head' trains on cached backbone features: no image passes through
        # the network during training, so there is nothing to transform
        for key in ("shift", "rotate", "scale"):
            value = getattr(self.train, key)
            if "head" in self.techniques and value:
                raise SignferError(
                    f"{self.name}: {key}={value} would never apply: technique 'head' trains on cached "
                    f"backbone features; drop the {key} or use 'ft' ({key} applies to its all-layers stage)"
                )


def from_dict(cls, data: dict[str, Any] | None, where: str):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and bad values.

    ``where`` (``--set``, ``grid.yaml: train``) starts every error message.
    """
    if data is not None and not isinstance(data, dict):
        raise SignferError(f"{where}: expected a mapping of settings (KEY: VALUE), got {data!r}")
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SignferError(f"{where}: unknown key(s) {unknown}; valid: {sorted(names)}")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    for k, v in data.items():
        # YAML reads 1e-4 (no dot) as text; what does not convert is refused below
        if types[k] in ("int", "float") and isinstance(v, str):
            with contextlib.suppress(ValueError):
                data[k] = float(v) if types[k] == "float" else int(v)
    try:
        return cls(**data)
    except SignferError as e:
        raise SignferError(f"{where}: {e}") from None


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["epochs=3", "lr=1e-4"]`` -> ``{"epochs": 3, "lr": 0.0001}`` (values parsed as YAML)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SignferError(f"override {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def dump_yaml(obj: Any) -> str:
    def plain(o):
        if dataclasses.is_dataclass(o):
            return {k: plain(v) for k, v in dataclasses.asdict(o).items()}
        if isinstance(o, dict):
            return {k: plain(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [plain(v) for v in o]
        if isinstance(o, Path):
            return str(o)
        return o

    return yaml.safe_dump(plain(obj), sort_keys=False)
