"""Grids of configurations: the paper's, or one read from YAML.

A grid is a list of :class:`~signfer.config.RunSpec` (name, arch, init,
techniques) plus the settings shared by all of them (folds, seed, input size,
training). Combinations that make no sense are never run, because a grid lists
the runs it wants rather than crossing every option.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from signfer.config import (
    RunSpec,
    TrainConfig,
    from_dict,
    parse_techniques,
    technique_label,
)
from signfer.errors import SignferError
from signfer.models.checkpoint import IMAGENET_INPUT_SIZE, default_init
from signfer.models.registry import get_arch

#: The paper's rows (Deshpande, Nunnari & Avramidis 2022, Table 2), in order.
PAPER_CONFIGS: tuple[tuple[str, ...], ...] = (
    (), ("ft",), ("ft", "hf"), ("ft", "cw"), ("ft", "ip"), ("ft", "hf", "ip"), ("ft", "cw", "hf", "ip"),
)
PAPER_ARCHS: tuple[str, ...] = ("mobilenetv2", "efficientnet_lite0")

@dataclass(frozen=True)
class Grid:
    runs: tuple[RunSpec, ...]
    folds: int = 5
    seed: int = 0
    input_size: int = IMAGENET_INPUT_SIZE  # used when the init is not a checkpoint
    train: TrainConfig = field(default_factory=TrainConfig)


def paper_grid(archs=None, init: str | None = None, **settings: Any) -> Grid:
    """No-FT, FT, FT+HF, FT+CW, FT+IP, FT+IP+HF, FT+IP+HF+CW for each architecture.

    The no-FT (zero-shot) row needs a FER-pretrained checkpoint; it is left out,
    with a note, for an architecture that has none.
    """
    runs = []
    for arch in archs or PAPER_ARCHS:
        start = init or default_init(arch)
        for t in PAPER_CONFIGS:
            if not t and start in ("imagenet", "random"):
                continue
            runs.append(RunSpec(technique_label(t), arch, start, t))
    return _with_settings(Grid(tuple(runs)), settings)


def _with_settings(grid: Grid, settings: dict[str, Any]) -> Grid:
    """Apply command-line settings; ``train`` is a dict of overrides applied on
    top of each configuration's own training settings (dataclass, YAML, then CLI)."""
    settings = {k: v for k, v in settings.items() if v is not None}
    overrides = settings.pop("train", None) or {}
    grid = replace(grid, **settings)
    if overrides:
        def apply(t: TrainConfig) -> TrainConfig:
            return from_dict(TrainConfig, {**vars(t), **overrides}, "--set")

        grid = replace(grid, train=apply(grid.train),
                       runs=tuple(replace(r, train=apply(r.train)) for r in grid.runs))
    return grid


GRID_KEYS = {"folds", "seed", "input_size", "train", "archs", "init", "configs"}
CONFIG_KEYS = {"name", "techniques", "init", "archs", "train"}


def grid_from_yaml(path: str | Path) -> Grid:
    """Read a grid file; unknown keys are errors.

    .. code-block:: yaml

        folds: 5
        seed: 0
        archs: [mobilenetv2, efficientnet_lite0]
        train: {epochs: 8, lr: 5.0e-4}
        configs:
          - {techniques: []}                       # zero-shot
          - {techniques: [ft, ip, hf]}
          - {name: FT+IP+HF (ImageNet), techniques: [ft, ip, hf], init: imagenet}
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise SignferError(f"cannot read grid {path}: {e}") from None
    if not isinstance(data, dict):
        raise SignferError(f"{path}: a grid file must be a mapping")
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise SignferError(f"{path}: unknown key(s) {unknown}; valid: {sorted(GRID_KEYS)}")
    if not data.get("configs"):
        raise SignferError(f"{path}: 'configs' lists no configuration")
    train = from_dict(TrainConfig, data.get("train"), f"{path}: train")
    archs = data.get("archs", list(PAPER_ARCHS))
    runs = []
    for i, c in enumerate(data["configs"]):
        where = f"{path}: configs[{i}]"
        if not isinstance(c, dict):
            raise SignferError(f"{where} must be a mapping")
        bad = sorted(set(c) - CONFIG_KEYS)
        if bad:
            raise SignferError(f"{where}: unknown key(s) {bad}; valid: {sorted(CONFIG_KEYS)}")
        t = parse_techniques(c.get("techniques"))
        c_train = from_dict(TrainConfig, {**vars(train), **c["train"]}, where) if "train" in c else train
        for arch in c.get("archs", archs):
            get_arch(arch)
            init = c.get("init", data.get("init")) or default_init(arch)
            runs.append(RunSpec(c.get("name") or technique_label(t), arch, init, t, c_train))
    keys = [(r.name, r.arch) for r in runs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise SignferError(f"{path}: configuration names repeat for the same arch: {sorted(dup)}")
    settings = {k: data[k] for k in ("folds", "seed", "input_size") if k in data}
    return replace(Grid(tuple(runs), train=train), **settings)


def named_grid(name_or_path: str, **settings: Any) -> Grid:
    """The 'paper' grid or a YAML file, with command-line settings applied."""
    if name_or_path == "paper":
        archs = settings.pop("archs", None)
        return _with_settings(paper_grid(archs=archs), settings)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return _with_settings(grid_from_yaml(path), settings)
    raise SignferError(f"unknown grid {name_or_path!r}; use 'paper' or a YAML file")
