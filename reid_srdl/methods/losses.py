"""Pure loss functions shared by the self-distillation methods."""
import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.

    The T^2 factor keeps the gradient magnitude of the soft term comparable to the hard
    cross-entropy when T changes (Hinton et al., 2015).  Teacher logits are used as given:
    detach them at the call site when no gradient must flow into the teacher.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (t * t)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of the batch whose arg-max is the label (a detached scalar)."""
    with torch.no_grad():
        return (logits.argmax(dim=1) == labels).float().mean()
