"""Per-epoch metrics: one JSON line each in metrics.jsonl, TensorBoard scalars, a console line."""

import json
import os
from typing import Dict, List, Optional

from reid_srdl.core.files import OutputPathError, atomic_path, describe_os_error

METRICS_LINES = "metrics.jsonl"


class RunLogger:
    def __init__(self, run_dir: str, tensorboard: bool = True, start_epoch: int = 0):
        self.path = os.path.join(run_dir, METRICS_LINES)
        # A run killed after logging an epoch but before its checkpoint landed re-runs that
        # epoch on resume: drop the lines of epochs that will be trained again.
        self._truncate_from(start_epoch)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"), purge_step=start_epoch + 1)

    def _truncate_from(self, start_epoch: int) -> None:
        if not os.path.isfile(self.path):
            return
        keep: List[str] = []
        # Bytes that are not UTF-8 (a line cut mid-character) are read as U+FFFD: that line
        # then fails to parse and is dropped like any other cut line.
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill mid-write
                epoch = record.get("epoch") if isinstance(record, dict) else None
                if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch <= start_epoch:
                    keep.append(line if line.endswith("\n") else line + "\n")
        with atomic_path(self.path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(keep)

    def log_epoch(self, record: Dict[str, float]) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            # The epoch's checkpoint is already saved; a line cut here is dropped on resume.
            raise OutputPathError(
                f"cannot write {self.path}: {describe_os_error(e)}; the checkpoint of epoch {record['epoch']} is "
                f"saved: free some space and continue with --resume"
            ) from None
        if self.writer is not None:
            step = int(record["epoch"])
            for k, v in record.items():
                if k not in ("epoch", "stage") and isinstance(v, (int, float)):
                    self.writer.add_scalar(f"train/{k}", v, step)
            self.writer.flush()

    def log_results(self, flat: Dict[str, float], step: int) -> None:
        if self.writer is not None:
            for k, v in flat.items():
                self.writer.add_scalar(f"eval/{k}", v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_epoch_records(run_dir: str) -> List[Dict[str, float]]:
    """The run's metrics.jsonl lines, in order (none when it does not exist yet)."""
    path = os.path.join(run_dir, METRICS_LINES)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def format_epoch(record: Dict[str, float], terms: Optional[List[str]] = None) -> str:
    parts = [f"stage {record['stage']} epoch {record['epoch']}", f"lr {record['lr']:.4g}", f"loss {record['loss']:.4f}"]
    for t in terms or []:
        parts.append(f"{t} {record[t]:.4f}")
    if "train_acc" in record:  # a method need not report an accuracy
        parts.append(f"train acc {100 * record['train_acc']:.2f}%")
    parts.append(f"{record['seconds']:.1f}s")
    return " | ".join(parts)
