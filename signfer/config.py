"""Configuration: frozen dataclasses, then a YAML file, then command-line overrides.

Unknown keys are errors. The resolved configuration is written into every run
folder (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from signfer.errors import SignferError

#: Each technique is one explicit switch (see README, "Techniques").
TECHNIQUES: dict[str, str] = {
    "ft": "fine-tune: warm up the new head with the backbone frozen, then train all layers",
    "head": "train the head only (backbone frozen, BatchNorm included)",
    "hf": "random horizontal flip",
    "cw": "class-balanced loss weights (training side only)",
    "ws": "class-balanced weighted sampler (alternative to cw)",
    "ip": "image normalisation with the checkpoint's (or training-side) mean/std",
    "he": "histogram equalisation of each face",
}


def parse_techniques(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``"ft,ip,hf"`` -> ``('ft', 'hf', 'ip')``; the empty set means no training (zero-shot).

    >>> parse_techniques("ft, ip,hf")
    ('ft', 'hf', 'ip')
    """
    if spec is None:
        return ()
    items = spec.replace("+", ",").split(",") if isinstance(spec, str) else list(spec)
    items = [t.strip().lower() for t in items if t and t.strip() and t.strip().lower() != "none"]
    unknown = sorted(set(items) - set(TECHNIQUES))
    if unknown:
        raise SignferError(f"unknown technique(s) {unknown}; valid: {', '.join(TECHNIQUES)}")
    t = set(items)
    if {"ft", "head"} <= t:
        raise SignferError("techniques 'ft' and 'head' exclude each other")
    if {"cw", "ws"} <= t:
        raise SignferError("techniques 'cw' and 'ws' exclude each other (both balance classes)")
    if t and not t & {"ft", "head"}:
        raise SignferError(f"techniques {sorted(t)} need 'ft' or 'head' (the empty set is zero-shot)")
    return tuple(sorted(t))


def technique_label(techniques: tuple[str, ...]) -> str:
    """The paper's way of naming a configuration: ``FT+IP+HF``; zero-shot is ``no-FT``."""
    if not techniques:
        return "no-FT"
    order = ["ft", "head", "ip", "hf", "cw", "ws", "he"]
    return "+".join(t.upper() for t in order if t in techniques)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every configuration of a grid.

    ``shift`` applies to the all-layers stage of ``ft`` only: the head warm-up
    of ``ft`` and technique ``head`` train on cached backbone features, where
    no image is shifted (a :class:`RunSpec` with ``head`` refuses a shift).
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

    def __post_init__(self) -> None:
        if self.norm_stats not in ("checkpoint", "train"):
            raise SignferError(f"norm_stats must be 'checkpoint' or 'train', not {self.norm_stats!r}")
        if not 0 < self.val_fraction < 0.5:
            raise SignferError(f"val_fraction must be in (0, 0.5), not {self.val_fraction}")


@dataclass(frozen=True)
class RunSpec:
    """One configuration of a grid: a name, an architecture, an init and techniques."""

    name: str
    arch: str
    init: str
    techniques: tuple[str, ...]
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # 'head' trains on cached backbone features: no image passes through
        # the network during training, so there is nothing to shift
        if "head" in self.techniques and self.train.shift:
            raise SignferError(
                f"{self.name}: shift={self.train.shift} would never apply: technique 'head' trains on "
                "cached backbone features; drop the shift or use 'ft' (shift applies to its all-layers stage)"
            )


def from_dict(cls, data: dict[str, Any] | None, where: str):
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys."""
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SignferError(f"{where}: unknown key(s) {unknown}; valid: {sorted(names)}")
    types = {f.name: f.type for f in dataclasses.fields(cls)}
    for k, v in data.items():
        if types[k] in ("int", "float") and isinstance(v, str):
            data[k] = float(v) if types[k] == "float" else int(v)
    return cls(**data)


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
