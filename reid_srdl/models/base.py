"""The network contract shared by every architecture: a stem, stages and an embedding head.

Every model is a :class:`Net`: ``stem -> stages[0] -> ... -> stages[-1] -> head``, and that
chain is the whole forward pass.  The self-distillation methods rely on the split: BYOT and
FRSKD read the output of every stage (:meth:`Net.stage_maps`), ONE deep-copies the last stage
and the head to grow branches.  A backbone whose stages are not well defined (some torchreid
and timm models) is one single stage: those methods then stop with an error naming it.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from reid_srdl.core.download import RemoteFile
from reid_srdl.core.registry import Registry
from reid_srdl.models.errors import ModelConfigError

#: Network architectures: ``@MODELS.register("name", imagenet=ImageNetLayout(...))`` in their own
#: file (full once ``reid_srdl.models`` is imported: its ``__init__`` imports every one).
MODELS = Registry("model")

NECKS = ("plain", "bnneck")

#: name prefix -> function(rest of the name) returning a builder, for model families too
#: large to register name by name (``timm/<any timm model>``).
MODEL_FAMILIES: Dict[str, Callable[[str], Callable[..., "Net"]]] = {}
#: name prefix -> function(rest of the name) returning the ImageNet weights the family's
#: library publishes for that model (``model.pretrained=imagenet``).
FAMILY_WEIGHTS: Dict[str, Callable[[str], RemoteFile]] = {}


class EmbeddingHead(nn.Module):
    """Global average pooling -> optional feature layer -> (BNNeck) -> ID classifier.

    ``neck="plain"``: with ``feature_dim`` set, the feature layer is Linear(in_channels,
    feature_dim) followed by BatchNorm1d, and the BN output is the embedding used for
    retrieval and by every loss (as in SRDL, where the feature layer of the ID classifier is
    the re-id representation).  With ``feature_dim=None`` there is no feature layer and the
    pooled vector is the embedding.

    ``neck="bnneck"`` (BoT, Luo et al. 2019): the pooled vector (or its Linear projection
    when ``feature_dim`` is set) is the metric feature that the triplet loss sees; a
    BatchNorm1d without a learned shift follows, then a bias-free classifier, so the ID loss
    sees the normalised feature, which is also the retrieval feature.  The head returns
    ``(logits, metric feature)`` in training mode and ``(logits, normalised feature)`` in
    eval mode (the one place where the mode changes what a net returns).
    """

    def __init__(self, in_channels: int, num_classes: int, feature_dim: Optional[int] = None, neck: str = "plain"):
        super().__init__()
        if neck not in NECKS:
            raise ModelConfigError(f"EmbeddingHead neck must be one of {', '.join(NECKS)}, got {neck!r}")
        if in_channels < 1 or num_classes < 1:
            raise ModelConfigError(
                f"EmbeddingHead needs in_channels >= 1 and num_classes >= 1, "
                f"got in_channels={in_channels}, num_classes={num_classes}"
            )
        if feature_dim is not None and feature_dim < 1:
            raise ModelConfigError(f"EmbeddingHead feature_dim must be >= 1 or None, got {feature_dim}")
        self.in_channels = in_channels
        self.feature_dim = feature_dim
        self.neck = neck
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = in_channels if feature_dim is None else feature_dim
        # No bias on the feature layer: a BatchNorm follows it (plain: its own shift makes a
        # bias dead weight; bnneck: the triplet's distances do not see a common shift either).
        self.fc = None if feature_dim is None else nn.Linear(in_channels, feature_dim, bias=False)
        if neck == "plain":
            self.bn = None if feature_dim is None else nn.BatchNorm1d(feature_dim)
            self.classifier = nn.Linear(self.out_dim, num_classes)
        else:
            # BoT: the BNNeck's shift is frozen at 0 and the classifier has no bias.
            self.bn = nn.BatchNorm1d(self.out_dim)
            self.bn.bias.requires_grad_(False)
            self.classifier = nn.Linear(self.out_dim, num_classes, bias=False)

    def forward(self, last_map: Tensor) -> Tuple[Tensor, Tensor]:
        features = torch.flatten(self.pool(last_map), 1)
        if self.fc is not None:
            features = self.fc(features)
        if self.neck == "plain":
            if self.bn is not None:
                features = self.bn(features)
            return self.classifier(features), features
        normalised = self.bn(features)
        return self.classifier(normalised), features if self.training else normalised


class Net(nn.Module):
    """A backbone split into a stem and stages, plus an :class:`EmbeddingHead`.

    ``forward`` returns ``(logits, features)``.  In eval mode ``features`` is the retrieval
    embedding; in training mode it is the feature the metric loss sees, which is the same
    tensor except with a BNNeck head (there: before the BN).  ``spec`` holds the keyword
    arguments of :func:`build_model` that rebuild the same architecture (filled in by
    `build_model`).  ``foreign_backbone``: the stem and stages come initialised (and possibly
    loaded with weights) from another library (torchreid, timm); `build_model` then
    initialises the head only.
    """

    foreign_backbone: bool = False

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
            raise ModelConfigError(f"{arch}: {len(stages)} stages but {len(stage_channels)} stage_channels")
        if head.in_channels != stage_channels[-1]:
            raise ModelConfigError(
                f"{arch}: head expects {head.in_channels} channels, last stage gives {stage_channels[-1]}"
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

    def set_head(self, head: EmbeddingHead) -> None:
        """Replace the head (same input width), e.g. by a BNNeck head."""
        if head.in_channels != self.stage_channels[-1]:
            raise ModelConfigError(
                f"{self.arch}: head expects {head.in_channels} channels, last stage gives {self.stage_channels[-1]}"
            )
        self.head = head
        self.num_classes = head.classifier.out_features
        self.feature_dim = head.out_dim

    def stage_maps(self, x: Tensor) -> List[Tensor]:
        """The output feature map of every stage, in order."""
        if x.dim() != 4 or (self.in_channels is not None and x.shape[1] != self.in_channels):
            raise ModelConfigError(
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
