"""What the experiment scripts share: cached, resumable training runs in their own processes,
run a few at a time, and the per-seed statistics of a table.

A run is one ``tools/train.py`` process with its overrides; its folder is reused when it
holds a finished run trained with exactly these settings, resumed when it holds a
``last.pt``, and started otherwise -- so an interrupted experiment continues where it stopped.
"""

import json
import os
import statistics
import subprocess
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

_LOG_LOCK = threading.Lock()


def run(overrides, run_dir, log, env=None):
    """Train one configuration in its own process (fresh memory, exact command logged; the
    run's own output goes to ``train.log`` inside its folder)."""
    if os.path.isfile(os.path.join(run_dir, "metrics.json")):
        check_cached(run_dir, overrides)
        return
    cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), *overrides]
    if os.path.isfile(os.path.join(run_dir, "last.pt")):
        cmd = [sys.executable, os.path.join(REPO, "tools", "train.py"), "--resume", run_dir]
    print("$ " + " ".join(cmd), flush=True)
    with _LOG_LOCK, open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "train.log"), "a") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if result.returncode != 0:
        raise SystemExit(f"run failed (exit {result.returncode}): see {os.path.join(run_dir, 'train.log')}")


def trained_in(output_dir):
    """The checkout a run was trained in, read off its saved ``train.output_dir``
    (``<checkout>/benchmarks/results/...``): runs trained in a frozen worktree and copied into
    main, or into a clone elsewhere, name their data under that checkout's path."""
    marker = os.sep + os.path.join("benchmarks", "results") + os.sep
    head, found, _tail = os.path.abspath(output_dir).partition(marker)
    return head if found else REPO


def check_cached(run_dir, overrides):
    """A finished run is reused only if it was trained with exactly these settings."""
    from reid_srdl.config import load_config, to_dict

    def relative(cfg, repo):  # paths inside the repository may be spelled relative or absolute
        return json.loads(json.dumps(to_dict(cfg)).replace(repo + os.sep, ""))

    saved = load_config(os.path.join(run_dir, "config.yaml"))
    stored = relative(saved, trained_in(saved.train.output_dir))
    wanted = relative(load_config(None, overrides), REPO)
    # The options of the methods the run does not use change nothing in it (a default of
    # method.one changing must not invalidate an SRDL run).
    unused = {("method", name) for name in wanted["method"] if name not in ("name", wanted["method"]["name"])}
    differ = [
        f"{section}.{key}: {stored[section][key]!r} there, {value!r} asked"
        for section, values in wanted.items()
        if isinstance(values, dict)
        for key, value in values.items()
        # where the run lives may be spelled differently (relative / absolute path)
        if (section, key) not in (("train", "output_dir"), ("train", "run_name"), *unused)
        and stored.get(section, {}).get(key) != value
    ]
    if differ:
        raise SystemExit(
            f"{run_dir} holds a finished run with other settings ({'; '.join(differ[:4])}); "
            "give another --out or remove it"
        )


def run_all(plan, out_dir, log, jobs: int, threads: int):
    """Train every ``(name, overrides, dependencies)`` of ``plan``, ``jobs`` at a time, each with
    ``threads`` torch threads (several single-threaded runs use 2 cores better than one run
    with 2 threads when the network is small).  A run starts once its dependencies finished."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending = list(plan)
    done, failed = set(), []
    cond = threading.Condition()

    def worker():
        while True:
            with cond:
                while True:
                    if failed or not pending:
                        return
                    ready = next((t for t in pending if all(d in done for d in t[2])), None)
                    if ready is not None:
                        pending.remove(ready)
                        break
                    cond.wait()
            name, overrides, _deps = ready
            try:
                run(overrides, os.path.join(out_dir, name), log, env)
            except BaseException as e:  # noqa: BLE001 - reported once all workers stop
                with cond:
                    failed.append(e)
                    cond.notify_all()
                return
            with cond:
                done.add(name)
                cond.notify_all()

    workers = [threading.Thread(target=worker) for _ in range(max(1, jobs))]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    if failed:
        raise failed[0]


RECORD_FILE = "record.json"


def cached_record(run_dir, compute):
    """The table row of a finished run: computed once (it may evaluate checkpoints) and kept
    as ``record.json`` beside metrics.json, so that the small files alone (config.yaml,
    metrics.json, metrics.jsonl, record.json, which git keeps) rebuild the table in a later
    session without the checkpoints."""
    path = os.path.join(run_dir, RECORD_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    rec = compute()
    write_text_atomic(path, json.dumps(rec, indent=1) + "\n")
    return rec


def epoch_records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f]


def stage_history(run_dir):
    """Per stage: (relative change of the training cross-entropy over the stage's last
    quarter, training accuracy of its last epoch)."""
    lines = epoch_records(run_dir)
    out = []
    for stage in sorted({line["stage"] for line in lines}):
        rows = [line for line in lines if line["stage"] == stage]
        ce = [line["ce"] for line in rows]
        q = max(1, len(ce) // 4)
        change = (ce[-q - 1] - ce[-1]) / ce[-q - 1] if len(ce) > q else float("nan")
        out.append((change, rows[-1]["train_acc"]))
    return out


def mean_std(values):
    if not values:
        return float("nan"), float("nan")
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def paired_cell(a, b, scale=100.0):
    """``+0.42 ± 0.61 [-0.34, +1.18]``: the mean paired difference (points), its std and the
    paired-t 95% interval."""
    from reid_srdl.evaluation.stats import paired_difference

    d = paired_difference([scale * x for x in a], [scale * x for x in b])
    if d.n < 2:
        return f"{d.mean:+.2f}"
    return f"{d.mean:+.2f} ± {d.std:.2f} [{d.ci_low:+.2f}, {d.ci_high:+.2f}]"


NOTES_BEGIN = "<!-- notes: written by hand, kept when the script rewrites this file -->"
NOTES_END = "<!-- /notes -->"


def kept_notes(path):
    """The hand-written block of a generated table (between NOTES_BEGIN and NOTES_END, the
    markers included), so that regenerating the table does not lose what only a person
    knows (which machine ran the runs that predate metrics.json's ``environment``, whether
    the cores were shared); ``[]`` when the file or the block does not exist."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return []
    start, end = text.find(NOTES_BEGIN), text.find(NOTES_END)
    if start < 0 or end < start:
        return []
    return text[start : end + len(NOTES_END)].split("\n") + [""]


def _run_environment(out_dir, name):
    """The ``environment`` a finished run's metrics.json records (``{}`` if it predates the
    field); ``None`` if the run has not finished."""
    try:
        with open(os.path.join(out_dir, name, "metrics.json")) as f:
            return json.load(f).get("environment", {})
    except FileNotFoundError:
        return None


def run_cpu(out_dir, name):
    """The CPU a finished run names in its metrics.json; ``None`` if not recorded or not run."""
    return (_run_environment(out_dir, name) or {}).get("cpu")


def machines_line(out_dir, names):
    """``CPUs (from each run's metrics.json): AMD EPYC: one seeds 0-4; not recorded: vanilla
    seeds 0 1`` -- which machine finished which of the runs named ``<variant>_seed<s>``."""
    by_cpu = {}
    for name in names:
        environment = _run_environment(out_dir, name)
        if environment is None:
            continue  # not trained yet
        cpu = environment.get("cpu", "not recorded")
        variant, _, seed = name.rpartition("_seed")
        by_cpu.setdefault(cpu, {}).setdefault(variant or name, []).append(seed)
    parts = [
        f"{cpu}: " + ", ".join(f"{variant} seeds {' '.join(seeds)}" for variant, seeds in variants.items())
        for cpu, variants in sorted(by_cpu.items())
    ]
    return "CPUs (from each run's metrics.json): " + "; ".join(parts) + "."


def write_text_atomic(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
