"""Import HSEmotion's AffectNet models, the starting points of the 2022 paper, as signfer checkpoints.

Deshpande, Nunnari & Avramidis (2022) fine-tune two models that HSEmotion
(A. Savchenko) trained on AffectNet's 7 classes:

``enet_b0_7.pt``
    a whole timm ``tf_efficientnet_b0_ns`` pickled with ``torch.save(model)``,
    head ``classifier = Sequential(Linear(1280, 7))``. Inputs: RGB, the face
    box squashed to 224 x 224, scaled to [0, 1], ImageNet mean/std.
``mobilenet_7.h5``
    Keras MobileNet v1 (alpha 1.0, 224 x 224 x 3), global average pooling,
    dropout, ``Dense(256, relu, name='feats')``, ``Dense(7, softmax,
    name='emotion_preds')``. Inputs: RGB resized to 224, the per-channel
    means (103.939, 116.779, 123.68) subtracted from R, G and B in that order,
    no scaling. (Those are Caffe's BGR ImageNet means; HSEmotion's code
    converts frames to RGB first and then subtracts them by channel index, so
    the weights learnt R - 103.939. signfer feeds what the weights learnt.)

Both have HSEmotion's alphabetical label order: anger, disgust, fear,
happiness, neutral, sadness, surprise; signfer maps it by name as everywhere.

:func:`import_hsemotion` turns either file into a signfer checkpoint whose JSON
records the architecture, this preprocessing, the label order and the source
file's SHA-256. The pickle is read by :mod:`signfer.models.safe_pickle`, which
runs no code from the file and needs no particular timm version; the HDF5 file
is read with h5py by Keras layer and weight names, without TensorFlow.

``--init hsemotion:enet_b0_7`` (or ``hsemotion:mobilenet_7``) finds the file in
HSEmotion's cache folder ``~/.hsemotion/`` or in ``$SIGNFER_HOME``, downloads it
from the HSEmotion repository when it is in neither (and the network allows),
imports it once and caches the checkpoint in signfer's cache folder
(:func:`resolve_hsemotion`).

>>> import_hsemotion("mobilenet_7.h5", "models/mobilenet_7")          # doctest: +SKIP
PosixPath('models/mobilenet_7')
>>> import_hsemotion("enet_b0_7.pt", "models/enet_b0_7", trust=True)  # doctest: +SKIP
PosixPath('models/enet_b0_7')
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from signfer import __version__
from signfer.errors import SignferError, first_line
from signfer.faces.crop import CropSpec
from signfer.io import atomic_path, cache_dir, file_sha256
from signfer.labels import HSEMOTION_ORDER
from signfer.models.checkpoint import ModelMeta, checkpoint_files, save_checkpoint
from signfer.models.registry import IMAGENET_MEAN, IMAGENET_STD, create_model

PREFIX = "hsemotion:"
URL = "https://github.com/HSE-asavchenko/face-emotion-recognition/raw/main/models/affectnet_emotions/{file}"
#: Seconds to wait for the download before saying where to put the file.
DOWNLOAD_TIMEOUT_S = 10.0
#: Caffe's ImageNet means as HSEmotion subtracts them from R, G, B (0-255 units).
KERAS_MEANS = (103.939, 116.779, 123.68)
INPUT_SIZE = 224
#: HSEmotion cut faces with MTCNN's box, no margin, squashed to the input size.
CROP = CropSpec(detector="mtcnn", margin=1.0, square=False)
PICKLE_WARNING = ("is a pickle: pickles can run code when loaded; signfer's reader refuses to, "
                  "but the file still comes from outside, so pass --trust if you trust its source")


@dataclass(frozen=True)
class Known:
    """One of HSEmotion's published files."""

    file: str
    arch: str
    reported: str  # HSEmotion's README: accuracy on AffectNet's 7-class validation set


KNOWN: dict[str, Known] = {
    "enet_b0_7": Known("enet_b0_7.pt", "tf_efficientnet_b0", "65.74 % on AffectNet validation (7 classes)"),
    "mobilenet_7": Known("mobilenet_7.h5", "mobilenetv1", "64.71 % on AffectNet validation (7 classes)"),
}


def _kind(path: Path) -> str:
    """'pickle' (a torch.save zip archive) or 'keras' (HDF5), from the file's first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise SignferError(f"{path}: cannot read ({e.strerror or e})") from None
    if head.startswith(b"PK"):
        return "pickle"
    if head == b"\x89HDF\r\n\x1a\n":
        return "keras"
    if head.startswith(b"\x80"):
        raise SignferError(f"{path}: a bare pickle (PyTorch's format before 1.6, or another tool's); "
                           "signfer reads torch.save zip archives only")
    raise SignferError(f"{path}: neither a PyTorch archive (torch.save) nor an HDF5 file (Keras .h5)")


def _check_classes(path: Path, n: int) -> None:
    if n != len(HSEMOTION_ORDER):
        raise SignferError(
            f"{path}: the model has {n} outputs; signfer knows the label order of HSEmotion's "
            f"{len(HSEMOTION_ORDER)}-class models only ({', '.join(HSEMOTION_ORDER)})")


# ---------------------------------------------------------------- enet_b0_7.pt

def read_efficientnet(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """timm's ``tf_efficientnet_b0`` with the weights of a pickled HSEmotion EfficientNet-B0."""
    from signfer.models.safe_pickle import Stub, module_tensors, read_pickled_model

    path = Path(path)
    root = read_pickled_model(path)
    try:
        tensors = module_tensors(root)
    except SignferError as e:
        raise SignferError(f"{path}: {e}") from None
    # HSEmotion's head is Sequential(Linear): classifier.0.* -> timm's classifier.*
    tensors = {("classifier." + k[len("classifier.0."):] if k.startswith("classifier.0.") else k): v
               for k, v in tensors.items()}
    head = tensors.get("classifier.weight")
    if head is None or head.ndim != 2:
        raise SignferError(f"{path}: no classifier (classifier.weight or classifier.0.weight) in the model")
    _check_classes(path, head.shape[0])
    model = create_model("tf_efficientnet_b0", head.shape[0], "random")
    target = model.state_dict()
    missing = [k for k in target if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in target]
    if missing or unexpected:
        raise SignferError(
            f"{path}: not an EfficientNet-B0 as timm builds tf_efficientnet_b0: {len(missing)} tensor(s) "
            f"missing (e.g. {', '.join(missing[:2]) or '-'}), {len(unexpected)} unexpected "
            f"(e.g. {', '.join(unexpected[:2]) or '-'})")
    for k, t in target.items():
        if k in tensors and tuple(tensors[k].shape) != tuple(t.shape):
            raise SignferError(f"{path}: {k} has shape {tuple(tensors[k].shape)}, tf_efficientnet_b0 "
                               f"{tuple(t.shape)}: another architecture (e.g. EfficientNet-B2)")
    model.load_state_dict({k: tensors[k].to(t.dtype) if k in tensors else t for k, t in target.items()})
    info = {"format": "PyTorch pickle (torch.save of the whole model)",
            "saved_class": root._global if isinstance(root, Stub) else "state dict",
            "tensors": len(tensors)}
    return model, info


def _efficientnet_meta() -> ModelMeta:
    return ModelMeta(arch="tf_efficientnet_b0", input_size=INPUT_SIZE, labels=list(HSEMOTION_ORDER),
                     mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), normalize=True,
                     crop=CROP.to_dict())


# ---------------------------------------------------------------- mobilenet_7.h5

def read_keras_weights(path: str | os.PathLike) -> tuple[dict[tuple[str, str], np.ndarray], dict[str, Any]]:
    """Every weight of a Keras HDF5 file, keyed by (layer, weight name without ``:0``).

    Keras 2 stores ``model_weights/<layer>/<layer>/<weight>:0`` (a nested
    model adds its own group); Keras 3 the same without ``:0``. Returns the
    weights and what the file says about itself (Keras version, dropout rate).
    """
    try:
        import h5py
    except ImportError:
        raise SignferError("reading Keras .h5 files needs h5py: pip install h5py") from None
    path = Path(path)
    weights: dict[tuple[str, str], np.ndarray] = {}
    info: dict[str, Any] = {"format": "Keras HDF5"}
    try:
        with h5py.File(path, "r") as f:
            for key in ("keras_version", "backend"):
                if key in f.attrs:
                    info[key] = _text(f.attrs[key])
            if "model_config" in f.attrs:
                info.update(_config_facts(_text(f.attrs["model_config"])))
            _refuse_links(f, path, h5py)
            root = f.get("model_weights", f)

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset) and "/" in name:
                    # a dataset may keep its bytes in another file: that file could be anything
                    if obj.external or obj.is_virtual:
                        raise SignferError(f"{path}: dataset {name} is stored in another file; "
                                           "refused (a weights file holds its own weights)")
                    layer, weight = name.split("/")[-2:]
                    weights[(layer, weight.split(":")[0])] = np.asarray(obj[()])

            root.visititems(visit)
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise SignferError(f"{path}: unreadable HDF5 file, truncated or damaged ({first_line(e)})") from None
    if not weights:
        raise SignferError(f"{path}: an HDF5 file without Keras weights (no datasets under model_weights)")
    return weights, info


def _refuse_links(f: Any, path: Path, h5py: Any) -> None:
    """Refuse soft and external links: they lead to other objects or files than
    the file's own weights."""
    def check(group: Any, prefix: str) -> None:
        for key in group:
            link = group.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise SignferError(f"{path}: {prefix}{key} is a link ({type(link).__name__}); refused "
                                   "(a weights file holds its own weights)")
            child = group[key]
            if isinstance(child, h5py.Group):
                check(child, f"{prefix}{key}/")

    check(f, "/")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _config_facts(config: str) -> dict[str, Any]:
    """The input shape and dropout rate from a Keras ``model_config`` (informational only)."""
    facts: dict[str, Any] = {}
    try:
        layers = json.loads(config).get("config", {}).get("layers", [])
    except (ValueError, AttributeError):
        return facts
    for layer in layers if isinstance(layers, list) else []:
        cfg = layer.get("config", {}) if isinstance(layer, dict) else {}
        if layer.get("class_name") == "InputLayer":
            facts["input_shape"] = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        elif layer.get("class_name") == "Dropout" and "dropout_rate" not in facts:
            facts["dropout_rate"] = cfg.get("rate")
    return facts


def read_keras_mobilenet(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """signfer's Keras-exact MobileNet v1 with the weights of HSEmotion's ``mobilenet_7.h5``."""
    from signfer.models.mobilenetv1 import state_from_keras

    path = Path(path)
    weights, info = read_keras_weights(path)
    layers = sorted({layer for layer, _ in weights})
    bias = weights.get(("emotion_preds", "bias"))
    if ("conv_dw_1", "depthwise_kernel") not in weights and ("conv_dw_1", "kernel") not in weights:
        raise SignferError(f"{path}: not a Keras MobileNet (no layer conv_dw_1); layers with weights: "
                           f"{', '.join(layers[:6])}{', ...' if len(layers) > 6 else ''}")
    if bias is None:
        raise SignferError(f"{path}: no output layer 'emotion_preds' (HSEmotion's); layers with weights "
                           f"after the MobileNet: {', '.join(x for x in layers if not x.startswith('conv')) or 'none'}")
    _check_classes(path, int(np.asarray(bias).shape[0]))
    try:
        state = state_from_keras(weights)
    except KeyError as e:
        raise SignferError(f"{path}: not HSEmotion's Keras MobileNet: weight {e.args[0]} is missing") from None
    except SignferError as e:
        raise SignferError(f"{path}: {e}") from None
    model = create_model("mobilenetv1", len(HSEMOTION_ORDER), "random")
    target = model.state_dict()
    for k, v in state.items():
        if tuple(v.shape) != tuple(target[k].shape):
            raise SignferError(f"{path}: {k} has shape {tuple(v.shape)}, Keras MobileNet alpha 1.0 "
                               f"{tuple(target[k].shape)}: another width or architecture")
    model.load_state_dict({**target, **state})
    return model, info


def _mobilenet_meta() -> ModelMeta:
    # signfer normalises (x / 255 - mean) / std; with mean = m / 255 and std = 1 / 255
    # that is x - m, in 0-255 units, as HSEmotion fed the network
    return ModelMeta(arch="mobilenetv1", input_size=INPUT_SIZE, labels=list(HSEMOTION_ORDER),
                     mean=[m / 255.0 for m in KERAS_MEANS], std=[1 / 255.0] * 3, normalize=True,
                     crop=CROP.to_dict())


# ---------------------------------------------------------------- import

def import_hsemotion(path: str | os.PathLike, out: str | os.PathLike, *, trust: bool = False,
                     command: str = "") -> Path:
    """Write HSEmotion's ``enet_b0_7.pt`` or ``mobilenet_7.h5`` (told apart by content) as a
    signfer checkpoint ``out``; return its stem.

    A pickle (``.pt``) needs ``trust=True``: see :data:`PICKLE_WARNING`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SignferError(f"{path}: no such file")
    kind = _kind(path)
    if kind == "pickle":
        if not trust:
            raise SignferError(f"{path} {PICKLE_WARNING}")
        model, info = read_efficientnet(path)
        meta = _efficientnet_meta()
        preprocessing = "RGB; face box squashed to 224 x 224; x / 255; ImageNet mean/std"
    else:
        model, info = read_keras_mobilenet(path)
        meta = _mobilenet_meta()
        preprocessing = ("RGB; face box squashed to 224 x 224; x - (103.939, 116.779, 123.68) "
                         "for (R, G, B) in 0-255 units, no scaling")
    digest = file_sha256(path)
    known = next((k for k in KNOWN.values() if k.arch == meta.arch), None)
    meta.training_data = "AffectNet, 7 classes, by HSEmotion (A. Savchenko); imported by signfer"
    meta.command = command
    meta.signfer_version = __version__
    meta.extra = {
        "source": {"file": path.name, "sha256": digest, "size": path.stat().st_size, **info},
        "hsemotion": {"preprocessing": preprocessing, "label_order": "alphabetical (HSEmotion)",
                      "reported_accuracy": known.reported if known else None},
    }
    return save_checkpoint(model.eval(), meta, out)


# ---------------------------------------------------------------- --init hsemotion:NAME

def search_dirs() -> list[Path]:
    """Where ``hsemotion:NAME`` looks for HSEmotion's file: ``~/.hsemotion``, then ``$SIGNFER_HOME``."""
    dirs = [Path.home() / ".hsemotion"]
    if os.environ.get("SIGNFER_HOME"):
        dirs.append(Path(os.environ["SIGNFER_HOME"]).expanduser())
    return dirs


def _download(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    """Fetch ``url`` into ``dest`` atomically (no half-written file is ever left)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(dest) as tmp, \
            open(tmp, "wb") as f:
        shutil.copyfileobj(response, f)


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _sha_memo(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = file_sha256(path)
    return _SHA_MEMO[key]


def resolve_hsemotion(spec: str) -> Path:
    """``hsemotion:NAME`` -> the stem of its imported checkpoint in signfer's cache folder.

    The file is looked for in :func:`search_dirs`; when absent it is downloaded
    into ``~/.hsemotion`` (HSEmotion's own cache folder), and when that fails
    the error says in one line where to put it. The import is cached under the
    file's SHA-256, so a replaced file is imported again.
    """
    name = spec.removeprefix(PREFIX)
    if name not in KNOWN:
        raise SignferError(f"unknown HSEmotion model {spec!r}; known: "
                           f"{', '.join(PREFIX + k for k in KNOWN)}")
    known = KNOWN[name]
    dirs = search_dirs()
    src = next((d / known.file for d in dirs if (d / known.file).is_file()), None)
    if src is None:
        url = URL.format(file=known.file)
        try:
            _download(url, dirs[0] / known.file)
        except Exception as e:  # offline, proxy, HTTP error, read-only home: all say the same
            reason = getattr(e, "reason", None) or e
            raise SignferError(
                f"{PREFIX}{name}: {known.file} is not in {' or '.join(map(str, dirs))} and could not be "
                f"downloaded ({reason}); download it from {url} into {dirs[0]}"
                f"{'' if len(dirs) > 1 else ' (or set SIGNFER_HOME to its folder)'}") from None
        src = dirs[0] / known.file
    stem = cache_dir() / "hsemotion" / f"{name}-{_sha_memo(src)[:16]}"
    if not all(p.exists() for p in checkpoint_files(stem)):
        # naming HSEmotion's published model is the trust decision that --trust asks for
        import_hsemotion(src, stem, trust=True, command=f"--init {PREFIX}{name} (imported from {src})")
    return stem
