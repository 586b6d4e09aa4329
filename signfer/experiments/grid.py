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
    check_settings,
    from_dict,
    parse_techniques,
    technique_label,
)
from signfer.errors import SignferError
from signfer.faces import check_detector_name
from signfer.faces.crop import CropSpec
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

    def __post_init__(self) -> None:
        check_settings(self, GRID_RULES)


#: The allowed values of a grid's shared settings.
GRID_RULES = {
    "folds": (lambda v: v >= 2, ">= 2"),
    "seed": (lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    "input_size": (lambda v: v >= 16, ">= 16 (pixels)"),
}


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


#: The paper's own starting models: HSEmotion's AffectNet checkpoints, imported
#: by signfer (:mod:`signfer.models.hsemotion`), in the paper's order.
PAPER_ORIGINAL_STARTS: dict[str, str] = {
    "mobilenetv1": "hsemotion:mobilenet_7",
    "tf_efficientnet_b0": "hsemotion:enet_b0_7",
}


def paper_original_grid(archs=None) -> Grid:
    """The paper's rows from the paper's own starting models, at their 224 px, on signfer's folds.

    MobileNet v1 from HSEmotion's ``mobilenet_7.h5`` and EfficientNet-B0 from
    ``enet_b0_7.pt``; each brings its input size and normalisation, so ``ip``
    is that model's own (as in the paper). The folds, the inner validation
    split that chooses the epoch and the training lengths are signfer's: the
    authors' notebooks were not available to check their epochs, so
    :class:`~signfer.config.TrainConfig`'s defaults apply (change them with
    ``--set``). Both starts are resolved here, so a missing file is reported
    before any fold runs.
    """
    from signfer.models.checkpoint import resolve_checkpoint

    runs = []
    for arch in archs or PAPER_ORIGINAL_STARTS:
        if arch not in PAPER_ORIGINAL_STARTS:
            raise SignferError(f"--grid paper-original has no start for {arch!r}; "
                               f"its archs: {', '.join(PAPER_ORIGINAL_STARTS)}")
        start = PAPER_ORIGINAL_STARTS[arch]
        resolve_checkpoint(start)  # imports it once (cached); a missing file fails here
        runs += [RunSpec(technique_label(t), arch, start, t) for t in PAPER_CONFIGS]
    return Grid(tuple(runs), input_size=IMAGENET_INPUT_SIZE)


#: The DFKI 2025 face pipeline (Nunnari, Singh & Gebhard 2025, from their EASIER
#: code), one step per row on top of the paper grid's best row: detect the face,
#: square the box and zoom out by 1.15 about its centre; equalise each colour
#: channel; rotate so the eyes are level. MTCNN, because alignment needs eye
#: landmarks that follow a tilted head (YuNet's barely do: tests/test_crop_spec.py).
DFKI_DETECTOR = "mtcnn"
DFKI_STEPS: tuple[tuple[str, tuple[str, ...], str | None, CropSpec | None], ...] = (
    ("FT+IP+HF", ("ft", "hf", "ip"), None, None),
    ("+detect+zoom1.15", ("ft", "hf", "ip"), DFKI_DETECTOR, CropSpec(detector=DFKI_DETECTOR, margin=1.15)),
    ("+detect+zoom1.15+HEC", ("ft", "hec", "hf", "ip"), DFKI_DETECTOR,
     CropSpec(detector=DFKI_DETECTOR, margin=1.15)),
    ("+detect+zoom1.15+HEC+align", ("ft", "hec", "hf", "ip"), DFKI_DETECTOR,
     CropSpec(detector=DFKI_DETECTOR, margin=1.15, align=True)),
)


def dfki2025_grid(archs=None) -> Grid:
    """The paper grid's best row with each step of the DFKI 2025 face pipeline added in turn.

    On pre-cropped faces (FePh, CK+) the detector runs on each image (enlarged
    when small) and the face is cut again, tighter and square; so each row
    shows what a step buys on top of the previous ones.
    """
    runs = []
    for arch in archs or ("mobilenetv2",):
        for name, t, crop_faces, crop in DFKI_STEPS:
            runs.append(RunSpec(name, arch, default_init(arch), t, crop_faces=crop_faces, crop=crop))
    return Grid(tuple(runs))


def _with_settings(grid: Grid, settings: dict[str, Any]) -> Grid:
    """Apply command-line settings; ``train`` is a dict of overrides applied on
    top of each configuration's own training settings (dataclass, YAML, then CLI)."""
    settings = {k: v for k, v in settings.items() if v is not None}
    overrides = settings.pop("train", None) or {}
    try:
        grid = replace(grid, **settings)
    except SignferError as e:  # settings come from command-line options: name the option
        name, rest = str(e).split(" ", 1)
        raise SignferError(f"--{name.replace('_', '-')} {rest}") from None
    if overrides:
        def apply(t: TrainConfig) -> TrainConfig:
            return from_dict(TrainConfig, {**vars(t), **overrides}, "--set")

        grid = replace(grid, train=apply(grid.train),
                       runs=tuple(replace(r, train=apply(r.train)) for r in grid.runs))
    return grid


GRID_KEYS = {"folds", "seed", "input_size", "train", "archs", "init", "configs"}
CONFIG_KEYS = {"name", "techniques", "init", "archs", "train", "crop_faces", "crop"}


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
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        reason = (f"{getattr(e, 'problem', None) or e} at line {mark.line + 1}, column {mark.column + 1}"
                  if mark is not None else str(e))
        raise SignferError(f"cannot read grid {path}: {' '.join(reason.split())}") from None
    if not isinstance(data, dict):
        raise SignferError(f"{path}: a grid file must be a mapping")
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise SignferError(f"{path}: unknown key(s) {unknown}; valid: {sorted(GRID_KEYS)}")
    if not data.get("configs"):
        raise SignferError(f"{path}: 'configs' lists no configuration")
    if not isinstance(data["configs"], list):
        raise SignferError(f"{path}: 'configs' must be a list of configurations, got {data['configs']!r}")
    train = from_dict(TrainConfig, data.get("train"), f"{path}: train")
    archs = _names(data.get("archs", list(PAPER_ARCHS)), f"{path}: archs")
    runs = []
    for i, c in enumerate(data["configs"]):
        where = f"{path}: configs[{i}]"
        if not isinstance(c, dict):
            raise SignferError(f"{where} must be a mapping")
        bad = sorted(set(c) - CONFIG_KEYS)
        if bad:
            raise SignferError(f"{where}: unknown key(s) {bad}; valid: {sorted(CONFIG_KEYS)}")
        try:
            t = parse_techniques(c.get("techniques"))
        except SignferError as e:
            raise SignferError(f"{where}: {e}") from None
        if "train" in c and not isinstance(c["train"], dict):
            raise SignferError(f"{where}: train must be a mapping of settings, got {c['train']!r}")
        c_train = from_dict(TrainConfig, {**vars(train), **c["train"]}, where) if "train" in c else train
        name = c.get("name") or technique_label(t)
        init = c.get("init", data.get("init"))
        for key, value in (("name", name), ("init", init)):
            if value is not None and not isinstance(value, str):
                raise SignferError(f"{where}: {key} must be text, got {value!r}")
        crop_faces = c.get("crop_faces")
        if crop_faces is not None:
            if not isinstance(crop_faces, str):
                raise SignferError(f"{where}: crop_faces must be a detector name, got {crop_faces!r}")
            try:
                check_detector_name(crop_faces)
            except SignferError as e:
                raise SignferError(f"{where}: {e}") from None
        try:
            crop = CropSpec.from_dict(c["crop"]) if c.get("crop") is not None else None
        except (SignferError, TypeError) as e:
            raise SignferError(f"{where}: crop: {e}") from None
        for arch in _names(c.get("archs", archs), f"{where}: archs"):
            get_arch(arch)
            runs.append(RunSpec(name, arch, init or default_init(arch), t, c_train, crop_faces, crop))
    keys = [(r.name, r.arch) for r in runs]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise SignferError(f"{path}: configuration names repeat for the same arch: {sorted(dup)}")
    settings = {k: data[k] for k in ("folds", "seed", "input_size") if k in data}
    try:
        return replace(Grid(tuple(runs), train=train), **settings)
    except SignferError as e:
        raise SignferError(f"{path}: {e}") from None


def _names(value: Any, where: str) -> list[str]:
    """A YAML list of names (a single name is refused: it would be read letter by letter)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SignferError(f"{where} must be a list of names, e.g. [mobilenetv2], got {value!r}")
    return value


def named_grid(name_or_path: str, **settings: Any) -> Grid:
    """The 'paper' or 'paper-original' grid or a YAML file, with command-line settings applied."""
    if name_or_path == "paper":
        archs = settings.pop("archs", None)
        return _with_settings(paper_grid(archs=archs), settings)
    if name_or_path == "dfki2025":
        return _with_settings(dfki2025_grid(archs=settings.pop("archs", None)), settings)
    if name_or_path == "paper-original":
        return _with_settings(paper_original_grid(archs=settings.pop("archs", None)), settings)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return _with_settings(grid_from_yaml(path), settings)
    raise SignferError(f"unknown grid {name_or_path!r}; use 'paper', 'paper-original', 'dfki2025' or a YAML file")
