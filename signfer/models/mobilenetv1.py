"""MobileNet v1 exactly as Keras builds it, with HSEmotion's 256-unit ``feats`` layer.

HSEmotion's ``mobilenet_7.h5`` is ``keras.applications.MobileNet`` (alpha 1.0)
followed by global average pooling, dropout, ``Dense(256, relu, name='feats')``
and ``Dense(7, softmax, name='emotion_preds')``. timm's ``mobilenetv1_100``
pads a strided 3x3 convolution by one pixel on every side; Keras pads
``ZeroPadding2D(((0, 1), (0, 1)))`` (bottom and right only) and then convolves
with ``padding='valid'``, so the same weights give other outputs there. This
module reproduces Keras's layers one for one, so imported weights compute what
they computed in Keras:

* strided convolutions (``conv1`` and the depthwise ``conv_dw_2/4/6/12``): zero
  padding of one row at the bottom and one column at the right, then no padding;
* the other 3x3 depthwise convolutions: ``'same'`` (one pixel on every side);
* BatchNorm with Keras's epsilon 1e-3; ReLU6 after every BatchNorm;
* the head: pooled 1024 features -> dropout -> ``feats`` (ReLU) -> classifier.

The ``feats`` layer belongs to the backbone in signfer's sense: ``ft``'s warm-up
trains only the classifier on the 256 ``feats`` outputs
(``forward_head(..., pre_logits=True)``), as the paper replaced only
``emotion_preds``.

>>> model = MobileNetV1(num_classes=7).eval()
>>> model(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 7])
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from signfer.errors import SignferError

#: Keras MobileNet's BatchNormalization epsilon (the Keras default).
BN_EPS = 1e-3
#: (pointwise filters, depthwise stride) of Keras MobileNet's 13 blocks, alpha 1.0.
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)
STEM_FILTERS = 32
FEATS = 256
#: Dropout before ``feats`` when fine-tuning (Keras's Dropout is inactive at inference).
DROP_RATE = 0.5


class ConvBN(nn.Sequential):
    """Keras ``[ZeroPadding2D] -> Conv2D | DepthwiseConv2D -> BatchNormalization -> ReLU(6)``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, depthwise: bool = False):
        layers: list[tuple[str, nn.Module]] = []
        if stride == 2:  # Keras: ZeroPadding2D(((0, 1), (0, 1))) then padding='valid'
            layers.append(("pad", nn.ZeroPad2d((0, 1, 0, 1))))
            padding = 0
        else:  # padding='same' with stride 1 and an odd kernel: kernel // 2 on every side
            padding = kernel // 2
        layers += [
            ("conv", nn.Conv2d(cin, cout, kernel, stride, padding, groups=cin if depthwise else 1, bias=False)),
            ("bn", nn.BatchNorm2d(cout, eps=BN_EPS)),
            ("act", nn.ReLU6(inplace=True)),
        ]
        super().__init__(OrderedDict(layers))


class MobileNetV1(nn.Module):
    """Keras MobileNet v1 (alpha 1.0) + pooling + dropout + ``feats`` (256, ReLU) + classifier.

    Provides the timm interface that signfer uses: ``forward_features``,
    ``forward_head(x, pre_logits=...)``, ``get_classifier``, ``reset_classifier``.
    """

    def __init__(self, num_classes: int = 7, drop_rate: float = DROP_RATE):
        super().__init__()
        layers: list[tuple[str, nn.Module]] = [("conv1", ConvBN(3, STEM_FILTERS, 3, 2))]
        cin = STEM_FILTERS
        for i, (cout, stride) in enumerate(BLOCKS, start=1):
            layers.append((f"conv_dw_{i}", ConvBN(cin, cin, 3, stride, depthwise=True)))
            layers.append((f"conv_pw_{i}", ConvBN(cin, cout, 1, 1)))
            cin = cout
        self.features = nn.Sequential(OrderedDict(layers))
        self.num_features = cin
        self.drop = nn.Dropout(drop_rate)
        self.feats = nn.Linear(cin, FEATS)
        self.feats_act = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(FEATS, num_classes)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))  # GlobalAveragePooling2D
        x = self.feats_act(self.feats(self.drop(x)))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(FEATS, num_classes)


def create(num_classes: int) -> MobileNetV1:
    """The registry's factory for ``mobilenetv1``."""
    return MobileNetV1(num_classes)


# ---------------------------------------------------------------- Keras weights

def _conv(kernel: np.ndarray) -> np.ndarray:
    """Keras Conv2D kernel (H, W, in, out) -> PyTorch (out, in, H, W)."""
    return kernel.transpose(3, 2, 0, 1)


def _depthwise(kernel: np.ndarray) -> np.ndarray:
    """Keras DepthwiseConv2D kernel (H, W, channels, multiplier 1) -> PyTorch (channels, 1, H, W)."""
    h, w, c, m = kernel.shape
    if m != 1:
        raise SignferError(f"depthwise kernel with depth multiplier {m}; Keras MobileNet's is 1")
    return kernel.transpose(2, 3, 0, 1).reshape(c * m, 1, h, w)


def keras_layer_names() -> list[str]:
    """Every Keras layer that holds weights, in network order."""
    names = ["conv1", "conv1_bn"]
    for i in range(1, len(BLOCKS) + 1):
        names += [f"conv_dw_{i}", f"conv_dw_{i}_bn", f"conv_pw_{i}", f"conv_pw_{i}_bn"]
    return names + ["feats", "emotion_preds"]


def state_from_keras(weights: dict[tuple[str, str], np.ndarray]) -> dict[str, torch.Tensor]:
    """A :class:`MobileNetV1` state dict from Keras weights keyed by (layer, weight name).

    Weight names are Keras's without the ``:0`` suffix (``kernel``,
    ``depthwise_kernel``, ``gamma``, ``beta``, ``moving_mean``,
    ``moving_variance``, ``bias``); a depthwise kernel may also be called
    ``kernel`` (Keras 3). Raises :class:`SignferError` naming the first weight
    that is missing.
    """
    def get(layer: str, *names: str) -> np.ndarray:
        for n in names:
            if (layer, n) in weights:
                return np.asarray(weights[(layer, n)], np.float32)
        raise KeyError(f"{layer}/{names[0]}")

    state: dict[str, np.ndarray] = {}

    def bn(layer: str, prefix: str) -> None:
        state[f"{prefix}.bn.weight"] = get(layer, "gamma")
        state[f"{prefix}.bn.bias"] = get(layer, "beta")
        state[f"{prefix}.bn.running_mean"] = get(layer, "moving_mean")
        state[f"{prefix}.bn.running_var"] = get(layer, "moving_variance")

    state["features.conv1.conv.weight"] = _conv(get("conv1", "kernel"))
    bn("conv1_bn", "features.conv1")
    for i in range(1, len(BLOCKS) + 1):
        dw, pw = f"conv_dw_{i}", f"conv_pw_{i}"
        state[f"features.{dw}.conv.weight"] = _depthwise(get(dw, "depthwise_kernel", "kernel"))
        bn(f"{dw}_bn", f"features.{dw}")
        state[f"features.{pw}.conv.weight"] = _conv(get(pw, "kernel"))
        bn(f"{pw}_bn", f"features.{pw}")
    state["feats.weight"] = get("feats", "kernel").T
    state["feats.bias"] = get("feats", "bias")
    state["classifier.weight"] = get("emotion_preds", "kernel").T
    state["classifier.bias"] = get("emotion_preds", "bias")
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
