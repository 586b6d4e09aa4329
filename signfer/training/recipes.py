"""Named training presets: a fast one for comparison grids, an accurate one for the model you keep.

A preset is a set of :class:`~signfer.config.TrainConfig` values and a start
(:data:`STARTS`: the built-in model it fine-tunes when no init is given);
``--set`` overrides apply on top of it. The figures are 5-fold
cross-validation on the CK+48 dev half (64 subjects, folds grouped by
subject, ``benchmarks/small_data.py``, benchmarks/RESULTS.md):

* ``fast`` (TrainConfig's defaults: 3 head epochs, at most 5 all-layer epochs
  at lr 2e-4 with early stopping), from the 64 px ``mobilenetv2-fer``:
  71.1 ± 9.6 % at ~20 s a fit; what the paper grid uses, so that its 70 fits
  fit in an hour on 2 cores.
* ``accurate``: 30 all-layer epochs at lr 1e-3 (one-cycle), no early stop
  (the epoch kept is still the best on the inner validation part), random
  rotation up to 10° and zoom up to 10 % in that stage, and each face
  predicted together with its mirror image (``tta``), from the 160 px
  ``mobilenetv2-fer-160``: 94.1 ± 3.2 % (mean per-class recall 90.8) at about
  340-400 s a fit of ~440 faces on 2 cores. The same settings from the 64 px
  model: 88.6 ± 4.4 % at ~100 s a fit (86.8 from the longer schedule alone,
  +0.2 from rotation/zoom, +1.6 from the mirror). ``signfer train`` uses it
  by default. From ``efficientnet_lite0-fer-160`` (``--arch efficientnet_lite0``):
  93.6 ± 3.1 % (mean per-class recall 86.6).

These folds also chose the accurate preset (the 160 px start, the mirror,
no label smoothing, MobileNetV2 as default), so its figures are somewhat
optimistic; the other 54 CK+ subjects, kept aside to check them, are not
scored yet.

Example:
    >>> preset("accurate").epochs
    30
"""

from __future__ import annotations

from typing import Any

from signfer.config import TrainConfig, from_dict
from signfer.errors import SignferError

PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    "accurate": {"epochs": 30, "patience": 30, "lr": 1e-3, "rotate": 10.0, "scale": 0.1, "tta": True},
}


#: The built-in model each preset starts from, by architecture, when no init is
#: given (other architectures, and ``fast``: :func:`~signfer.models.checkpoint.default_init`).
#: ``fast`` keeps the 64 px models, on which the paper grid's hour was measured.
STARTS: dict[str, dict[str, str]] = {
    "fast": {},
    "accurate": {"mobilenetv2": "mobilenetv2-fer-160", "efficientnet_lite0": "efficientnet_lite0-fer-160"},
}


def preset_init(name: str | None, arch: str | None) -> str:
    """The model preset ``name`` starts from for ``arch`` (None: mobilenetv2).

    >>> preset_init("fast", "mobilenetv2")
    'mobilenetv2-fer'
    """
    from signfer.models.checkpoint import default_init

    arch = arch or "mobilenetv2"
    return STARTS.get(name or "", {}).get(arch) or default_init(arch)


def preset(name: str, overrides: dict[str, Any] | None = None, where: str = "--set") -> TrainConfig:
    """The training settings of preset ``name`` with ``overrides`` on top; a bad
    override is an error naming ``where`` they came from."""
    if name not in PRESETS:
        raise SignferError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    return from_dict(TrainConfig, {**PRESETS[name], **(overrides or {})}, where)
