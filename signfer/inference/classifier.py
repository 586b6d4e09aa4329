"""Classifiers built from signfer checkpoints: face crops in, class probabilities out.

Both backends honour the checkpoint's metadata (input size, normalisation,
equalisation, label order), so a model sees exactly what it was trained on.
ONNX Runtime is used when it is installed (``backend="auto"``): it is the fast
path for video; PyTorch is the reference.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch

from signfer.data.cache import equalize
from signfer.errors import SignferError
from signfer.models.checkpoint import ModelMeta, load_model, resolve_checkpoint
from signfer.training.preprocess import Preprocess


def preprocess_for(meta: ModelMeta) -> Preprocess:
    return Preprocess(tuple(meta.mean), tuple(meta.std)) if meta.normalize else Preprocess()


def _check_crops(crops: np.ndarray, size: int) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (size, size, 3) or crops.dtype != np.uint8:
        raise ValueError(f"expected N x {size} x {size} x 3 uint8 crops, got {crops.shape} {crops.dtype}")
    return crops


class TorchClassifier:
    """A checkpoint run with PyTorch."""

    backend = "torch"

    def __init__(self, model: torch.nn.Module, meta: ModelMeta):
        self.model, self.meta = model.eval(), meta
        self.labels = tuple(meta.labels)
        self.input_size = meta.input_size
        self._prep = preprocess_for(meta)

    @classmethod
    def load(cls, name_or_path: str | os.PathLike) -> "TorchClassifier":
        return cls(*load_model(name_or_path))

    @torch.inference_mode()
    def predict_proba(self, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
        crops = _check_crops(crops, self.input_size)
        if self.meta.equalize:
            crops = equalize(crops)
        out = [torch.softmax(self.model(self._prep(torch.from_numpy(crops[i:i + batch_size]))), 1)
               for i in range(0, len(crops), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.labels)), np.float32)


class OnnxClassifier:
    """A checkpoint exported to ONNX (see :mod:`signfer.export.onnx`), run with ONNX Runtime.

    Preprocessing happens in numpy here, with the same metadata as in PyTorch;
    the exported graph takes the normalised NCHW float input.
    """

    backend = "onnxruntime"

    def __init__(self, onnx_path: str | os.PathLike, meta: ModelMeta, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.meta = meta
        self.labels = tuple(meta.labels)
        self.input_size = meta.input_size
        self._input = self.session.get_inputs()[0].name
        if meta.normalize:
            self._mean = np.asarray(meta.mean, np.float32).reshape(1, 3, 1, 1)
            self._std = np.asarray(meta.std, np.float32).reshape(1, 3, 1, 1)
        else:
            self._mean, self._std = np.zeros((1, 3, 1, 1), np.float32), np.ones((1, 3, 1, 1), np.float32)

    def predict_proba(self, crops: np.ndarray, batch_size: int = 256) -> np.ndarray:
        crops = _check_crops(crops, self.input_size)
        if self.meta.equalize:
            crops = equalize(crops)
        out = []
        for i in range(0, len(crops), batch_size):
            x = crops[i:i + batch_size].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            logits = self.session.run(None, {self._input: (x - self._mean) / self._std})[0]
            e = np.exp(logits - logits.max(1, keepdims=True))
            out.append(e / e.sum(1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)


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
    return OnnxClassifier(onnx_path, meta)
