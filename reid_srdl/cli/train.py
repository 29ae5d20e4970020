"""Train (and evaluate) a re-id or classification network with one of the methods.

    python tools/train.py                                   # SRDL on the synthetic Market-1501 demo
    python tools/train.py method.name=vanilla train.epochs=4
    python tools/train.py --config configs/market1501/srdl_resnet50.yaml data.root=/data
    python tools/train.py --resume runs/market1501_small_reid_srdl_20261121-220000
    torchrun --nproc_per_node=2 tools/train.py data.batch_size=64   # DDP; batch_size is global

    reid-train ...                                          # the same, as an installed command

Overrides are ``section.key=value`` (see reid_srdl/config.py for every key).  Bad input: one
line on stderr and exit code 2 (reid_srdl/core/cli.py has the table of exit codes).
"""

import argparse
import os

# torch's C++ side logs every failed rendezvous attempt with a native stack trace; our
# DistributedSetupError already says what failed and where.  Export TORCH_CPP_LOG_LEVEL=INFO
# to see them again.  (Read when torch is imported, so it is set first.)
os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

from reid_srdl import load_config
from reid_srdl.config import ConfigError
from reid_srdl.core import cli
from reid_srdl.core.checkpoint import CONFIG_FILE, CheckpointError, claim_existing_run_dir, is_run_dir
from reid_srdl.core.errors import ReidSrdlError


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML config (default: the built-in CPU demo)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last complete epoch")
    p.add_argument("--list-models", action="store_true", help="print the model names and exit")
    p.add_argument("--list-methods", action="store_true", help="print the method names and exit")
    p.add_argument("overrides", nargs="*", help="section.key=value")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """``reid-train`` / ``python tools/train.py``: the exit code (reid_srdl/core/cli.py)."""
    return cli.run(_train, argv, interrupted="interrupted; continue with --resume")


def _train(argv) -> int:
    args = parse_args(argv)
    if args.list_models or args.list_methods:
        from reid_srdl.methods import METHODS
        from reid_srdl.models import list_models

        print("\n".join(list_models() if args.list_models else METHODS.list()))
        return 0
    from reid_srdl.core import distributed as ddp
    from reid_srdl.engine.trainer import Trainer, claim_run_dir, resolve_device

    env = ddp.SINGLE_PROCESS
    claim = None  # the run folder this process holds (locked), created or resumed
    finished = False
    try:
        if args.resume:
            if args.config or args.overrides:
                raise ConfigError("--resume takes the run's own config.yaml; give no --config or overrides with it")
            if not is_run_dir(args.resume):
                raise CheckpointError(
                    f"cannot resume: {args.resume} is not a run directory (no {CONFIG_FILE}; "
                    f"expected a folder written by tools/train.py)"
                )
            cfg = load_config(os.path.join(args.resume, CONFIG_FILE))
        else:
            cfg = load_config(args.config, args.overrides)
        # Under torchrun: join the process group (NCCL on GPUs, gloo on CPU) within
        # train.dist_timeout; a single plain process skips this.
        env = ddp.init_distributed(cfg.train.dist_timeout, resolve_device(cfg.train.device).type == "cuda")
        cli.name_process(_rank_tag(env))
        # Rank 0 claims the run folder -- a new one (os.mkdir: unique even for runs started in
        # the same second) or the resumed one -- and locks it for the whole run, so that no
        # other training shares it; every rank gets its name, or its error, before any work.
        outcome = None
        if env.is_main:
            try:
                claim = claim_existing_run_dir(args.resume) if args.resume else claim_run_dir(cfg)
                outcome = ("ok", claim.path)
            except ReidSrdlError as e:
                outcome = ("error", str(e))
        status, value = ddp.broadcast_from_main(outcome)
        if status == "error":
            raise CheckpointError(value)
        run_dir = value
        if env.is_main:
            print(
                f"run directory: {run_dir}" + (f" ({env.world_size} processes, {env.backend})" if env.enabled else "")
            )
        Trainer(cfg, run_dir, resume=bool(args.resume)).fit()
        finished = True
    finally:
        if claim is not None:
            # Unlocked either way; a folder this process created goes again if nothing was
            # written into it.
            if finished:
                claim.keep()
            else:
                claim.release()
        ddp.shutdown()
    return 0


def _rank_tag(env) -> str:
    return f" (rank {env.rank} of {env.world_size})" if env.enabled else ""
