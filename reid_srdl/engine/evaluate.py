"""End-of-run evaluation of a trained network on a DataBundle, and the result table.

Re-id: features of query, gallery and (multi-query) gt_bbox images -> CMC / mAP / mINP
under the single- and multi-query protocols, CMC curve PNG, and the open-set thresholds at
FAR 1/5/10% with TAR and DIR (``"open_set"``, from the single-query features; distribution
PNG); with several evaluation data sets (``data.targets``), each one apart and the mean over
them.  Classification: top-1/top-5.
"""

import dataclasses
import logging
import os
from typing import Dict, List

from reid_srdl.config import SOURCE_SEPARATOR
from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.evaluation.metrics import MultiQuery
from reid_srdl.evaluation.plots import plot_cmc
from reid_srdl.evaluation.ranking import Rerank, evaluate_ranking
from reid_srdl.inference.classification import evaluate_classifier
from reid_srdl.inference.features import extract_features
from reid_srdl.inference.options import ExtractionOptions

log = logging.getLogger(__name__)

_REID_COLUMNS = (("rank1", "Rank-1"), ("rank5", "Rank-5"), ("rank10", "Rank-10"), ("mAP", "mAP"), ("mINP", "mINP"))
_CLS_COLUMNS = (("top1", "Top-1"), ("top5", "Top-5"))


def evaluate_model(
    model, data, device, eval_cfg, out_dir: str, tag: str, progress: bool = True, extract=None
) -> Dict[str, dict]:
    """{"single_query": {...}, "multi_query": {...}} for re-id, {"test": {...}} for classification.

    ``extract``: replaces ``extract_features`` (same signature), e.g. the sharded extractor of
    reid_srdl.core.distributed under torchrun.
    """
    if data.task == "classification":
        return {"test": evaluate_classifier(model, data.test_loader, device, progress=progress)}
    extract = extract or extract_features

    options = ExtractionOptions(
        device=device,
        flip=eval_cfg.flip,
        normalize=eval_cfg.normalize,
        progress=progress,
        precision=eval_cfg.precision,
        channels_last=eval_cfg.channels_last,
        fold_bn=eval_cfg.fold_bn,
    )

    def features(split):
        return extract(model, split.loader, options)

    q, g = features(data.query), features(data.gallery)
    ids = (data.query.pids, data.gallery.pids, data.query.camids, data.gallery.camids)
    rerank = Rerank(eval_cfg.rerank_k1, eval_cfg.rerank_k2, eval_cfg.rerank_lambda) if eval_cfg.rerank else None
    protocols = [("single_query", "single query", None)]
    if eval_cfg.multi_query and data.multi_query is not None:
        mq = MultiQuery(features(data.multi_query), data.multi_query.pids, data.multi_query.camids)
        protocols.append(("multi_query", f"multi query ({eval_cfg.pool})", mq))
    results, curves = {}, {}
    for key, label, multi_query in protocols:
        for reranking in (None, rerank) if rerank else (None,):
            result = evaluate_ranking(
                q,
                g,
                *ids,
                max_rank=eval_cfg.max_rank,
                ap=eval_cfg.ap,
                multi_query=multi_query,
                pool=eval_cfg.pool,
                normalize=eval_cfg.normalize,
                rerank=reranking,
            )
            suffix = ("_rerank", ", re-ranked") if reranking else ("", "")
            results[key + suffix[0]], curves[label + suffix[1]] = result.to_dict(), result.cmc
    open_set = _open_set(q, g, ids, os.path.join(out_dir, f"open_set_{tag}.png") if eval_cfg.plot else None, tag)
    if open_set is not None:
        results["open_set"] = open_set
    if eval_cfg.plot:
        plot_cmc(curves, os.path.join(out_dir, f"cmc_{tag}.png"), title=f"CMC: {tag} model")
    return results


def _open_set(q, g, ids, plot_path, tag):
    """Calibrated open-set thresholds (FAR 1/5/10%) with TAR and DIR, or None (logged) when the
    split cannot calibrate them -- a finished training run is never lost over it."""
    from reid_srdl.evaluation.open_set import REPORTED_FARS, evaluate_open_set, open_set_scores

    try:
        scores = open_set_scores(q, g, *ids)
        result = evaluate_open_set(None, None, None, None, None, None, scores=scores)
    except EvaluationInputError as e:
        log.warning("open-set thresholds not computed for the %s model: %s", tag, e)
        return None
    if plot_path:
        from reid_srdl.evaluation.plots import plot_open_set

        taus = {f"FAR {100 * far:g}%": result.point(far).threshold for far in REPORTED_FARS}
        plot_open_set(scores.genuine, scores.impostor, taus, plot_path, title=f"Open-set distances: {tag} model")
    return result.to_dict()


# --------------------------------------------------------------------------- per target
MEAN_TARGET = "mean"  # the protocol prefix of the mean over several evaluation targets
_MEAN_KEYS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")


def evaluate_targets(
    model, data, device, eval_cfg, out_dir: str, tag: str, progress: bool = True, extract=None
) -> Dict[str, dict]:
    """:func:`evaluate_model` on each of ``data.targets`` (cross-domain evaluation).

    One target (or a bundle without targets): exactly :func:`evaluate_model`'s results.
    Several: the protocols of target T are reported as ``"T/single_query"``, ... (CMC plot
    ``cmc_<tag>_<T>.png``), followed by ``"mean/<protocol>"``, the unweighted mean over the
    targets of each metric, for every protocol all targets have.
    """
    targets = data.targets or []
    if data.task != "reid" or len(targets) <= 1:
        return evaluate_model(model, data, device, eval_cfg, out_dir, tag, progress=progress, extract=extract)
    per_target: Dict[str, Dict[str, dict]] = {}
    for target in targets:
        view = dataclasses.replace(data, query=target.query, gallery=target.gallery, multi_query=target.multi_query)
        per_target[target.name] = evaluate_model(
            model, view, device, eval_cfg, out_dir, f"{tag}_{target.name}", progress=progress, extract=extract
        )
    results = {f"{name}/{protocol}": values for name, res in per_target.items() for protocol, values in res.items()}
    results.update({f"{MEAN_TARGET}/{protocol}": values for protocol, values in mean_over_targets(per_target).items()})
    return results


def mean_over_targets(per_target: Dict[str, Dict[str, dict]]) -> Dict[str, dict]:
    """{protocol: {metric: mean over targets}} for the protocols every target has."""
    results = list(per_target.values())
    shared: List[str] = [p for p in results[0] if all(p in r for r in results[1:])]
    out = {}
    for protocol in shared:
        keys = [k for k in _MEAN_KEYS if all(k in r[protocol] for r in results)]
        if not keys:  # not a ranking protocol (e.g. the open-set thresholds): no mean
            continue
        out[protocol] = {k: float(sum(r[protocol][k] for r in results) / len(results)) for k in keys}
        out[protocol]["num_targets"] = len(results)
    return out


def results_table(summary: dict) -> str:
    """A fixed-width table: one row per (network, protocol), metrics in percent."""
    columns = _CLS_COLUMNS if summary["task"] == "classification" else _REID_COLUMNS
    rows = []
    for model_name, protocols in summary["results"].items():
        for protocol, values in protocols.items():
            if not any(k in values for k, _ in columns):
                continue  # e.g. the open-set thresholds: not a ranking protocol
            rows.append(
                [model_name, protocol.replace("_", " ")] + [f"{100 * values[k]:.2f}" for k, _ in columns if k in values]
            )
    header = ["network", "protocol"] + [name for _, name in columns]
    widths = [max(len(str(r[i])) for r in rows + [header]) + 2 for i in range(len(header))]
    line = lambda cells: "".join(
        str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    targets = summary.get("targets") or []
    tested = f" -> {', '.join(targets)}" if targets and list(targets) != summary["data"].split(SOURCE_SEPARATOR) else ""
    title = (
        f"{summary['method']} | {summary['model']} on {summary['data']}{tested} | {summary['epochs']} epochs | "
        f"{summary.get('precision', 'fp32')}{' channels-last' if summary.get('channels_last') else ''} | "
        f"train {summary['train_seconds']:.0f}s, "
        f"{summary['train_flops'] / 1e12:.3f} TFLOPs"
    )
    notes = diagnostics_lines(summary.get("diagnostics", {}))
    rule = "-" * max([len(title), sum(widths)] + [len(n) for n in notes])
    return "\n".join(
        [rule, title, rule, line(header)] + [line(r) for r in rows] + [rule] + notes + ([rule] if notes else [])
    )


def diagnostics_lines(diagnostics: dict) -> list:
    """The method's own figures under the table (SRDL: how good and how soft its targets are)."""
    lines = []
    if "bank_train_acc" in diagnostics:
        lines.append(
            f"stage-1 targets: train accuracy {100 * diagnostics['bank_train_acc']:.2f}%, mean entropy at T "
            f"{diagnostics['bank_entropy']:.3f} nats (max {diagnostics['bank_entropy_max']:.3f})"
        )
    kl = diagnostics.get("stage2_kl") or []
    if kl:
        lines.append(
            f"stage-2 KL per epoch: first {kl[0]:.4f}, last {kl[-1]:.4f}, min {min(kl):.4f} ({len(kl)} epochs)"
        )
    return lines
