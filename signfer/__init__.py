"""signfer: facial-expression recognition in sign-language video.

FER-pretrained CNNs (MobileNet, EfficientNet), fine-tuned on small sign-language
face sets and judged by grouped K-fold cross-validation, then used to annotate
video per frame for ELAN.

The front door for notebooks (see :mod:`signfer.api`), imported on first use so
that ``import signfer`` stays cheap:

>>> import signfer
>>> table = signfer.load_dataset("feph", "~/data/FePh")  # doctest: +SKIP
>>> signfer.cross_validate(table, "runs/cv")  # doctest: +SKIP
>>> model = signfer.finetune(table, "models/feph")  # doctest: +SKIP
>>> signfer.Recognizer(model).predict("face.png")  # doctest: +SKIP
"""

import os as _os

# OpenMP threads that spin between parallel regions starve each other on small
# CPUs: yuface's detector, which shares torch's OpenMP runtime, ran 35x slower
# (420 vs 12 ms a frame) with torch's default policy. The policy is read when
# torch loads, so it must be set before any submodule imports torch. A user
# who imports torch before signfer should export OMP_WAIT_POLICY=PASSIVE.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

#: Names served by signfer.api, which imports torch: loaded on first access.
_API = ("CropSpec", "Recognizer", "TrainConfig", "cross_validate", "finetune", "load_dataset")

__all__ = ["CropSpec", "Recognizer", "TrainConfig", "__version__", "cross_validate", "finetune", "load_dataset"]


def __getattr__(name: str):
    if name in _API:
        from importlib import import_module

        value = getattr(import_module("signfer.api"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'signfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
