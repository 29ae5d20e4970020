"""Networks prepared for the fast-path tests (BN folding, oneDNN fusion)."""

import torch
from torch import nn


def with_random_bn_statistics(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN running statistics and affine terms, so folding has work to do."""
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return net.eval()
