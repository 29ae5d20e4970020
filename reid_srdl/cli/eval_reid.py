"""Evaluate re-id features (Market-1501 protocol): CMC Rank-1/5/10/20, mAP, mINP.

    python tools/eval_reid.py --query q.npz --gallery g.npz
    python tools/eval_reid.py --query q.npz --gallery g.npz --multi-query gt_bbox.npz --pool max
    python tools/eval_reid.py --query q.npz --gallery g.npz --json out/metrics.json \\
        --plot out/cmc.png --visualize 8 --out out/ranked
    python tools/eval_reid.py --checkpoint runs/RUN --data-root datasets/synthetic --multi-query \\
        --save-features out/features
    python tools/eval_reid.py --query q.npz --gallery g.npz --rerank     # k-reciprocal re-ranking
    python tools/eval_reid.py --query q.npz --gallery g.npz --open-set --open-set-plot dist.png
    python tools/eval_reid.py --checkpoint runs/RUN --dataset dukemtmcreid --data-root datasets   # cross-domain
    python tools/eval_reid.py --checkpoint runs/RUN --dataset viper --data-root datasets --all-splits
    reid-eval --query q.npz --gallery g.npz                 # the same, as an installed command

Checkpoint mode (--checkpoint RUN_DIR or a model file such as final.pt, with --data-root, the
folder holding the data sets) extracts the features itself: query, gallery and, with
--multi-query and no file, the gt_bbox images (Market-1501); --save-features DIR also writes
them as query.npz, gallery.npz (and gt_bbox.npz) for later runs of the feature-file mode.
--dataset names any re-id set torchreid reads (default: the one the run was trained on);
--split-id picks a split of the random-split sets, --all-splits reports the mean over all of
them (the customary protocol for VIPeR, GRID, CUHK01, iLIDS, PRID when the network was
trained elsewhere).

A feature file (.npz) holds ``features`` (N x D float32), ``pids`` (N ints), ``camids``
(N ints) and optionally ``paths`` (N strings; needed by --visualize).  Write them with
``reid_srdl.evaluation.io.save_features``.  JSON values are fractions in [0, 1]; the printed
table is in percent.  Output files appear only when everything succeeded.  Bad input: a
one-line message on stderr and exit code 2.
"""

import argparse
import os
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from reid_srdl.cli.extraction import extraction_options
from reid_srdl.config import int_arg
from reid_srdl.core import cli
from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.core.files import OutputBatch, OutputPathError, check_output_dir, check_output_file, write_json_atomic
from reid_srdl.evaluation.io import FeatureSet, load_features
from reid_srdl.evaluation.metrics import (
    AP_METHODS,
    POOLS,
    REPORTED_RANKS,
    MultiQuery,
    ReIDResult,
    format_results_table,
    pool_multi_query,
    ranked_gallery,
)
from reid_srdl.evaluation.ranking import Rerank, evaluate_ranking

RANKED_LIST_LENGTH = 10
GT_BBOX = "<gt_bbox>"  # --multi-query given without a file (checkpoint mode)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--query", metavar="Q.npz", help="query feature file")
    p.add_argument("--gallery", metavar="G.npz", help="gallery feature file")
    p.add_argument(
        "--multi-query",
        metavar="M.npz",
        nargs="?",
        const=GT_BBOX,
        help="gt_bbox feature file: multi-query protocol (checkpoint mode: no file, the data root's gt_bbox)",
    )
    ck = p.add_argument_group("checkpoint mode")
    ck.add_argument(
        "--checkpoint", metavar="RUN_DIR|MODEL.pt", help="trained re-id model (a run directory or final.pt)"
    )
    ck.add_argument(
        "--data-root",
        metavar="ROOT",
        help="folder holding the data sets' folders (market1501/, dukemtmc-reid/, ...; see datasets/README.md)",
    )
    ck.add_argument(
        "--dataset", metavar="NAME", help="re-id data set to evaluate on (default: the one the run was trained on)"
    )
    ck.add_argument("--split-id", type=int_arg(0), default=0, help="split of a random-split set (default: 0)")
    ck.add_argument("--cuhk03-labeled", action="store_true", help="CUHK03: hand-drawn instead of detected boxes")
    ck.add_argument("--cuhk03-classic-split", action="store_true", help="CUHK03: the 20 classic splits")
    ck.add_argument(
        "--all-splits", action="store_true", help="evaluate on every split of a random-split set and report the mean"
    )
    ck.add_argument("--height", type=int_arg(1), help="input height (default: the one the model was trained with)")
    ck.add_argument("--width", type=int_arg(1), help="input width (default: the one the model was trained with)")
    ck.add_argument("--batch-size", type=int_arg(1), default=128)
    ck.add_argument("--workers", type=int_arg(0), default=2)
    ck.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ck.add_argument("--flip", action="store_true", help="average with horizontally flipped images' features")
    ck.add_argument("--normalize", action="store_true", help="L2-normalise the features")
    ck.add_argument(
        "--fast",
        action="store_true",
        help="fast extraction: BN folded (on a copy), channels-last, bf16 where native (see docs/deployment.md)",
    )
    ck.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16", "auto"),
        help="extraction precision (default: fp32, or auto with --fast)",
    )
    ck.add_argument("--save-features", metavar="DIR", help="also write the extracted features as .npz files")
    p.add_argument("--pool", choices=POOLS, default="mean", help="multi-query pooling (default: mean)")
    p.add_argument("--renormalize", action="store_true", help="L2-normalise the pooled multi-query features")
    p.add_argument("--max-rank", type=int, default=50, help="length of the CMC curve (>= 20; default: 50)")
    p.add_argument(
        "--ap",
        choices=AP_METHODS,
        default="torchreid",
        help="AP: torchreid (mean precision at hits, default) or official (Market-1501 trapezoid)",
    )
    p.add_argument(
        "--rerank",
        action="store_true",
        help="k-reciprocal re-ranking (Zhong et al. 2017) of the (pooled) queries against the gallery",
    )
    paper = Rerank()
    p.add_argument("--rerank-k1", type=int_arg(1), default=paper.k1, help=f"re-ranking k1 (default: {paper.k1})")
    p.add_argument("--rerank-k2", type=int_arg(1), default=paper.k2, help=f"re-ranking k2 (default: {paper.k2})")
    p.add_argument(
        "--rerank-lambda",
        type=float,
        default=paper.lambda_value,
        help=f"re-ranking lambda (default: {paper.lambda_value:g})",
    )
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON (fractions in [0, 1])")
    p.add_argument("--plot", metavar="CMC.png", help="write the CMC curve as a PNG")
    p.add_argument(
        "--visualize",
        type=int,
        default=0,
        metavar="N",
        help="write ranked lists (query + top-10) of N queries; needs paths and --out",
    )
    p.add_argument("--out", metavar="DIR", help="folder for the --visualize pictures")
    p.add_argument(
        "--open-set",
        action="store_true",
        help="open-set thresholds at FAR 1%%, 5%%, 10%% with TAR and DIR (Liao et al. 2014); "
        "also written under 'open_set' in --json",
    )
    p.add_argument("--open-set-plot", metavar="DIST.png", help="PNG of the genuine/impostor distances and thresholds")
    args = p.parse_args(argv)
    if args.open_set_plot and not args.open_set:
        p.error("--open-set-plot needs --open-set")
    if args.open_set and args.rerank:
        p.error("--open-set thresholds feature distances; run it without --rerank")
    if args.checkpoint:
        if args.query or args.gallery:
            p.error("give either --checkpoint (with --data-root) or --query/--gallery feature files, not both")
        if not args.data_root:
            p.error("--checkpoint needs --data-root, the folder holding the data sets (e.g. market1501/)")
        if args.multi_query not in (None, GT_BBOX):
            p.error("in checkpoint mode --multi-query takes no file: the gt_bbox images of --data-root are used")
        if args.split_id < 0:
            p.error(f"--split-id must be >= 0; got {args.split_id}")
        if args.all_splits and (args.split_id or args.multi_query or args.save_features or args.visualize):
            p.error(
                "--all-splits evaluates every split itself: give no --split-id, --multi-query, "
                "--save-features or --visualize with it"
            )
    else:
        if args.dataset or args.split_id or args.cuhk03_labeled or args.cuhk03_classic_split or args.all_splits:
            p.error("--dataset, --split-id, --cuhk03-* and --all-splits apply to --checkpoint mode")
        if not (args.query and args.gallery):
            p.error("give --query and --gallery feature files, or --checkpoint with --data-root")
        if args.multi_query == GT_BBOX:
            p.error("--multi-query needs a feature file (M.npz) unless --checkpoint is given")
        if args.save_features or args.fast or args.precision:
            p.error("--save-features, --fast and --precision apply to --checkpoint mode")
    if args.max_rank < max(REPORTED_RANKS):
        p.error(f"--max-rank must be at least {max(REPORTED_RANKS)} (Rank-20 is reported); got {args.max_rank}")
    if args.visualize < 0:
        p.error(f"--visualize takes a number of queries >= 0; got {args.visualize}")
    if args.visualize and not args.out:
        p.error("--visualize needs --out DIR for the pictures")
    if args.visualize and args.rerank:
        p.error("--visualize draws feature-distance rankings; run it without --rerank")
    if not args.rerank and rerank_of(args, always=True) != Rerank():
        p.error("--rerank-k1/--rerank-k2/--rerank-lambda apply to --rerank only")
    if args.multi_query is None and (args.pool != "mean" or args.renormalize):
        p.error("--pool and --renormalize apply to --multi-query only")
    return args


@dataclass(frozen=True)
class EvalInputs:
    """Everything the evaluation reads, with the names used in messages."""

    query: FeatureSet
    gallery: FeatureSet
    multi_query: Optional[FeatureSet] = None
    query_name: str = "query"
    gallery_name: str = "gallery"
    multi_query_name: str = "multi-query"


def load_inputs(args: argparse.Namespace) -> EvalInputs:
    """Read and cross-check the feature files named on the command line."""
    query, gallery = load_features(args.query), load_features(args.gallery)
    multi = load_features(args.multi_query) if args.multi_query else None
    inputs = EvalInputs(query, gallery, multi, args.query, args.gallery, args.multi_query or "multi-query")
    check_inputs(inputs, needs_paths=args.visualize > 0)
    return inputs


def feature_file_names(args: argparse.Namespace) -> List[str]:
    """The files --save-features writes (checkpoint mode)."""
    names = ["query", "gallery"] + (["gt_bbox"] if args.multi_query else [])
    return [os.path.join(args.save_features, f"{name}.npz") for name in names]


def check_outputs(args: argparse.Namespace) -> None:
    """Every output path can be written, checked before anything is read or computed."""
    files = []
    if args.json:
        files.append(check_output_file(args.json, "--json file"))
    if args.plot:
        files.append(check_output_file(args.plot, "--plot file"))
    if args.open_set_plot:
        files.append(check_output_file(args.open_set_plot, "--open-set-plot file"))
    if args.visualize:
        check_output_dir(args.out, "--out folder")
    if args.save_features:
        check_output_dir(args.save_features, "--save-features folder")
        files += [check_output_file(f, "--save-features file") for f in feature_file_names(args)]
    repeated = sorted({f for f in files if files.count(f) > 1})
    if repeated:
        raise OutputPathError(f"two outputs would be written to the same file {repeated[0]}")


def load_checkpoint(args: argparse.Namespace):
    """(deployed network on its device, device, data sets it was trained on, data set to
    evaluate on, height, width)."""
    from reid_srdl.config import SOURCE_SEPARATOR
    from reid_srdl.engine.trainer import resolve_device
    from reid_srdl.models.model_file import load_model_file

    model, meta = load_model_file(args.checkpoint)
    if meta.get("task", "reid") != "reid":
        raise EvaluationInputError(f"{args.checkpoint} is a {meta['task']} model; re-id evaluation needs a re-id model")
    trained_on = str(meta.get("data") or "market1501").split(SOURCE_SEPARATOR)
    if args.dataset is None and len(trained_on) > 1:
        raise EvaluationInputError(
            f"{args.checkpoint} was trained on {' + '.join(trained_on)}; name the data set to "
            "evaluate on with --dataset"
        )
    dataset = args.dataset or trained_on[0]
    if args.all_splits:
        from reid_srdl.data.reid_sets import accepted_options

        if "split_id" not in accepted_options(dataset):
            raise EvaluationInputError(f"--all-splits: {dataset} has one fixed split; evaluate it without --all-splits")
    if args.all_splits and dataset in trained_on:
        raise EvaluationInputError(
            f"--all-splits: {args.checkpoint} was trained on {dataset}, so the other splits' test identities are "
            f"its training identities; train one run per split (data.split_id) and evaluate each with --split-id"
        )
    device = resolve_device(args.device)
    model.to(device)
    height = args.height or meta.get("height") or 256
    width = args.width or meta.get("width") or 128
    return model, device, trained_on, dataset, height, width


def _features(model, loader, device, args) -> np.ndarray:
    from reid_srdl.inference.features import extract_features

    return extract_features(model, loader, extraction_options(args, device=device, progress=True))


def extract_inputs(args: argparse.Namespace, batch: OutputBatch) -> EvalInputs:
    """Checkpoint mode: load the deployed network, embed the query, gallery and (with
    --multi-query) gt_bbox images of --dataset; optionally save them as feature files (staged
    in ``batch``, renamed into place with the other outputs)."""
    from reid_srdl.data import build_reid_target
    from reid_srdl.engine.preflight import preflight_splits
    from reid_srdl.evaluation.io import save_features

    model, device, _trained_on, dataset, height, width = load_checkpoint(args)
    target = build_reid_target(
        dataset,
        args.data_root,
        height,
        width,
        args.batch_size,
        args.workers,
        split_id=args.split_id,
        cuhk03_labeled=args.cuhk03_labeled,
        cuhk03_classic_split=args.cuhk03_classic_split,
    )
    splits = {"query": target.query, "gallery": target.gallery}
    if args.multi_query:
        if target.multi_query is None:
            raise EvaluationInputError(
                f"--multi-query: {dataset} under {args.data_root} has no gt_bbox images of the queries' identities "
                "(the multi-query protocol is Market-1501's: its gt_bbox/ folder)"
            )
        splits["gt_bbox"] = target.multi_query
    # Every image header and at least one valid query, before any feature is extracted.
    preflight_splits(target.query, target.gallery, splits.get("gt_bbox"), before="feature extraction")
    sets = {}
    for name, split in splits.items():
        sets[name] = FeatureSet(
            _features(model, split.loader, device, args), split.pids, split.camids, np.asarray(split.paths)
        )
    if args.save_features:
        for path, fs in zip(feature_file_names(args), sets.values()):
            save_features(batch.path(path), fs.features, fs.pids, fs.camids, fs.paths)
    return EvalInputs(sets["query"], sets["gallery"], sets.get("gt_bbox"), "query", "gallery", "gt_bbox")


def rerank_of(args: argparse.Namespace, always: bool = False) -> Optional[Rerank]:
    """The re-ranking settings asked for (None without --rerank, unless ``always``)."""
    if not (args.rerank or always):
        return None
    return Rerank(args.rerank_k1, args.rerank_k2, args.rerank_lambda)


def evaluate_all_splits(args: argparse.Namespace, rerank: Optional[Rerank] = None):
    """--all-splits: (mean result, [(split_id, result)], data set name) over every split torchreid's
    split file holds; each image is embedded once, whichever splits it is in."""
    from reid_srdl.data.build import reid_split
    from reid_srdl.data.reid_sets import count_splits, read_reid_set
    from reid_srdl.data.transforms import reid_test_transform

    model, device, _trained_on, dataset, height, width = load_checkpoint(args)
    options = dict(cuhk03_labeled=args.cuhk03_labeled, cuhk03_classic_split=args.cuhk03_classic_split)
    num_splits = count_splits(dataset, args.data_root, **options)
    lists = [read_reid_set(dataset, args.data_root, split_id=k, **options) for k in range(num_splits)]
    paths = sorted({s[0] for split in lists for s in split.query + split.gallery})
    images = reid_split([(p, 0, 0) for p in paths], reid_test_transform(height, width), args.batch_size, args.workers)
    feats = _features(model, images.loader, device, args)
    row = {p: i for i, p in enumerate(paths)}

    def feature_set(samples) -> FeatureSet:
        return FeatureSet(
            feats[[row[s[0]] for s in samples]],
            np.array([s[1] for s in samples], np.int64),
            np.array([s[2] for s in samples], np.int64),
            np.array([s[0] for s in samples]),
        )

    per_split = []
    for k, split in enumerate(lists):
        inputs = EvalInputs(feature_set(split.query), feature_set(split.gallery))
        per_split.append((k, evaluate(inputs, inputs.query.features, args.max_rank, args.ap, rerank)))
    return mean_result([r for _k, r in per_split]), per_split, dataset


def mean_result(results: List[ReIDResult]) -> ReIDResult:
    """The customary summary of a random-split protocol: each metric (and CMC rank) averaged
    over the splits; the query counts are totals."""
    return ReIDResult(
        cmc=np.mean([r.cmc for r in results], axis=0),
        mAP=float(np.mean([r.mAP for r in results])),
        mINP=float(np.mean([r.mINP for r in results])),
        num_queries=int(sum(r.num_queries for r in results)),
        num_valid_queries=int(sum(r.num_valid_queries for r in results)),
    )


def write_split_outputs(args: argparse.Namespace, mean: ReIDResult, per_split, title: str) -> List[str]:
    """--all-splits: JSON {"mean", "splits"} and the mean CMC curve, staged then renamed together."""
    from reid_srdl.evaluation.plots import plot_cmc

    written = []
    with OutputBatch() as batch:
        if args.json:
            summary = {
                "mean": dict(mean.to_dict(), num_splits=len(per_split)),
                "splits": [dict(r.to_dict(), split_id=k) for k, r in per_split],
            }
            write_json_atomic(batch.path(args.json), summary)
            written.append(args.json)
        if args.plot:
            plot_cmc({title: mean.cmc}, batch.path(args.plot), title=f"CMC ({title})")
            written.append(args.plot)
    return written


def check_inputs(inputs: EvalInputs, needs_paths: bool = False) -> None:
    dim = inputs.query.features.shape[1]
    others = [(inputs.gallery, inputs.gallery_name)]
    if inputs.multi_query is not None:
        others.append((inputs.multi_query, inputs.multi_query_name))
    for fs, name in others:
        if fs.features.shape[1] != dim:
            raise EvaluationInputError(
                f"{name} has {fs.features.shape[1]}-dimensional features but {inputs.query_name} has {dim}"
            )
    if needs_paths:
        for fs, name in ((inputs.query, inputs.query_name), (inputs.gallery, inputs.gallery_name)):
            if fs.paths is None:
                raise EvaluationInputError(
                    f"--visualize needs image paths but {name} has no 'paths' key (save_features(..., paths=...))"
                )


def query_features(inputs: EvalInputs, pool: str = "mean", renormalize: bool = False) -> np.ndarray:
    """The query features to rank with: pooled over gt_bbox in multi-query mode."""
    q = inputs.query
    if inputs.multi_query is None:
        return q.features
    m = inputs.multi_query
    return pool_multi_query(q.features, q.pids, q.camids, MultiQuery(m.features, m.pids, m.camids), pool, renormalize)


def evaluate(
    inputs: EvalInputs, q_feats: np.ndarray, max_rank: int = 50, ap: str = "torchreid", rerank: Optional[Rerank] = None
) -> ReIDResult:
    """Rank the gallery by L2 distance of the (already pooled) query features, or by the
    k-reciprocal distance with ``rerank``."""
    q, g = inputs.query, inputs.gallery
    return evaluate_ranking(
        q_feats, g.features, q.pids, g.pids, q.camids, g.camids, max_rank=max_rank, ap=ap, rerank=rerank
    )


def pick_queries(num_queries: int, n: int) -> List[int]:
    """``n`` query indices spread evenly over the query set (deterministic)."""
    n = min(n, num_queries)
    return sorted(set(np.linspace(0, num_queries - 1, n).round().astype(int).tolist()))


def open_set_outputs(inputs: EvalInputs, q_feats: np.ndarray):
    """``(OpenSetScores, OpenSetResult)`` at FAR 1/5/10% of the (pooled) queries against the gallery."""
    from reid_srdl.evaluation.open_set import evaluate_open_set, open_set_scores

    q, g = inputs.query, inputs.gallery
    scores = open_set_scores(q_feats, g.features, q.pids, g.pids, q.camids, g.camids)
    return scores, evaluate_open_set(None, None, None, None, None, None, scores=scores)


def write_outputs(
    args: argparse.Namespace,
    inputs: EvalInputs,
    q_feats: np.ndarray,
    result: ReIDResult,
    title: str,
    batch: OutputBatch,
    open_set=None,
) -> List[str]:
    """JSON, CMC plot, ranked lists and the open-set plot, staged in ``batch`` (renamed
    together at its end)."""
    from reid_srdl.evaluation.plots import plot_cmc, plot_open_set, save_ranked_list

    written = []
    if args.json:
        payload = result.to_dict()
        if open_set is not None:
            payload["open_set"] = open_set[1].to_dict()
        write_json_atomic(batch.path(args.json), payload)
        written.append(args.json)
    if open_set is not None and args.open_set_plot:
        scores, os_result = open_set
        taus = {f"FAR {100 * p.far:g}%": p.threshold for p in os_result.points}
        plot_open_set(
            scores.genuine, scores.impostor, taus, batch.path(args.open_set_plot), title=f"Open-set distances ({title})"
        )
        written.append(args.open_set_plot)
    if args.plot:
        plot_cmc({title: result.cmc}, batch.path(args.plot), title=f"CMC ({title})")
        written.append(args.plot)
    if args.visualize:
        q, g = inputs.query, inputs.gallery
        chosen = pick_queries(len(q), args.visualize)
        top, dist = ranked_gallery(
            q_feats[chosen], g.features, q.pids[chosen], g.pids, q.camids[chosen], g.camids, RANKED_LIST_LENGTH
        )
        for row, qi in enumerate(chosen):
            found = top[row] >= 0
            cols = top[row][found]
            picture = os.path.join(args.out, f"query_{qi:05d}_pid{q.pids[qi]}_cam{q.camids[qi]}.png")
            save_ranked_list(
                batch.path(picture),
                q.paths[qi],
                [g.paths[c] for c in cols],
                g.pids[cols] == q.pids[qi],
                dist[row][found],
            )
            written.append(picture)
    return written


def main_all_splits(args: argparse.Namespace) -> None:
    """--all-splits: each split's Rank-1/mAP, then the table of the mean."""
    check_outputs(args)
    rerank = rerank_of(args)
    result, per_split, dataset = evaluate_all_splits(args, rerank)
    title = f"{dataset}, single-query, mean over {len(per_split)} splits"
    if rerank:
        title += f", {rerank.describe()}"
    written = write_split_outputs(args, result, per_split, title)
    for k, r in per_split:
        print(f"split {k:2d}: Rank-1 {100 * r.rank(1):6.2f}  mAP {100 * r.mAP:6.2f}")
    print(format_results_table(result, title=f"{title} ({args.ap} AP)"))
    for path in written:
        print(f"wrote {path}")


def main(argv=None) -> int:
    """``reid-eval`` / ``python tools/eval_reid.py``: the exit code (reid_srdl/core/cli.py)."""
    return cli.run(_evaluate, argv)


def _evaluate(argv) -> None:
    args = parse_args(argv)
    if args.all_splits:
        return main_all_splits(args)
    check_outputs(args)
    # One batch for every output (features, JSON, plots, pictures): all appear at the
    # end, or none (and no temporary file) on any error.
    with OutputBatch() as batch:
        inputs = extract_inputs(args, batch) if args.checkpoint else load_inputs(args)
        q_feats = query_features(inputs, args.pool, args.renormalize)
        rerank = rerank_of(args)
        result = evaluate(inputs, q_feats, args.max_rank, args.ap, rerank)
        open_set = open_set_outputs(inputs, q_feats) if args.open_set else None
        title = f"multi-query, {args.pool}" if inputs.multi_query is not None else "single-query"
        if rerank:
            title += f", {rerank.describe()}"
        written = write_outputs(args, inputs, q_feats, result, title, batch, open_set)
        if args.save_features:
            written = feature_file_names(args) + written
    print(format_results_table(result, title=f"{title} ({args.ap} AP)"))
    if open_set is not None:
        from reid_srdl.evaluation.open_set import REFERENCE, format_open_set_table

        print(format_open_set_table(open_set[1], title=f"open set ({REFERENCE})"))
    for path in written:
        print(f"wrote {path}")
