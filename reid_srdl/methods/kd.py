"""Hinton knowledge distillation from a frozen teacher checkpoint.

loss = ce_weight * CE(student) + kd_weight * T^2 * KL(softmax(t/T) || softmax(s/T))

The teacher is a submodule of the method (so ``.to()`` reaches it) but not of
``trainable``: it is neither optimised nor saved with the student.  Its parameters do not
require gradients, it runs under ``no_grad`` and it stays in eval mode whatever mode the
trainer sets, so its BatchNorm statistics never move.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn

from reid_srdl.config import check_range
from reid_srdl.core.checkpoint import CheckpointError
from reid_srdl.methods.base import METHODS, Method
from reid_srdl.methods.losses import accuracy, soft_kl
from reid_srdl.models.model_file import load_model_file


def load_teacher(path: str, num_classes: int, expected_arch: str = "") -> nn.Module:
    """Load a frozen teacher, refusing one of the wrong architecture or class count."""
    if not path:
        raise CheckpointError("method.kd.teacher is empty: give the teacher's run directory or final.pt")
    teacher, meta = load_model_file(path)
    arch = meta["spec"].get("name")
    if expected_arch and arch != expected_arch:
        raise CheckpointError(f"teacher {path} is a '{arch}' network but method.kd.teacher_model is '{expected_arch}'")
    teacher_classes = meta["spec"].get("num_classes")
    if teacher_classes != num_classes:
        raise CheckpointError(
            f"teacher {path} classifies {teacher_classes} classes (logits of shape [B, {teacher_classes}]) "
            f"but the student's data set has {num_classes} (logits [B, {num_classes}])"
        )
    teacher.requires_grad_(False)
    return teacher.eval()


@dataclass(frozen=True)
class KDOptions:
    # Run directory or checkpoint file of the frozen teacher.
    teacher: str = ""
    # Teacher architecture; "" = read it from the teacher run's config.
    teacher_model: str = ""
    temperature: float = 3.0
    ce_weight: float = 1.0
    kd_weight: float = 1.0

    def __post_init__(self):
        check_range("method.kd.temperature", self.temperature, above=0)
        check_range("method.kd.ce_weight", self.ce_weight, minimum=0)
        check_range("method.kd.kd_weight", self.kd_weight, minimum=0)


@METHODS.register("kd", options=KDOptions)
class KnowledgeDistillation(Method):
    @classmethod
    def from_config(cls, options, model_factory, run):
        """The student, and the teacher loaded from ``options.teacher`` (checked against the
        student's class count and ``teacher_model``)."""
        teacher = load_teacher(options.teacher, run.num_classes, options.teacher_model)
        return cls.with_teacher(teacher, options, model_factory, run)

    @classmethod
    def with_teacher(cls, teacher: nn.Module, options, model_factory, run) -> "KnowledgeDistillation":
        """A student distilled from ``teacher``, a network already in memory."""
        method = super().from_config(options, model_factory, run)
        method.teacher = teacher.requires_grad_(False).eval()
        return method

    def train(self, mode: bool = True):
        super().train(mode)
        if getattr(self, "teacher", None) is not None:
            self.teacher.eval()  # frozen: its BN statistics must not follow the student's batches
        return self

    def forward(self, images, labels, indices):
        options = self.options
        with torch.no_grad():
            teacher_logits, _ = self.teacher(images)
        logits, features = self.trainable(images)
        ce = self.recipe.id_loss(logits, labels)
        kd = soft_kl(logits, teacher_logits, options.temperature)
        loss = options.ce_weight * ce + options.kd_weight * kd
        out = {"loss": loss, "ce": ce, "kd": kd, "logits": logits, "acc": accuracy(logits, labels)}
        return self.recipe.add_metric_terms(out, features, labels)
