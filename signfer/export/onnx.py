"""Export a signfer checkpoint to ONNX, and check parity against PyTorch.

The graph takes normalised ``N x 3 x S x S`` float input (dynamic batch) and
returns logits; preprocessing stays in the metadata, as for PyTorch.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from signfer.errors import SignferError
from signfer.io import atomic_path, cache_dir, check_out_files, write_json
from signfer.models.checkpoint import (
    ModelMeta,
    builtin_dir,
    checkpoint_files,
    load_meta,
    load_model,
    resolve_checkpoint,
)


def export_onnx(name_or_path: str | os.PathLike, out: str | os.PathLike | None = None,
                check: bool = True) -> tuple[Path, float]:
    """Write ``out`` and, beside it, its metadata JSON (``NAME.onnx`` + ``NAME.json``).

    ``out`` defaults to ``NAME.onnx`` beside a checkpoint given by path (whose
    own ``NAME.json`` is then the metadata, left as it is), or in the current
    folder for a built-in model. An ``out`` whose JSON would replace another
    checkpoint's metadata (a ``.safetensors`` of that name lies beside it) is
    refused.

    Returns the path and, when ``check``, the max |logit difference| between
    ONNX Runtime and PyTorch on random input (``nan`` otherwise).

    Raises:
        SignferError: ``out`` is not named ``.onnx``, its JSON belongs to
            another checkpoint, or it cannot be written.
    """
    stem = resolve_checkpoint(name_or_path)
    out = Path(out) if out else default_out(stem)
    if out.suffix.lower() != ".onnx":
        raise SignferError(f"{out}: an ONNX export is named .onnx (its metadata goes beside it as .json)")
    meta_path = out.with_suffix(".json")
    own_meta = meta_path.resolve() == checkpoint_files(stem)[1].resolve()
    if not own_meta and out.with_suffix(".safetensors").exists():
        raise SignferError(f"{meta_path} is the metadata of the checkpoint {out.with_suffix('.safetensors')}; "
                           "choose another --out")
    check_out_files([out, meta_path], "ONNX export")
    model, meta = load_model(stem)
    model = model.to(memory_format=torch.contiguous_format).eval()
    x = torch.rand(2, 3, meta.input_size, meta.input_size)
    # The TorchScript exporter: the newer dynamo one needs onnxscript, and this one
    # is exact for these CNNs (the parity check below measures it).
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (x,), str(tmp), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)
    if not own_meta:
        write_json(meta_path, meta.to_json())
    diff = parity(model, out, meta) if check else float("nan")
    return out, diff


def default_out(stem: Path) -> Path:
    """Where a checkpoint's export goes without ``out``: beside it, or for a
    built-in model (inside the installed package) in the current folder."""
    return Path(f"{stem.name}.onnx") if stem.parent == builtin_dir() else Path(f"{stem}.onnx")


def parity(model: torch.nn.Module, onnx_path: str | os.PathLike, meta: ModelMeta, n: int = 8, seed: int = 0) -> float:
    """Max |logit difference| between PyTorch and ONNX Runtime on the same random input."""
    import onnxruntime as ort

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, meta.input_size, meta.input_size, generator=g)
    with torch.inference_mode():
        ref = model.eval()(x).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(ref - got).max())


def cached_onnx(stem: Path) -> tuple[Path, ModelMeta]:
    """The ONNX export of checkpoint ``stem``, made once and kept in the signfer cache."""
    weights = checkpoint_files(stem)[0]
    digest = hashlib.sha1(weights.read_bytes()).hexdigest()[:16]
    path = cache_dir() / "onnx" / f"{stem.name}-{digest}.onnx"
    meta = load_meta(stem)  # a damaged JSON is a one-line error, as on the PyTorch path
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _, diff = export_onnx(stem, path, check=True)
        if not diff < 1e-3:
            raise SignferError(f"ONNX export of {stem} differs from PyTorch by {diff:.2e}")
    return path, meta
