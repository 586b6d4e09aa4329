"""signfer checkpoints: weights in safetensors, everything else in a JSON beside them.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``. The JSON
holds what is needed to rebuild and use the model without reading code:

.. code-block:: json

    {"format": "signfer-checkpoint/1", "arch": "mobilenetv2", "input_size": 64,
     "mean": [...], "std": [...], "labels": ["anger", ...],
     "config": {...}, "training_data": "...", "val_accuracy": 0.66, "command": "..."}

Loading never unpickles anything: safetensors holds only tensors.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save
from torch import nn

from signfer.data.spec import PreprocessSpec
from signfer.errors import SignferError
from signfer.io import atomic_path, read_json, write_json
from signfer.labels import canonical
from signfer.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    create_model,
    get_arch,
    reset_head,
)

FORMAT = "signfer-checkpoint/1"

#: Input side for ImageNet and random inits (a signfer checkpoint brings its own
#: size). The ImageNet weights' own size: on the FER2013 stand-in, EfficientNet-Lite0
#: from ImageNet scored 0.30 at 64 px and 0.41 at 128 px against 0.46 at 224 px
#: (benchmarks/RESULTS.md, input size for ImageNet-initialised fits).
IMAGENET_INPUT_SIZE = 224


@dataclass
class ModelMeta:
    """What a model needs beside its weights: geometry, preprocessing, label order."""

    arch: str
    input_size: int
    labels: list[str]
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    #: whether the model was trained on normalised input (technique ``ip``);
    #: without it, pixels were fed in [0, 1].
    normalize: bool = True
    #: histogram equalisation of the faces: False/None, "luma" (``he``; True in
    #: older checkpoints) or "rgb" (see :mod:`signfer.data.spec`).
    equalize: bool | str | None = False
    #: how faces were cut: :class:`signfer.faces.crop.CropSpec` as a dict
    #: (empty: the default crop, as in checkpoints made before it was recorded).
    crop: dict[str, Any] = field(default_factory=dict)
    #: the techniques it was fine-tuned with (empty for pre-trained models).
    techniques: list[str] = field(default_factory=list)
    #: predict by averaging each face's probabilities with its mirror image's
    #: (test-time augmentation, ``TrainConfig.tta``).
    tta: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    training_data: str = ""
    val_accuracy: float | None = None
    command: str = ""
    #: what the training samples were: count per class and a hash of paths and labels.
    data_fingerprint: dict[str, Any] = field(default_factory=dict)
    signfer_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> PreprocessSpec:
        """The preprocessing spec that turns a face into this model's input."""
        return PreprocessSpec.from_meta(self)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, obj: dict[str, Any], source: str = "") -> "ModelMeta":
        if obj.get("format") != FORMAT:
            raise SignferError(f"{source}: not a signfer checkpoint (format {obj.get('format')!r})")
        known = {f for f in cls.__dataclass_fields__}
        try:
            meta = cls(**{k: v for k, v in obj.items() if k in known})
        except TypeError as e:
            raise SignferError(f"{source}: incomplete checkpoint metadata ({e})") from None
        labels = meta.labels
        if (not isinstance(labels, list) or len(labels) < 2 or len(set(map(str, labels))) != len(labels)
                or not all(isinstance(x, str) and x for x in labels)):
            raise SignferError(f"{source}: the checkpoint's labels must be two or more different names, "
                               f"got {labels!r}")
        try:
            meta.spec  # the preprocessing must be usable, not just present
        except (SignferError, TypeError, ValueError) as e:
            raise SignferError(f"{source}: invalid preprocessing in checkpoint metadata ({e})") from None
        return meta


#: The checkpoint JSON's key for the SHA-256 of its .safetensors file.
WEIGHTS_HASH = "weights_sha256"


def _stem(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def checkpoint_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """The two files of checkpoint ``path``: ``(NAME.safetensors, NAME.json)``.

    A dot in the name stays (``feph-v1.5`` -> ``feph-v1.5.safetensors``).
    """
    stem = _stem(path)
    return _file(stem, ".safetensors"), _file(stem, ".json")


def _file(stem: Path, ext: str) -> Path:
    """``stem`` + ``ext``; unlike :meth:`Path.with_suffix`, ``a.1`` gives ``a.1.json``, not ``a.json``."""
    return stem.with_name(stem.name + ext)


def save_checkpoint(model: nn.Module, meta: ModelMeta, path: str | os.PathLike, half: bool = False) -> Path:
    """Write ``path.safetensors`` and ``path.json`` atomically; return the stem.

    ``half`` stores floating-point tensors as fp16 (half the size); they are
    cast back to fp32 on loading.
    """
    stem = _stem(path)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if half and v.is_floating_point() else v
    data = save(state)
    with atomic_path(_file(stem, ".safetensors")) as tmp:
        # bytes, not save_file: save_file re-creates the file as 0600 whatever the umask
        tmp.write_bytes(data)
    # the weights' hash ties the two files together: a save interrupted between
    # them, or one file copied without the other, is found when loading
    write_json(_file(stem, ".json"), {**meta.to_json(), WEIGHTS_HASH: hashlib.sha256(data).hexdigest()})
    return stem


def builtin_dir() -> Path:
    return Path(str(resources.files("signfer") / "weights"))


def builtin_models() -> dict[str, Path]:
    """Registered names of the FER models shipped inside the package."""
    return {p.stem: p.with_suffix("") for p in sorted(builtin_dir().glob("*.json"))
            if p.with_suffix(".safetensors").exists()}


def default_init(arch: str) -> str:
    """The built-in FER model for ``arch`` when one ships, else ImageNet weights."""
    name = f"{get_arch(arch).name}-fer"
    return name if name in builtin_models() else "imagenet"


#: Names already told that an older signfer's file name stands in for them.
_LEGACY_NOTED: set[Path] = set()


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A built-in model name, ``hsemotion:NAME`` or a checkpoint path -> the checkpoint stem."""
    builtins = builtin_models()
    if str(name_or_path) in builtins:
        return builtins[str(name_or_path)]
    if str(name_or_path).startswith("hsemotion:"):  # HSEmotion's file, imported once and cached
        from signfer.models.hsemotion import resolve_hsemotion

        return resolve_hsemotion(str(name_or_path))
    stem = _stem(name_or_path)
    if all(p.exists() for p in checkpoint_files(stem)):
        return stem
    legacy = stem.with_suffix("")  # before 2026-12-03, `feph-v1.5` was saved as feph-v1.safetensors
    if legacy != stem and all(p.exists() for p in checkpoint_files(legacy)):
        if stem not in _LEGACY_NOTED:
            _LEGACY_NOTED.add(stem)
            print(f"note: no checkpoint {stem}.safetensors; using {legacy}.safetensors, where signfer "
                  f"before 2026-12-03 saved a checkpoint named {stem.name} (rename the two files to "
                  f"{stem.name}.safetensors and .json to silence this)", file=sys.stderr)
        return legacy
    raise SignferError(
        f"no signfer checkpoint at {name_or_path!r} (expected NAME.safetensors + NAME.json); "
        f"built-in models: {', '.join(builtins) or 'none'}"
    )


def load_meta(name_or_path: str | os.PathLike) -> ModelMeta:
    """A checkpoint's metadata alone (its JSON), without reading the weights."""
    return _read_meta(resolve_checkpoint(name_or_path))[0]


def _read_meta(stem: Path) -> tuple[ModelMeta, dict]:
    """The metadata of checkpoint ``stem``, and its JSON as read (with keys,
    such as :data:`WEIGHTS_HASH`, that are not :class:`ModelMeta` fields)."""
    meta_path = _file(stem, ".json")
    try:
        obj = read_json(meta_path)
    except (OSError, ValueError) as e:
        raise SignferError(f"{meta_path}: unreadable checkpoint metadata ({e})") from None
    if not isinstance(obj, dict):
        raise SignferError(f"{meta_path}: not a signfer checkpoint")
    return ModelMeta.from_json(obj, str(meta_path)), obj


def provenance(init: str) -> dict | None:
    """How the checkpoint a run starts from (or learns from) was made, and what it
    started and learnt from, for the new model's metadata (``extra.init_from``). A built-in
    name may later hold another model, so call this when the run starts."""
    if init in ("imagenet", "random"):
        return None
    m = load_meta(init)
    return {"name": str(init), "command": m.command, "training_data": m.training_data,
            "val_accuracy": m.val_accuracy,
            **{k: m.extra[k] for k in ("init_from", "teachers", "halves") if k in m.extra}}


def load_checkpoint(name_or_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """Read weights and metadata; never executes code from the file."""
    stem = resolve_checkpoint(name_or_path)
    meta, obj = _read_meta(stem)
    weights = _file(stem, ".safetensors")
    try:
        data = weights.read_bytes()
        raw = load(data)
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise SignferError(f"{weights}: damaged or not a safetensors file ({e})") from None
    recorded = obj.get(WEIGHTS_HASH)
    if recorded and recorded != hashlib.sha256(data).hexdigest():
        raise SignferError(f"{weights}: not the weights that {weights.with_suffix('.json').name} describes "
                           "(a save was interrupted, or one of the two files was replaced); save or copy "
                           "the two files together")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in raw.items()}
    return state, meta


def load_model(name_or_path: str | os.PathLike) -> tuple[nn.Module, ModelMeta]:
    """A ready-to-use model in eval mode, and its metadata."""
    state, meta = load_checkpoint(name_or_path)
    model = create_model(meta.arch, num_classes=len(meta.labels), init="random")
    _load_state(model, state, name_or_path)
    return model.eval(), meta


def _load_state(model: nn.Module, state: dict, source) -> None:
    """Load ``state`` into ``model``, or fail naming the first tensor that does not fit and both shapes."""
    expected = model.state_dict()
    problem = None
    for name, tensor in expected.items():
        if name not in state:
            problem = f"tensor {name!r} {tuple(tensor.shape)} is missing from the weights"
        elif state[name].shape != tensor.shape:
            problem = (f"tensor {name!r} is {tuple(state[name].shape)} in the weights, "
                       f"{tuple(tensor.shape)} in the model")
        if problem:
            break
    extra = [name for name in state if name not in expected]
    if problem is None and extra:
        problem = f"the weights hold a tensor the model lacks: {extra[0]!r} {tuple(state[extra[0]].shape)}"
    if problem:
        raise SignferError(f"{source}: weights do not fit the {type(model).__name__} that its metadata "
                           f"describes: {problem}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # e.g. a dtype that cannot be copied
        raise SignferError(f"{source}: weights do not load ({str(e).splitlines()[-1].strip()})") from None


def check_init(arch: str, init: str) -> None:
    """Refuse, before any work, a start that :func:`build_model` could not make:
    an unknown architecture, ImageNet weights that are not installed, a
    checkpoint that is missing, damaged or of another architecture."""
    from signfer.models.registry import imagenet_weights_path

    if init in ("random", "imagenet"):
        spec = get_arch(arch)
        if init == "imagenet":
            imagenet_weights_path(spec)
        return
    _require_arch(arch, init, load_meta(init))


def _require_arch(arch: str, init: str, meta: ModelMeta) -> None:
    if get_arch(arch).name != meta.arch:
        raise SignferError(f"checkpoint {init!r} is a {meta.arch}, not a {arch}")


def check_input_size(input_size: int | None, inits) -> None:
    """Refuse an input size given for starts that all bring another one of their own
    (checkpoints): it would be ignored, yet recorded as the run's."""
    inits = list(dict.fromkeys(inits))
    if input_size is None or not inits or any(i in ("random", "imagenet") for i in inits):
        return
    own = {i: load_meta(i).input_size for i in inits}
    if set(own.values()) == {input_size}:
        return
    sizes = ", ".join(f"{i} {n} px" for i, n in own.items())
    raise SignferError(f"--input-size {input_size}: applies to --init imagenet or random only; the start "
                       f"brings its own input size ({sizes}), so leave --input-size out")


def build_model(arch: str | None, classes: list[str], init: str, input_size: int = 64) -> tuple[nn.Module, ModelMeta]:
    """A model for ``classes``, initialised from ``init``, with its preprocessing metadata.

    ``init`` is 'random', 'imagenet', a built-in model name or a checkpoint path.
    From a checkpoint, the head is kept (rows re-ordered by label name) when the
    label sets are the same, and replaced by a new one when they differ. The
    checkpoint's input size and mean/std win over ``input_size``.
    """
    classes = list(classes)
    if init in ("random", "imagenet"):
        if arch is None:
            raise SignferError(f"init {init!r} needs an architecture")
        model = create_model(arch, len(classes), init)
        return model, ModelMeta(arch=arch, input_size=input_size, labels=classes)
    state, meta = load_checkpoint(init)
    if arch is not None:
        _require_arch(arch, init, meta)
    model = create_model(meta.arch, len(meta.labels), "random")
    _load_state(model, state, init)
    old = [canonical(c) for c in meta.labels]
    if sorted(old) != sorted(canonical(c) for c in classes):
        reset_head(model, len(classes))
    else:
        head = model.get_classifier()
        order = [old.index(canonical(c)) for c in classes]
        with torch.no_grad():
            head.weight.copy_(head.weight[order].clone())
            head.bias.copy_(head.bias[order].clone())
    model = model.to(memory_format=torch.channels_last)
    new_meta = ModelMeta(arch=meta.arch, input_size=meta.input_size, labels=classes,
                         mean=meta.mean, std=meta.std, normalize=meta.normalize,
                         equalize=meta.equalize, crop=dict(meta.crop), extra={"init": str(init)})
    return model, new_meta
