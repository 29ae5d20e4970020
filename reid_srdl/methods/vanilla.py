"""Plain cross-entropy training: the baseline every method is compared with."""
import torch.nn.functional as F

from reid_srdl.methods.base import METHODS, Method
from reid_srdl.methods.losses import accuracy


@METHODS.register("vanilla")
class Vanilla(Method):
    def forward(self, images, labels, indices):
        logits, _features = self.trainable(images)
        ce = F.cross_entropy(logits, labels)
        return {"loss": ce, "ce": ce, "logits": logits, "acc": accuracy(logits, labels)}
