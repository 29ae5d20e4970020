"""Plain cross-entropy training: the baseline every method is compared with."""

from reid_srdl.methods.base import METHODS, Method
from reid_srdl.methods.losses import accuracy


@METHODS.register("vanilla")
class Vanilla(Method):
    def forward(self, images, labels, indices):
        logits, features = self.trainable(images)
        ce = self.recipe.id_loss(logits, labels)
        out = {"loss": ce, "ce": ce, "logits": logits, "acc": accuracy(logits, labels)}
        return self.recipe.add_metric_terms(out, features, labels)
