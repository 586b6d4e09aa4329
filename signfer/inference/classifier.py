"""Classifiers built from signfer checkpoints: face crops in, class probabilities out.

Both backends turn crops into model input with the checkpoint's own
:class:`~signfer.data.spec.PreprocessSpec` (input size, equalisation,
normalisation, and the crop that cuts faces from frames), so a model sees
exactly what it was trained on. ONNX Runtime is used when it is installed
(``backend="auto"``): it is the fast path for video; PyTorch is the reference.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch

from signfer.data.spec import PreprocessSpec
from signfer.errors import SignferError
from signfer.faces.crop import Box
from signfer.models.checkpoint import ModelMeta, load_model, resolve_checkpoint


class _Classifier:
    """What both backends share: labels, the spec, and cutting faces the spec's way."""

    backend = ""

    def __init__(self, meta: ModelMeta, name: str = ""):
        self.meta = meta
        self.name = name
        self.labels = tuple(meta.labels)
        self.spec: PreprocessSpec = meta.spec
        self.input_size = meta.input_size

    def crop(self, image: np.ndarray, box: Box | None) -> np.ndarray:
        """The face crop this model expects (``box`` None: ``image`` already is a face)."""
        return self.spec.crop_face(image, box)

    def predict_proba(self, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """``N x S x S x 3`` uint8 crops -> ``N x C`` probabilities in ``labels`` order."""
        crops = self.spec.check_crops(crops)
        out = [self._tta(crops[i:i + batch_size]) for i in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)


    def _tta(self, crops: np.ndarray) -> np.ndarray:
        # a model trained with tta averages each face with its mirror image
        # (equalisation commutes with mirroring: a histogram has no left and right)
        probs = self._probs(crops)
        return (probs + self._probs(np.ascontiguousarray(crops[:, :, ::-1]))) / 2 if self.meta.tta else probs


class TorchClassifier(_Classifier):
    """A checkpoint run with PyTorch."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, meta: ModelMeta, name: str = ""):
        super().__init__(meta, name)
        self.model = model.eval()

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> TorchClassifier:
        return cls(*load_model(name_or_path), name=str(name_or_path))

    @torch.inference_mode()
    def _probs(self, crops: np.ndarray) -> np.ndarray:
        return torch.softmax(self.model(self.spec.torch_input(crops)), 1).numpy()


class OnnxClassifier(_Classifier):
    """A checkpoint exported to ONNX (see :mod:`signfer.export.onnx`), run with ONNX Runtime.

    The exported graph takes the normalised NCHW float input; the spec's numpy
    path prepares it.
    """

    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, meta: ModelMeta, threads: int | None = None,
                 name: str = ""):
        super().__init__(meta, name)
        self.onnx_path, self.threads = onnx_path, threads
        self._start(str(onnx_path))

    def _start(self, model: str | bytes) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def __getstate__(self) -> dict:
        # a session cannot be pickled: another process (a Ray task, maybe on
        # another machine) gets the ONNX model itself and starts its own, with
        # as many threads as its task was given (Ray sets OMP_NUM_THREADS)
        state = {k: v for k, v in self.__dict__.items() if k not in ("session", "_input")}
        with open(self.onnx_path, "rb") as f:
            state["_onnx"] = f.read()
        return state

    def __setstate__(self, state: dict) -> None:
        model = state.pop("_onnx")
        self.__dict__.update(state)
        if not self.threads and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            self.threads = int(os.environ["OMP_NUM_THREADS"])
        self._start(model)

    def _probs(self, crops: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {self._input: self.spec.numpy_input(crops)})[0]
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)


def onnx_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None


def load_classifier(name_or_path: str | os.PathLike, backend: str = "auto") -> TorchClassifier | OnnxClassifier:
    """A classifier for a built-in model name or checkpoint path.

    ``backend``: 'torch', 'onnx', or 'auto' (ONNX Runtime when installed). The
    ONNX file is exported next to the checkpoint, or into the signfer cache
    for read-only locations such as the installed package, and reused.
    """
    if backend not in ("auto", "torch", "onnx"):
        raise SignferError(f"unknown backend {backend!r}; use auto, torch or onnx")
    if backend == "torch" or (backend == "auto" and not onnx_available()):
        return TorchClassifier.load(name_or_path)
    if not onnx_available():
        raise SignferError("backend 'onnx' needs onnx and onnxruntime: pip install onnx onnxruntime")
    from signfer.export.onnx import cached_onnx

    stem = resolve_checkpoint(name_or_path)
    onnx_path, meta = cached_onnx(stem)
    return OnnxClassifier(onnx_path, meta, name=str(name_or_path))


def stack_crops(crops: list) -> np.ndarray | tuple[np.ndarray, ...]:
    """One batch from per-face crops: an ``N x S x S x 3`` array, or for a
    :class:`FusedClassifier` (whose ``crop`` gives one crop per member) a tuple
    of such arrays, one per member."""
    if crops and isinstance(crops[0], tuple):
        return tuple(np.stack(parts) for parts in zip(*crops))
    return np.stack(crops)


class FusedClassifier:
    """Several models on one face, e.g. an upper-face and a lower-face model
    (mouthing covers the lower face while signing): each cuts the face its own
    way (its checkpoint's crop spec, region included) and the prediction is the
    mean of their probabilities.

    The members must share one label set (matched by name; the columns follow
    the first member's order). :meth:`predict_all` also gives each member's
    probabilities, which annotation writes as ``<tag>:prob_<class>`` columns,
    the tag being the member's face region where the regions differ.
    """

    backend = "fused"

    def __init__(self, members: list[_Classifier]):
        from signfer.labels import canonical

        if len(members) < 2:
            raise SignferError("fusing needs at least two models")
        self.members = list(members)
        self.labels = members[0].labels
        self.spec = members[0].spec
        self.input_size = members[0].input_size
        self.name = " + ".join(m.name for m in members)
        known = [canonical(c) for c in self.labels]
        self._columns = []
        for m in members:
            theirs = [canonical(c) for c in m.labels]
            if sorted(theirs) != sorted(known):
                raise SignferError(f"models {members[0].name!r} and {m.name!r} have other label sets "
                                   f"({', '.join(self.labels)} / {', '.join(m.labels)}); fused models must share one")
            self._columns.append([theirs.index(c) for c in known])
        regions = [m.spec.crop.region for m in members]
        self.tags = regions if len(set(regions)) == len(regions) else [f"m{i}" for i in range(len(members))]

    def crop(self, image: np.ndarray, box: Box | None) -> tuple[np.ndarray, ...]:
        return tuple(m.crop(image, box) for m in self.members)

    def predict_all(self, crops: tuple[np.ndarray, ...]) -> tuple[np.ndarray, list[np.ndarray]]:
        """The fused probabilities and each member's, all in ``labels`` order."""
        each = [m.predict_proba(c)[:, cols] for m, c, cols in zip(self.members, crops, self._columns)]
        return np.mean(each, axis=0), each

    def predict_proba(self, crops: tuple[np.ndarray, ...]) -> np.ndarray:
        return self.predict_all(crops)[0]
