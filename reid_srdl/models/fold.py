"""Fold inference-mode BatchNorm into the convolution or linear layer that feeds it.

In eval mode a BatchNorm is a fixed per-channel affine map, so ``bn(conv(x))`` equals one
convolution with rescaled weights and a bias.  Folding removes a full pass over every
activation map (one read and one write per BN), which is pure memory traffic on a CPU.

The pattern matching is torch.fx's (``torch.fx.experimental.optimization.fuse``): it only
folds a BN whose input is a conv/linear output used nowhere else, so the result is exact up
to float rounding.  A module that fx cannot trace as a whole (e.g. :class:`Net`, whose
forward checks the input shape) is folded child by child.
"""

import copy

from torch import nn
from torch.fx.experimental.optimization import fuse

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BATCHNORMS) for m in module.modules())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every foldable BatchNorm folded in.

    The caller's model is never modified.  A model without BatchNorm is returned as it is
    (nothing to fold, no copy).  BNs that cannot be folded (one that normalises a pooled
    or concatenated map, as in DenseNet's pre-activation layers) stay, in eval mode.
    Only for inference: the folded copy has no running statistics to update.
    """
    if not has_batchnorm(model):
        return model
    folded = copy.deepcopy(model).eval()
    return _fold_in_place(folded)


def _fold_in_place(module: nn.Module) -> nn.Module:
    if not has_batchnorm(module):
        return module
    try:
        # inplace=True: the module is already our private copy; no second deep copy.
        return fuse(module, inplace=True)
    except Exception:  # fx raises several kinds on untraceable Python
        # Not traceable as a whole (data-dependent checks, ModuleList without forward...):
        # fold each child separately; the parent's own forward keeps calling them.
        for name, child in module.named_children():
            setattr(module, name, _fold_in_place(child))
        return module
