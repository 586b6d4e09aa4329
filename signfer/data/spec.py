"""The preprocessing spec: how a face becomes the tensor a model sees.

One :class:`PreprocessSpec` is stored in every checkpoint (as its metadata
fields ``input_size``, ``mean``/``std``/``normalize``, ``equalize`` and
``crop``) and rebuilt from it, the way timm's ``resolve_data_config`` derives
transforms from a model's pretrained config. Training, cross-validation,
evaluation, prediction, video annotation (PyTorch and ONNX Runtime) and
distillation teachers all call it, so no two places compute a model's input
on their own.

The steps, in order:

1. ``crop``: cut the face from an image (:func:`signfer.faces.crop.crop_face`
   with the spec's :class:`~signfer.faces.crop.CropSpec`) at ``size`` x ``size``;
2. ``pixels``: histogram-equalise the uint8 crops (``equalize``);
3. ``__call__`` (PyTorch) or ``numpy`` (ONNX Runtime): scale to [0, 1],
   optionally mirror, normalise with ``mean``/``std`` (none: pixels in [0, 1]).

Example:
    >>> spec = PreprocessSpec((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), size=64)
    >>> crops = np.zeros((2, 64, 64, 3), np.uint8)
    >>> spec.torch_input(crops).shape
    torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps

from signfer.errors import SignferError
from signfer.faces.crop import Box, CropSpec, crop_face

if TYPE_CHECKING:  # pragma: no cover
    from signfer.models.checkpoint import ModelMeta

#: Values of ``equalize``: none, the luminance only (technique ``he``, colour
#: kept), or each RGB channel on its own (the DFKI 2025 pipeline).
EQUALIZE = (None, "luma", "rgb")


def _equalize_mode(value: Any) -> str | None:
    """``True`` (checkpoints before the per-channel mode existed) means ``"luma"``."""
    if value is True:
        return "luma"
    if value in (False, None, "", "none"):
        return None
    if value not in EQUALIZE:
        raise SignferError(f"equalize must be one of {EQUALIZE}, not {value!r}")
    return value


def equalize(images: np.ndarray, mode: str | None = "luma") -> np.ndarray:
    """Histogram equalisation of each uint8 ``N x H x W x 3`` image on its own.

    ``"luma"`` equalises the Y channel of YCbCr and keeps the colour;
    ``"rgb"`` equalises each colour channel separately. Each image is
    equalised alone, so no statistic crosses a split. (PIL leaves images under
    about 16x16 pixels unchanged: too few pixels per level.)
    """
    mode = _equalize_mode(mode)
    if mode is None:
        return images
    out = np.empty_like(images)
    for i, im in enumerate(images):
        pil = Image.fromarray(im)
        if mode == "rgb":
            out[i] = np.asarray(ImageOps.equalize(pil))  # PIL equalises RGB per channel
        else:
            y, cb, cr = pil.convert("YCbCr").split()
            out[i] = np.asarray(Image.merge("YCbCr", (ImageOps.equalize(y), cb, cr)).convert("RGB"))
    return out


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything between an image and a model's input tensor.

    Args:
        mean, std: per-channel statistics in [0, 1] units; ``None`` feeds the
            pixels in [0, 1] (a model trained without ``ip``).
        size: side of the square model input, in pixels (``None`` where the
            caller already holds crops, e.g. a training batch).
        equalize: ``None``, ``"luma"`` or ``"rgb"`` (see :func:`equalize`).
        crop: how faces are cut (margin, alignment, region, framing).
    """

    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    size: int | None = None
    equalize: str | None = None
    crop: CropSpec = field(default_factory=CropSpec)

    def __post_init__(self) -> None:
        if (self.mean is None) != (self.std is None):
            raise SignferError("a preprocessing spec needs both mean and std, or neither")
        if self.mean is not None:
            object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
            object.__setattr__(self, "std", tuple(float(v) for v in self.std))
            if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
                raise SignferError(f"mean/std must be 3 values each, std > 0; got {self.mean}, {self.std}")
        if self.size is not None and int(self.size) < 8:
            raise SignferError(f"input size must be at least 8 pixels, not {self.size}")
        object.__setattr__(self, "equalize", _equalize_mode(self.equalize))

    # ------------------------------------------------------------ building

    @classmethod
    def from_meta(cls, meta: ModelMeta) -> PreprocessSpec:
        """The spec recorded in a checkpoint's metadata."""
        mean, std = (tuple(meta.mean), tuple(meta.std)) if meta.normalize else (None, None)
        return cls(mean, std, size=meta.input_size, equalize=meta.equalize,
                   crop=CropSpec.from_dict(meta.crop))

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "mean": list(self.mean) if self.mean else None,
                "std": list(self.std) if self.std else None, "equalize": self.equalize,
                "crop": self.crop.to_dict()}

    # ------------------------------------------------------------ the steps

    def crop_face(self, image: np.ndarray, box: Box | None) -> np.ndarray:
        """Step 1: the ``size`` x ``size`` uint8 face crop of ``image`` (``box`` None: already a face)."""
        if self.size is None:
            raise SignferError("this preprocessing spec has no input size to crop to")
        return crop_face(image, box, self.size, self.crop)

    def pixels(self, crops: np.ndarray) -> np.ndarray:
        """Step 2: histogram-equalised uint8 crops (the crops themselves without ``equalize``)."""
        return equalize(crops, self.equalize)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """A float ``B x 3 x H x W`` batch in [0, 1] -> the model's input scale."""
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`normalize`: model input -> pixels in [0, 1]."""
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return x * std + mean

    def __call__(self, batch: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
        """Step 3 in PyTorch: uint8 ``B x S x S x 3`` (already equalised) -> float
        ``B x 3 x S x S``, channels-last; ``flip`` mirrors the rows where it is True."""
        x = batch.permute(0, 3, 1, 2).float().div_(255.0)
        if flip is not None and bool(flip.any()):
            flip = flip.to(x.device)
            x[flip] = x[flip].flip(-1)
        return self.normalize(x).contiguous(memory_format=torch.channels_last)

    def numpy(self, crops: np.ndarray) -> np.ndarray:
        """Step 3 in numpy (for ONNX Runtime): uint8 ``N x S x S x 3`` -> float32 ``N x 3 x S x S``."""
        x = crops.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        if self.mean is None:
            return x
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return (x - mean) / std

    # ------------------------------------------------------------ whole paths

    def check_crops(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        size = self.size
        if crops.ndim != 4 or crops.shape[3] != 3 or crops.dtype != np.uint8 or (
                size is not None and crops.shape[1:3] != (size, size)):
            raise ValueError(f"expected N x {size} x {size} x 3 uint8 crops, got {crops.shape} {crops.dtype}")
        return crops

    def torch_input(self, crops: np.ndarray) -> torch.Tensor:
        """Steps 2-3 in PyTorch for uint8 crops."""
        # writeable: torch warns about (and must not write into) read-only arrays, e.g. views of PIL images
        return self(torch.from_numpy(np.require(self.pixels(self.check_crops(crops)), requirements=["C", "W"])))

    def numpy_input(self, crops: np.ndarray) -> np.ndarray:
        """Steps 2-3 in numpy for uint8 crops (what the ONNX graph is fed)."""
        return self.numpy(self.pixels(self.check_crops(crops)))


def check_align(crop: CropSpec | None, crop_faces: str | None, where: str = "--align") -> None:
    """Refuse alignment of faces that no detector finds.

    Levelling the eyes needs the detector's landmarks: without ``crop_faces``
    the training images are used as they are, so a model trained on them must
    not level video faces either.

    Raises:
        SignferError: ``crop.align`` without ``crop_faces``.
    """
    if crop is not None and crop.align and not crop_faces:
        raise SignferError(f"{where} levels the eyes of faces the detector finds, so it needs --crop-faces "
                           "(face crops are used as they are: a model trained on them would see "
                           "levelled faces only in video)")


def dataset_crop(table, crop: CropSpec | None = None, crop_faces: str | None = None, *,
                 sample: int = 200, seed: int = 0, log=lambda s: None) -> CropSpec:
    """The crop spec that describes how a dataset's faces are framed, for its model.

    With ``crop_faces`` (a detector name) signfer cut the faces itself, so the
    spec is exact: that detector, with ``crop``'s margin, alignment and region.
    Otherwise the images are pre-cropped faces with their own framing: the
    default detector is run on up to ``sample`` of them (a fixed random
    sample) and the median position and size of the face box are recorded
    (:class:`~signfer.faces.crop.Framing`), so that video faces are later cut
    the same way. Where no detector is installed, or it finds a face in fewer
    than half of the sample, no framing is recorded (video faces are then cut
    with ``crop``'s margin) and ``log`` says so. No label is read, so the whole
    table may be measured.
    """
    from dataclasses import replace

    from signfer.data.cache import read_rgb
    from signfer.faces import DEFAULT_DETECTOR, create_detector
    from signfer.faces.framing import describe_framing, measure_framing

    check_align(crop, crop_faces)
    crop = crop or CropSpec()
    if crop_faces:
        return replace(crop, detector=crop_faces, framing=None)
    try:
        detector = create_detector(crop.detector or DEFAULT_DETECTOR)
    except SignferError as e:
        log(f"framing not measured ({e}); video faces will be cut with margin {crop.margin}")
        return crop
    paths = table.samples["path"].to_numpy()
    sources = table.samples["source"].to_numpy()
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(paths), size=min(sample, len(paths)), replace=False)
    framing = measure_framing((read_rgb(paths[i], sources[i]) for i in sorted(picked)), detector)
    if framing is None or framing.n_found < 0.5 * framing.n_measured:
        found = 0 if framing is None else framing.n_found
        log(f"framing not measured: a face was found in only {found} of {len(picked)} images; "
            f"video faces will be cut with margin {crop.margin}")
        return replace(crop, detector=detector.name, framing=None)
    log(f"measured framing: {describe_framing(framing)}")
    if crop.margin != CropSpec().margin or crop.square != CropSpec().square:
        log("  video faces will be cut with this framing, which replaces --margin and --no-square "
            "(they apply to faces that signfer cuts itself, with --crop-faces)")
    return replace(crop, detector=detector.name, framing=framing)
