"""Forward FLOPs of one training sample, counted by torch's FlopCounterMode.

FlopCounterMode counts 2 FLOPs per multiply-accumulate of convolutions and matrix
products (the cost that dominates); element-wise work (BN, ReLU, pooling) is not counted.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode


def training_forward_flops(method, dataset, device) -> int:
    """FLOPs of ``method``'s training forward for one sample (teacher, branches, side heads
    included: whatever its forward runs).  Counted in eval mode so that BatchNorm running
    statistics are left untouched, on a batch of two copies of the first training sample."""
    image, label, _index = dataset[0]
    images = image.unsqueeze(0).repeat(2, *([1] * image.dim())).to(device)
    labels = torch.tensor([int(label)] * 2, device=device)
    indices = torch.tensor([0, 0], device=device)
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            method(images, labels, indices)
    finally:
        method.train(was_training)
    return int(counter.get_total_flops()) // 2


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameters (trainable or not, e.g. BNNeck's frozen shift) of ``module``."""
    return sum(p.numel() for p in module.parameters())
