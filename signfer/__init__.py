"""signfer: facial-expression recognition in sign-language video.

FER-pretrained CNNs (MobileNet, EfficientNet), fine-tuned on small sign-language
face sets and judged by grouped K-fold cross-validation, then used to annotate
video per frame for ELAN.
"""

__version__ = "0.1.0"
