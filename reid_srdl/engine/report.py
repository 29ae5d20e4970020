"""The end of a training run: the deployed network saved, every network evaluated on every
target, ``metrics.json`` written, TensorBoard told, the result table logged."""

import dataclasses
import json
import logging
import os

from reid_srdl.core import checkpoint as ckpt
from reid_srdl.core import distributed as ddp
from reid_srdl.core.environment import run_environment
from reid_srdl.core.files import write_bytes_atomic
from reid_srdl.engine.assembly import Run
from reid_srdl.engine.evaluate import evaluate_targets, results_table
from reid_srdl.engine.flops import parameter_count
from reid_srdl.engine.logger import read_epoch_records
from reid_srdl.inference.features import sharded_feature_extractor

log = logging.getLogger(__name__)
METRICS_FILE = "metrics.json"


def training_flops(run: Run) -> int:
    """Forward FLOPs x epochs x training-set size, summed over stages (as in the paper)."""
    return int(sum(f * s.epochs * run.data.num_train for f, s in zip(run.state.stage_flops, run.stages)))


def finish_run(run: Run, logger) -> dict:
    """Save final.pt, evaluate, write metrics.json; the summary (rank 0) or the results
    (other ranks, which only take part in the sharded evaluation)."""
    cfg = run.cfg
    main = run.dist.is_main
    ddp.broadcast_module_state(run.method.trainable)  # every rank evaluates rank 0's network
    deployed = run.method.deploy()
    if main:
        ckpt.save_model_file(
            deployed,
            os.path.join(run.run_dir, ckpt.FINAL_FILE),
            task=run.data.task,
            data=cfg.data.label,
            method=cfg.method.name,
            height=cfg.data.height,
            width=cfg.data.width,
        )
    models = {"deployed": deployed}
    models.update(run.method.extra_eval_models(run.context))
    eval_cfg = cfg.eval if main else dataclasses.replace(cfg.eval, plot=False)
    extract = sharded_feature_extractor() if run.dist.enabled else None
    results = {
        name: evaluate_targets(
            model,
            run.data,
            run.device,
            eval_cfg,
            out_dir=run.run_dir,
            tag=name,
            progress=cfg.train.progress and main,
            extract=extract,
        )
        for name, model in models.items()
    }
    if not main:
        return {"results": results}
    summary = {
        "task": run.data.task,
        "data": cfg.data.label,
        "model": cfg.model.name,
        "method": cfg.method.name,
        "epochs": cfg.train.epochs,
        "precision": run.precision.mode,
        "channels_last": run.precision.channels_last,
        "num_train": run.data.num_train,
        "num_classes": run.data.num_classes,
        "forward_flops_per_sample": run.state.stage_flops,
        "deployed_parameters": parameter_count(deployed),
        "train_flops": training_flops(run),
        "train_seconds": run.state.history["train_seconds"],
        "environment": run_environment(),
        "results": results,
    }
    diagnostics = run.method.diagnostics(read_epoch_records(run.run_dir))
    if diagnostics:
        summary["diagnostics"] = diagnostics
    if run.data.targets:  # re-id: the evaluation data set(s), one per results prefix when several
        summary["targets"] = [t.name for t in run.data.targets]
    write_bytes_atomic(os.path.join(run.run_dir, METRICS_FILE), json.dumps(summary, indent=2).encode("utf-8"))
    logger.log_results(flat_results(results), cfg.train.epochs)
    log.info("%s", results_table(summary))
    return summary


def flat_results(results: dict) -> dict:
    """``{"deployed/single_query/mAP": 0.42, ...}``: every number, for TensorBoard."""
    flat = {}
    for name, res in results.items():
        for proto, vals in res.items():
            for k, v in vals.items():
                if isinstance(v, float):
                    flat[f"{name}/{proto}/{k}"] = v
    return flat
