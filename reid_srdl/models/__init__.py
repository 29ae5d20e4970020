"""Networks: re-id backbones (ResNet-50, DenseNet-121, MobileNetV2, a small CPU net, torchreid's OSNets and
others, any timm model as ``timm/<name>``) and the CIFAR nets.

``build_model(name, num_classes, ...)`` returns a :class:`Net` whose forward gives
``(logits, features)``; ``list_models()`` names the registered architectures.
"""

# Importing the architecture modules registers their builders in MODELS (timm: a name family).
from reid_srdl.models import cifar, mobilenet, reid, timm_nets, torchreid_nets  # noqa: F401
from reid_srdl.models.base import MODELS, EmbeddingHead, Net, init_weights
from reid_srdl.models.build import build_model, list_models
from reid_srdl.models.model_file import load_model_file
from reid_srdl.models.weights import WeightsMismatchError, load_imagenet_weights

__all__ = [
    "MODELS",
    "EmbeddingHead",
    "Net",
    "WeightsMismatchError",
    "build_model",
    "init_weights",
    "list_models",
    "load_model_file",
    "load_imagenet_weights",
]
