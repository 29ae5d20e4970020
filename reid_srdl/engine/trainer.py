"""``Trainer``: a run assembled (engine.assembly), trained (engine.loop) and reported
(engine.report) -- what tools/train.py runs.

Under torchrun (a process group initialised by ``core.distributed.init_distributed``) every
rank builds the same Trainer: the training step runs in DistributedDataParallel on its share
of each global batch, rank 0 alone writes checkpoints, logs and results, and per-sample
inference (SRDL's logit bank, evaluation features) is sharded across ranks and gathered.
"""

from typing import Dict

from reid_srdl.config import Config
from reid_srdl.engine.assembly import (  # noqa: F401  (the names tools and tests use)
    assemble_run,
    build_optimizer,
    claim_run_dir,
    resolve_device,
    run_dir_for,
)
from reid_srdl.engine.logger import RunLogger
from reid_srdl.engine.loop import TrainingDivergedError, TrainingLoop, epoch_seed  # noqa: F401
from reid_srdl.engine.report import finish_run


class _NoLogger:
    """What ranks other than 0 log to: nothing (rank 0 writes the run directory)."""

    def log_epoch(self, record):
        pass

    def log_results(self, flat, step):
        pass

    def close(self):
        pass


class Trainer:
    """Build everything from a Config, train all stages, evaluate, write the run directory."""

    def __init__(self, cfg: Config, run_dir: str, resume: bool = False):
        self.run = assemble_run(cfg, run_dir, resume)
        self.loop = TrainingLoop(self.run)

    # The parts a caller (or a test) looks at.
    cfg = property(lambda self: self.run.cfg)
    run_dir = property(lambda self: self.run.run_dir)
    data = property(lambda self: self.run.data)
    method = property(lambda self: self.run.method)
    device = property(lambda self: self.run.device)
    precision = property(lambda self: self.run.precision)

    @property
    def optimizer(self):
        return self.loop.optimizer

    @optimizer.setter
    def optimizer(self, value):
        self.loop.optimizer = value

    def stage_of(self, epoch: int) -> int:
        return self.run.stage_of(epoch)

    def train_epoch(self, epoch: int) -> Dict[str, float]:
        return self.loop.train_epoch(epoch)

    def fit(self) -> dict:
        run = self.run
        logger = (
            RunLogger(run.run_dir, run.cfg.train.tensorboard, start_epoch=run.state.start_epoch)
            if run.dist.is_main
            else _NoLogger()
        )
        try:
            self.loop.run_epochs(logger)
            return finish_run(run, logger)
        finally:
            logger.close()
