"""signfer: facial-expression recognition in sign-language video.

FER-pretrained CNNs (MobileNet, EfficientNet), fine-tuned on small sign-language
face sets and judged by grouped K-fold cross-validation, then used to annotate
video per frame for ELAN.
"""

import os as _os

# OpenMP threads that spin between parallel regions starve each other on small
# CPUs: yuface's detector, which shares torch's OpenMP runtime, ran 35x slower
# (420 vs 12 ms a frame) with torch's default policy. The policy is read when
# torch loads, so it must be set before any submodule imports torch. A user
# who imports torch before signfer should export OMP_WAIT_POLICY=PASSIVE.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
