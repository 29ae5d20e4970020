"""Hinton knowledge distillation from a frozen teacher checkpoint.

loss = ce_weight * CE(student) + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T))

The teacher is a submodule of the method (so ``.to()`` reaches it) but not of
``trainable``: it is neither optimised nor saved with the student.  Its parameters do not
require gradients, it runs under ``no_grad`` and it stays in eval mode whatever mode the
trainer sets, so its BatchNorm statistics never move.
"""
import torch
import torch.nn as nn

from reid_srdl.engine.checkpoint import CheckpointError, load_model_file
from reid_srdl.methods.base import METHODS, Method
from reid_srdl.methods.losses import accuracy, soft_kl


def load_teacher(path: str, num_classes: int, expected_arch: str = "") -> nn.Module:
    """Load a frozen teacher, refusing one of the wrong architecture or class count."""
    if not path:
        raise CheckpointError("method.kd.teacher is empty: give the teacher's run directory or final.pt")
    teacher, meta = load_model_file(path)
    arch = meta["spec"].get("name")
    if expected_arch and arch != expected_arch:
        raise CheckpointError(
            f"teacher {path} is a '{arch}' network but method.kd.teacher_model is '{expected_arch}'"
        )
    teacher_classes = meta["spec"].get("num_classes")
    if teacher_classes != num_classes:
        raise CheckpointError(
            f"teacher {path} classifies {teacher_classes} classes (logits of shape [B, {teacher_classes}]) "
            f"but the student's data set has {num_classes} (logits [B, {num_classes}])"
        )
    teacher.requires_grad_(False)
    return teacher.eval()


@METHODS.register("kd")
class KnowledgeDistillation(Method):
    def __init__(self, model_factory, total_epochs, teacher: nn.Module, temperature=3.0, ce_weight=1.0, kd_weight=1.0):
        super().__init__(model_factory, total_epochs)
        self.teacher = teacher.requires_grad_(False).eval()
        self.temperature = float(temperature)
        self.ce_weight = float(ce_weight)
        self.kd_weight = float(kd_weight)

    @classmethod
    def from_config(cls, section, model_factory, *, total_epochs, num_classes, **_run):
        teacher = load_teacher(section.teacher, num_classes, section.teacher_model)
        return cls(model_factory, total_epochs, teacher, section.temperature, section.ce_weight, section.kd_weight)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: its BN statistics must not follow the student's batches
        return self

    def forward(self, images, labels, indices):
        with torch.no_grad():
            teacher_logits, _ = self.teacher(images)
        logits, features = self.trainable(images)
        ce = self.recipe.id_loss(logits, labels)
        kd = soft_kl(logits, teacher_logits, self.temperature)
        loss = self.ce_weight * ce + self.kd_weight * kd
        out = {"loss": loss, "ce": ce, "kd": kd, "logits": logits, "acc": accuracy(logits, labels)}
        return self.recipe.add_metric_terms(out, features, labels)
