"""The network contract shared by every architecture: a stem, stages and an embedding head.

Every model is a :class:`Net`: ``stem -> stages[0] -> ... -> stages[-1] -> head``, and that
chain is the whole forward pass.  The self-distillation methods rely on the split: BYOT and
FRSKD read the output of every stage (:meth:`Net.stage_maps`), ONE deep-copies the last stage
and the head to grow branches.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from reid_srdl.core.registry import MODELS  # noqa: F401  (the architectures register here)


class EmbeddingHead(nn.Module):
    """Global average pooling -> optional feature layer -> ID classifier.

    With ``feature_dim`` set, the feature layer is Linear(in_channels, feature_dim) followed by
    BatchNorm1d, and the BN output is the embedding used for retrieval (as in SRDL, where
    the feature layer of the ID classifier is the re-id representation).  With
    ``feature_dim=None`` there is no feature layer and the pooled vector is the embedding.
    """

    def __init__(self, in_channels: int, num_classes: int, feature_dim: Optional[int] = None):
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"EmbeddingHead needs in_channels >= 1 and num_classes >= 1, "
                f"got in_channels={in_channels}, num_classes={num_classes}"
            )
        if feature_dim is not None and feature_dim < 1:
            raise ValueError(f"EmbeddingHead feature_dim must be >= 1 or None, got {feature_dim}")
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self.pool = nn.AdaptiveAvgPool2d(1)
        if feature_dim is None:
            self.fc = None
            self.bn = None
            self.out_dim = in_channels
        else:
            # No bias: the BatchNorm right after it has its own shift, a bias would be dead weight.
            self.fc = nn.Linear(in_channels, feature_dim, bias=False)
            self.bn = nn.BatchNorm1d(feature_dim)
            self.out_dim = feature_dim
        self.classifier = nn.Linear(self.out_dim, num_classes)

    def forward(self, last_map: Tensor) -> Tuple[Tensor, Tensor]:
        features = torch.flatten(self.pool(last_map), 1)
        if self.fc is not None:
            features = self.bn(self.fc(features))
        return self.classifier(features), features


class Net(nn.Module):
    """A backbone split into a stem and stages, plus an :class:`EmbeddingHead`.

    ``forward`` returns ``(logits, features)`` in train and eval mode alike, so the trainer,
    the methods and the feature extractor never need to know which mode the net is in.
    ``spec`` holds the keyword arguments of :func:`build_model` that rebuild the same
    architecture (filled in by `build_model`).
    """

    def __init__(
        self,
        arch: str,
        stem: nn.Module,
        stages: Sequence[nn.Module],
        stage_channels: Sequence[int],
        head: EmbeddingHead,
        in_channels: Optional[int] = None,
    ):
        super().__init__()
        if len(stages) != len(stage_channels):
            raise ValueError(
                f"{arch}: {len(stages)} stages but {len(stage_channels)} stage_channels"
            )
        if head.in_channels != stage_channels[-1]:
            raise ValueError(
                f"{arch}: head expects {head.in_channels} channels, "
                f"last stage gives {stage_channels[-1]}"
            )
        self.arch = arch
        # Image channels the stem takes; checked on entry so that a grey batch fed to an RGB
        # net fails here, naming the model, not deep inside the first convolution.
        self.in_channels = in_channels
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.stage_channels: List[int] = [int(c) for c in stage_channels]
        self.head = head
        self.num_classes = head.classifier.out_features
        self.feature_dim = head.out_dim
        self.spec: Dict[str, object] = {}

    def stage_maps(self, x: Tensor) -> List[Tensor]:
        """The output feature map of every stage, in order."""
        if x.dim() != 4 or (self.in_channels is not None and x.shape[1] != self.in_channels):
            raise ValueError(
                f"{self.arch} expects images of shape (batch, {self.in_channels or 'C'}, height, "
                f"width), got {tuple(x.shape)}"
            )
        maps = []
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return self.head(self.stage_maps(x)[-1])


def init_weights(model: nn.Module) -> None:
    """Deterministic (under torch.manual_seed) initialisation used by every architecture.

    Kaiming-normal convolutions and feature layers (fan_out, as torchvision's ResNet), BN
    weight 1 / bias 0, and the ID classifier drawn from N(0, 0.001^2) with zero bias: the
    re-id convention, which starts every class logit near zero.
    """
    classifiers = {id(m.classifier) for m in model.modules() if isinstance(m, EmbeddingHead)}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            if id(m) in classifiers:
                nn.init.normal_(m.weight, std=0.001)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
