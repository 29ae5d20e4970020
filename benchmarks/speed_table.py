#!/usr/bin/env python
"""Rewrite (or check) the speed tables of README.md and docs/benchmarks.md from benchmarks/results/.

For each speed benchmark (bench_eval, bench_train, bench_extract) the newest result file by the
date it records is read -- only files named ``<bench>-<cpu>.json``, the default settings; a
variant (``bench_train-workers0-<cpu>.json``) is a study of its own, quoted where its doc
discusses it -- and two generated blocks are written between ``<!-- speed-table -->`` and
``<!-- /speed-table -->``: README.md's, one line per figure (the figure, its ratio to
torchreid and to the GEMM floor, CPU, date, commit), and docs/benchmarks.md's, every figure
of those runs.  Nothing is measured here: run the benchmarks, then this script.

    python benchmarks/speed_table.py            # rewrite both blocks
    python benchmarks/speed_table.py --check    # exit 1 if a block differs from the result files
"""

import argparse
import glob
import json
import os
import re
import sys

from reid_srdl.core.environment import cpu_label_suffix, cpu_slug

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = ("bench_eval", "bench_train", "bench_extract")
BEGIN, END = "<!-- speed-table -->", "<!-- /speed-table -->"

EVAL_CASES = {
    "market2048": "Market-1501 shape, d=2048",
    "market512": "Market-1501 shape, d=512",
    "market512-unstructured": "Market-1501 shape, d=512, unstructured features (worst case)",
    "msmt": "MSMT17 shape, d=512",
}
TRAIN_MODELS = {"small_reid": "small_reid (the demo's network)", "resnet50": "ResNet-50", "densenet121": "DenseNet-121"}


class SpeedTableError(Exception):
    """A result file or a doc that cannot be read or lacks a block; one line for the user."""


# ---------------------------------------------------------------- reading the result files


def environment(result):
    """Where and when a result was measured, from any of the layouts on file: ``environment``
    (bench_record.metadata), ``info`` (bench_train) or ``machine`` (the first bench_eval)."""
    for key in ("environment", "info", "machine"):
        if isinstance(result.get(key), dict):
            return result[key]
    return {}


def recorded_date(result):
    """``YYYY-MM-DD[ HH:MM]`` as recorded, or '' when the file records none (sorts oldest)."""
    return str(environment(result).get("date") or "")


def cpu_label(env, slug):
    """``AMD EPYC``, ``Intel Xeon with AMX``: the recorded model name without trademarks and
    "Processor", with AMX or AVX2-only named where the file's CPU part says so."""
    name = re.sub(r"\((r|tm)\)|\b(processor|cpu)\b", " ", str(env.get("cpu") or "unknown CPU"), flags=re.I)
    name = " ".join(name.split())
    return name + cpu_label_suffix(slug)


def default_run_slug(path, bench, result):
    """The CPU part of ``<bench>-<cpu>.json``, or None when the name carries a variant.

    The CPU part is the slug the file records (``environment.cpu_slug``); files from before
    that field record only the CPU's name, whose slug may carry ``-amx`` (the flag was not
    recorded either)."""
    rest = os.path.basename(path)[len(bench) + 1 : -len(".json")]
    env = environment(result)
    if env.get("cpu_slug"):
        return rest if rest == env["cpu_slug"] else None
    if env.get("cpu"):
        slug = cpu_slug(str(env["cpu"]), flags=set())  # the name's part; the flags were not recorded
        return rest if rest in (slug, slug + "-amx") else None
    return None


def newest_results(results_dir, bench):
    """``[(path, result, cpu slug)]``: the newest default-settings result file of ``bench``
    for each CPU, newest first."""
    candidates = []
    for path in sorted(glob.glob(os.path.join(results_dir, f"{bench}-*.json"))):
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError) as e:
            raise SpeedTableError(f"{path}: not a readable JSON result file ({e})") from None
        if not isinstance(result, dict):
            raise SpeedTableError(f"{path}: expected a JSON object (a benchmark's result file)")
        slug = default_run_slug(path, bench, result)
        if slug is not None:
            candidates.append((recorded_date(result), os.path.basename(path), path, result, slug))
    newest = {}
    for candidate in sorted(candidates, reverse=True):
        newest.setdefault(candidate[-1], candidate[2:])
    return list(newest.values())


# ---------------------------------------------------------------- formatting


def fmt(value, spec, suffix=""):
    return "-" if value is None else f"{value:{spec}}{suffix}"


def seconds(value):
    return fmt(value, ".2f", " s")


def ratio(value):
    """``2.82x``; ``54x`` from 10 on (the last digits of a large ratio are noise)."""
    return fmt(value, ".0f" if value is not None and value >= 10 else ".2f", "x")


def get(row, *keys):
    """The first of ``keys`` that ``row`` has (the layouts renamed a few), else None."""
    for key in keys:
        if row.get(key) is not None:
            return row[key]
    return None


def where(path, result, slug):
    env = environment(result)
    date = recorded_date(result)[:10] or "not recorded"
    commit = env.get("commit") or "not recorded"
    return cpu_label(env, slug), date, commit


# ---------------------------------------------------------------- one benchmark each


def eval_rows(result):
    """Default-setting rows of bench_eval: (what, ours, vs torchreid, vs floor, row)."""
    for row in result.get("rows", []):
        if row.get("variant") not in (None, "default"):
            continue
        case = EVAL_CASES.get(row["case"], row["case"]).replace(
            "shape,", f"shape {row['queries']:,} x {row['gallery']:,},"
        )
        ours = seconds(row.get("ours_seconds"))
        if row.get("peak_rss_mb") is not None:
            ours += f", peak RSS {row['peak_rss_mb']:.0f} MB"
        yield (
            f"exact re-id evaluation, {case}",
            ours,
            ratio(get(row, "torchreid_ratio", "speedup")),
            ratio(row.get("ratio_to_floor")),
            row,
        )


def train_rows(result):
    for row in result.get("throughput", []):
        model = TRAIN_MODELS.get(row["model"], row["model"])
        # Since 2026-12-06 each side trains untimed warm-up epochs first (workers started, kernels
        # built): the label says so, as the figures before it were cold first epochs.
        warm = row.get("warmup_epochs") or 0
        after = f" after {warm} warm-up epoch{'s' if warm > 1 else ''}" if warm else ""
        yield (
            f"training, one epoch with data{after}: {model} {row['height']}x{row['width']}, batch {row['batch']}",
            f"{row['reid_srdl_img_s']:.1f} img/s ({row.get('precision', '?')})",
            ratio(row.get("ratio")),
            "-",
            row,
        )
    demo = result.get("demo")
    if demo:
        yield (
            f"the demo's training ({demo.get('epochs', '?')} epochs, `python tools/train.py`)",
            seconds(demo.get("seconds")),
            "-",
            "-",
            demo,
        )


def extract_rows(result):
    speed = result.get("images_per_second", {})
    if not speed:
        return
    yield (
        f"feature extraction, {result.get('model', '?')} {result.get('height')}x{result.get('width')}"
        f" (`fast=True`, {result.get('fast_precision', '?')})",
        fmt(speed.get("ours fast"), ".1f", " img/s"),
        ratio(result.get("speedup_fast_vs_torchreid")),
        "-",
        result,
    )


ROWS = {"bench_eval": eval_rows, "bench_train": train_rows, "bench_extract": extract_rows}


def runs(results_dir):
    """``{bench: [(path, result, slug), ...]}``: for each benchmark with a default-settings
    result, the newest run on each CPU, newest first (README shows the first)."""
    found = {}
    for bench in BENCHMARKS:
        newest = newest_results(results_dir, bench)
        if newest:
            found[bench] = newest
    return found


def rendered(bench, path, render, result):
    """``render(result)`` as a list, a missing or mistyped field named with its file."""
    try:
        return list(render(result))
    except (KeyError, TypeError, ValueError) as e:
        raise SpeedTableError(f"{path}: not a {bench} result this script reads ({type(e).__name__}: {e})") from None


def readme_block(found):
    """README.md's table: one line per figure."""
    lines = [
        "| figure | reid_srdl | vs torchreid | vs GEMM floor | CPU | date | commit |",
        "|---|---|---|---|---|---|---|",
    ]
    for bench, [(path, result, slug), *_] in found.items():
        cpu, date, commit = where(path, result, slug)
        for what, ours, vs_torchreid, vs_floor, _ in rendered(bench, path, ROWS[bench], result):
            lines.append(f"| {what} | {ours} | {vs_torchreid} | {vs_floor} | {cpu} | {date} | {commit} |")
    return lines


def doc_eval(result):
    lines = [
        "| case | queries x gallery, d | variant | ours | GEMM floor | ours / floor | overlap / floor "
        "| one thread / floor | torchreid | torchreid / ours | max CMC diff | mAP diff | peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.get("rows", []):
        lines.append(
            f"| {row['case']} | {row['queries']:,} x {row['gallery']:,}, {row['dim']} "
            f"| {row.get('variant', 'default')} "
            f"| {seconds(row.get('ours_seconds'))} | {seconds(row.get('floor_seconds'))} "
            f"| {ratio(row.get('ratio_to_floor'))} | {ratio(row.get('ratio_to_floor_overlap'))} "
            f"| {ratio(row.get('ratio_to_floor_one_thread'))} | {seconds(row.get('torchreid_seconds'))} "
            f"| {ratio(get(row, 'torchreid_ratio', 'speedup'))} | {fmt(row.get('max_abs_cmc_diff'), '.0e')} "
            f"| {fmt(row.get('abs_mAP_diff'), '.0e')} | {fmt(row.get('peak_rss_mb'), '.0f', ' MB')} |"
        )
    return lines


def doc_train(result):
    lines = [
        "| model | input | batch | workers | ours (precision), img/s | ours fp32 | ours, no cache | torchreid "
        "| ours / torchreid | fp32 / torchreid | no cache / torchreid | measured |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result.get("throughput", []):
        lines.append(
            f"| {row['model']} | {row['height']}x{row['width']} | {row['batch']} | {row.get('workers', '-')} "
            f"| {row['reid_srdl_img_s']:.1f} ({row.get('precision', '?')}) "
            f"| {fmt(row.get('reid_srdl_fp32_img_s'), '.1f')} "
            f"| {fmt(row.get('reid_srdl_no_cache_img_s'), '.1f')} | {fmt(row.get('torchreid_img_s'), '.1f')} "
            f"| {ratio(row.get('ratio'))} | {ratio(row.get('fp32_ratio'))} | {ratio(row.get('no_cache_ratio'))} "
            f"| {row.get('measured', '-')} |"
        )
    overhead = result.get("srdl_overhead")
    if overhead:
        lines += [
            "",
            f"SRDL vs vanilla, {overhead['epochs']} epochs of small_reid: {overhead['srdl']:.1f} s vs "
            f"{overhead['vanilla']:.1f} s = {overhead['ratio']:.2f}x.",
        ]
    demo = result.get("demo")
    if demo:
        lines += [
            "",
            f"The demo's training: {seconds(demo.get('seconds'))} "
            f"(goal <= {fmt(demo.get('goal_seconds'), '.0f', ' s')}).",
        ]
    return lines


def doc_extract(result):
    speed = result.get("images_per_second", {})
    lines = ["| extractor | images/s |", "|---|---|"]
    lines += [f"| {name} | {value:.1f} |" for name, value in speed.items()]
    lines += [
        "",
        f"{result.get('model', '?')} at {result.get('height')}x{result.get('width')}, batch {result.get('batch')}, "
        f"fast path in {result.get('fast_precision', '?')}: fast / torchreid "
        f"{ratio(result.get('speedup_fast_vs_torchreid'))}, "
        f"fp32 / torchreid {ratio(result.get('speedup_fp32_vs_torchreid'))}"
        f"; mAP of the fast path {fmt(result.get('mAP_diff_points'), '.3f')} points from fp32.",
    ]
    return lines


DOC = {"bench_eval": doc_eval, "bench_train": doc_train, "bench_extract": doc_extract}
TITLES = {
    "bench_eval": "Exact re-id evaluation against torchreid and the GEMM floor",
    "bench_train": "Training against torchreid's `ImageSoftmaxEngine`",
    "bench_extract": "Feature extraction against torchreid's `FeatureExtractor`",
}


def shown_path(path):
    """A result file's path from the repository root (its name alone outside the repository)."""
    path = os.path.abspath(path)
    inside = os.path.commonpath([path, REPO]) == REPO
    return os.path.relpath(path, REPO) if inside else os.path.basename(path)


def doc_block(found):
    """docs/benchmarks.md's block: every figure of the newest run of each benchmark on each CPU."""
    lines = []
    for bench, path, result, slug in ((b, *run) for b, newest in found.items() for run in newest):
        env = environment(result)
        cpu, date, commit = where(path, result, slug)
        load = env.get("load_average_1min")
        cores = get(env, "cpus", "threads", "cpu_count")
        facts = [
            cpu,
            f"{cores} cores" if cores else None,
            f"torch {env['torch']}" if env.get("torch") else None,
            recorded_date(result) or "date not recorded",
            f"commit {commit}",
            f"load average {load:.1f}" if isinstance(load, (int, float)) else None,
            "date and commit from git history (not recorded by the benchmark then)" if env.get("backfilled") else None,
        ]
        lines += [
            f"**{TITLES[bench]}** (`python benchmarks/{bench}.py`; `{shown_path(path)}`): "
            + ", ".join(fact for fact in facts if fact)
            + ".",
            "",
            *rendered(bench, path, DOC[bench], result),
            "",
        ]
    return lines[:-1] if lines else ["(no result files)"]


# ---------------------------------------------------------------- the docs


def read_block(path):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise SpeedTableError(f"{path}: cannot read ({e.strerror})") from None
    lines = text.split("\n")
    if BEGIN not in lines or END not in lines or lines.index(BEGIN) > lines.index(END):
        raise SpeedTableError(f"{path}: expected a block between the lines '{BEGIN}' and '{END}'")
    return lines, lines.index(BEGIN), lines.index(END)


def update(path, block, check):
    """Rewrite ``path``'s block (or compare it, with ``check``); True when it was up to date."""
    lines, begin, end = read_block(path)
    if lines[begin + 1 : end] == block:
        return True
    if not check:
        lines[begin + 1 : end] = block
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write("\n".join(lines))
        os.replace(tmp, path)
    return False


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare the blocks with the result files; write nothing")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"), help="folder of result files")
    p.add_argument("--readme", default=os.path.join(REPO, "README.md"))
    p.add_argument("--doc", default=os.path.join(REPO, "docs", "benchmarks.md"))
    args = p.parse_args(argv)
    try:
        found = runs(args.results)
        stale = []
        for path, block in ((args.readme, readme_block(found)), (args.doc, doc_block(found))):
            if not update(path, block, args.check):
                stale.append(path)
    except SpeedTableError as e:
        print(f"speed_table: {e}", file=sys.stderr)
        return 2
    for bench, newest in found.items():
        print(f"{bench}: {', '.join(os.path.basename(path) for path, _, _ in newest)}")
    if args.check and stale:
        print(f"stale: {', '.join(stale)} (run python benchmarks/speed_table.py)", file=sys.stderr)
        return 1
    print("up to date" if args.check else ("rewritten: " + ", ".join(stale) if stale else "already up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
