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
        out = [self._probs(crops[i:i + batch_size]) for i in range(0, len(crops), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)


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
        import onnxruntime as ort

        super().__init__(meta, name)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

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
