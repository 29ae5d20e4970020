"""What the experiment drivers share: cached, resumable training runs in their own processes,
run a few at a time; one compact results file per study; the per-seed statistics of a table
and the doc blocks a driver regenerates.

A study is one driver, ``experiments/<study>.py``.  It keeps

- ``experiments/results/<study>.jsonl`` (in git): one JSON line per finished run -- its
  series (a set of runs under one setting, e.g. ``paired``), name, settings (the run's saved
  config), machine, commit, date, final metrics, the driver's table record and the per-epoch
  curves.  Every table of the study is regenerated from this file alone;
- ``experiments/runs/<study>/<series>/<run>/`` (ignored by git): the run's own folder, with its
  checkpoints, logs and resume state;
- ``experiments/<study>.md``: the study's doc, whose generated blocks the driver rewrites
  (:func:`write_section`); everything outside them is written by hand.

A run is one ``tools/train.py`` process with its overrides.  A run whose row is in the
results file with the same settings is done; otherwise its folder is reused when it holds a
finished run trained with exactly these settings, resumed when it holds a ``last.pt``, and
started otherwise -- so an interrupted experiment continues where it stopped.  Its row is
written as soon as it finishes.
"""

import json
import os
import statistics
import subprocess
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(REPO, "experiments")
_LOG_LOCK = threading.Lock()
_RESULTS_LOCK = threading.Lock()
# Where run folders live, relative to a checkout: today's place and the one they had before
# the record moved out of benchmarks/ (rows converted from there name it in their settings).
RUN_FOLDER_ROOTS = (os.path.join("experiments", "runs"), os.path.join("benchmarks", "results"))


class ExperimentError(Exception):
    """A problem with the experiment's inputs or its record, said in one line (exit 2)."""


def guarded(main):
    """Run ``main()``; an :class:`ExperimentError` becomes one line on stderr and exit code 2."""
    try:
        main()
    except ExperimentError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def results_file(study):
    return os.path.join(EXPERIMENTS, "results", f"{study}.jsonl")


def runs_folder(study, series):
    return os.path.join(EXPERIMENTS, "runs", study, series)


def doc_file(study):
    return os.path.join(EXPERIMENTS, f"{study}.md")


def repo_relative(path):
    """``path`` as the doc's command spells it: relative to the checkout when inside it."""
    path = os.path.abspath(path)
    return os.path.relpath(path, REPO) if path.startswith(REPO + os.sep) else path


# --------------------------------------------------------------------------- settings
def trained_in(output_dir):
    """The checkout a run was trained in, read off its saved ``train.output_dir``
    (``<checkout>/experiments/runs/...``, or ``<checkout>/benchmarks/results/...`` before the
    move): runs trained in a frozen worktree and copied into main, or into a clone elsewhere,
    name their data under that checkout's path."""
    path = os.path.abspath(output_dir)
    for root in RUN_FOLDER_ROOTS:
        head, found, _tail = path.partition(os.sep + root + os.sep)
        if found:
            return head
    return REPO


def relative_settings(settings, checkout):
    """A config dict with the paths inside ``checkout`` spelled relative to it."""
    return json.loads(json.dumps(settings).replace(checkout + os.sep, ""))


def wanted_settings(overrides):
    from reid_srdl import load_config
    from reid_srdl.config import to_dict

    return relative_settings(to_dict(load_config(None, overrides)), REPO)


def settings_differences(stored, overrides):
    """``["optim.lr: 0.1 there, 0.05 asked", ...]``: where a saved config (relative paths, as a
    row keeps it) differs from what ``overrides`` ask; where the run lives is not compared
    (its folder may be spelled differently or have moved)."""
    from reid_srdl.engine.run_config import completed_saved

    stored = completed_saved(stored)
    wanted = wanted_settings(overrides)
    # The options of the methods the run does not use change nothing in it (a default of
    # method.one changing must not invalidate an SRDL run).
    unused = {("method", name) for name in wanted["method"] if name not in ("name", wanted["method"]["name"])}
    return [
        f"{section}.{key}: {stored.get(section, {}).get(key)!r} there, {value!r} asked"
        for section, values in wanted.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if (section, key) not in (("train", "output_dir"), ("train", "run_name"), *unused)
        and stored.get(section, {}).get(key) != value
    ]


def check_settings(where, stored, overrides):
    differ = settings_differences(stored, overrides)
    if differ:
        raise ExperimentError(
            f"{where} holds a finished run with other settings ({'; '.join(differ[:4])}); "
            "give another --series or remove it"
        )


def folder_settings(run_dir):
    """The settings a run folder's config.yaml saved, paths relative to its checkout."""
    import yaml

    with open(os.path.join(run_dir, "config.yaml")) as f:
        saved = yaml.safe_load(f)
    return relative_settings(saved, trained_in(saved["train"]["output_dir"]))


def check_cached(run_dir, overrides):
    """A finished run folder is reused only if it was trained with exactly these settings."""
    check_settings(run_dir, folder_settings(run_dir), overrides)


# --------------------------------------------------------------------------- the results file
def read_rows(path):
    """Every row of a results file (``[]`` when it does not exist yet)."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def series_rows(path, series):
    """``{run name: row}`` of one series of a results file."""
    return {row["run"]: row for row in read_rows(path) if row["series"] == series}


def save_row(path, row):
    """Put ``row`` into the results file (replacing the row of the same series and run, in
    place, so that the file's order and its git diff stay stable), atomically."""
    with _RESULTS_LOCK:
        rows = read_rows(path)
        key = (row["series"], row["run"])
        at = next((i for i, r in enumerate(rows) if (r["series"], r["run"]) == key), None)
        if at is None:
            rows.append(row)
        else:
            rows[at] = row
        write_text_atomic(path, "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))


def epoch_records(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f]


def _short(value):
    """A curve value to 6 significant digits (what a figure needs; the file stays small)."""
    return float(f"{value:.6g}") if isinstance(value, float) else value


def curves_of(epochs):
    """The per-epoch lines of metrics.jsonl as columns: ``{"epoch": [...], "ce": [...]}``
    (``None`` where an epoch lacks the key, e.g. a loss term of stage 2 only)."""
    keys = list(dict.fromkeys(k for e in epochs for k in e))
    return {k: [_short(e.get(k)) for e in epochs] for k in keys}


def epochs_of(curves):
    """The inverse of :func:`curves_of`: one dict per epoch."""
    n = len(next(iter(curves.values()), []))
    return [{k: v[i] for k, v in curves.items() if v[i] is not None} for i in range(n)]


def folder_row(run_dir, series, run, record):
    """The results-file row of a finished run folder: its settings, machine, commit and date
    (from metrics.json's ``environment``; ``None`` for runs that predate it), the trainer's
    final metrics, the driver's table ``record`` and the per-epoch curves."""
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    environment = dict(metrics.pop("environment", None) or {})
    date, commit = environment.pop("date", None), environment.pop("commit", None)
    return {
        "series": series,
        "run": run,
        "settings": folder_settings(run_dir),
        "machine": environment or None,
        "commit": commit,
        "date": date,
        "metrics": metrics,
        "record": record,
        "curves": curves_of(epoch_records(run_dir)),
    }


# --------------------------------------------------------------------------- training
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
        raise ExperimentError(f"run failed (exit {result.returncode}): see {os.path.join(run_dir, 'train.log')}")


def run_all(plan, out_dir, log, jobs: int, threads: int, done=(), finished=None):
    """Train every ``(name, overrides, dependencies)`` of ``plan`` not in ``done``, ``jobs`` at
    a time, each with ``threads`` torch threads (several single-threaded runs use 2 cores better
    than one run with 2 threads when the network is small).  A run starts once its
    dependencies finished; ``finished(name)`` is called as each one does (to write its row)
    before a run that depends on it starts."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending = [t for t in plan if t[0] not in done]
    done, failed = set(done), []
    cond = threading.Condition()
    os.makedirs(out_dir, exist_ok=True)

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
                if finished is not None:
                    finished(name)
            except BaseException as e:  # reported once all workers stop
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


def recorded(results, series, plan, tables_only):
    """The rows of ``plan``'s runs already in the results file, after checking that each was
    trained with the settings the plan asks; with ``tables_only``, every run must have one."""
    rows = series_rows(results, series)
    for name, overrides, _deps in plan:
        if name in rows:
            check_settings(f"{repo_relative(results)} (series {series}, run {name})", rows[name]["settings"], overrides)
    missing = [name for name, _o, _d in plan if name not in rows]
    if tables_only and missing:
        raise ExperimentError(
            f"{repo_relative(results)} has no row for {len(missing)} run(s) of series {series} "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); "
            "run without --tables-only to train them"
        )
    return rows


# --------------------------------------------------------------------------- tables
def stage_history(epochs):
    """Per stage: (relative change of the training cross-entropy over the stage's last
    quarter, training accuracy of its last epoch), from the per-epoch records."""
    out = []
    for stage in sorted({line["stage"] for line in epochs}):
        rows = [line for line in epochs if line["stage"] == stage]
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


def run_cpu(rows, name):
    """The CPU a finished run's row names, with AMX or AVX2-only said where its slug says so
    (rows from before the slug was recorded give the name alone); ``None`` if not recorded or
    not run."""
    from reid_srdl.core.environment import cpu_label_suffix

    machine = (rows.get(name) or {}).get("machine") or {}
    cpu, slug = machine.get("cpu"), str(machine.get("cpu_slug") or "")
    return None if cpu is None else cpu + cpu_label_suffix(slug)


def machines_line(rows, names):
    """``CPUs (from each run's metrics.json): AMD EPYC: one seeds 0-4; not recorded: vanilla
    seeds 0 1`` -- which machine finished which of the runs named ``<variant>_seed<s>``
    (``rows``: run name -> row)."""
    by_cpu = {}
    for name in names:
        if name not in rows:
            continue  # not trained yet
        cpu = run_cpu(rows, name) or "not recorded"
        variant, _, seed = name.rpartition("_seed")
        by_cpu.setdefault(cpu, {}).setdefault(variant or name, []).append(seed)
    parts = [
        f"{cpu}: " + ", ".join(f"{variant} seeds {' '.join(seeds)}" for variant, seeds in variants.items())
        for cpu, variants in sorted(by_cpu.items())
    ]
    return "CPUs (from each run's metrics.json): " + "; ".join(parts) + "."


def add_record_options(parser, study, series):
    """The options every driver shares: which series, results file, run folders and doc, and
    whether to train or only rewrite (or check) the table from the results file."""
    parser.add_argument("--series", default=series, help="the set of runs these settings make (default %(default)s)")
    parser.add_argument("--results", default=results_file(study), help="the compact results file (one row per run)")
    parser.add_argument("--runs", help=f"run folders (default: experiments/runs/{study}/SERIES; not in git)")
    parser.add_argument("--table", default=doc_file(study), help="the doc whose block of this series is rewritten")
    parser.add_argument(
        "--tables-only", action="store_true", help="rewrite the table from the results file alone; train nothing"
    )
    parser.add_argument(
        "--check", action="store_true", help="with --tables-only: fail if the doc's block differs; write nothing"
    )


def finish_options(args, study):
    args.runs = args.runs or runs_folder(study, args.series)
    if args.check and not args.tables_only:
        raise ExperimentError("--check compares the table rebuilt from the results file: give --tables-only too")
    return args


def publish(args, lines):
    """Write the series' generated block of the doc (or, with ``--check``, compare it)."""
    key = f"series {args.series}"
    if args.check:
        if read_section(args.table, key) != lines:
            raise ExperimentError(f"{repo_relative(args.table)}: block '{key}' differs from its results file")
        print(f"{repo_relative(args.table)}: block '{key}' regenerates identically")
        return
    write_section(args.table, key, lines)
    print("\n".join(lines))


def command_line(study, parts, args):
    """The command a doc shows above a table: the driver, its settings (``parts``), the series
    and the results file and doc where they are not the defaults."""
    extra = [f"--series {args.series}"]
    if os.path.abspath(args.results) != results_file(study):
        extra.append(f"--results {repo_relative(args.results)}")
    if os.path.abspath(args.table) != doc_file(study):
        extra.append(f"--table {repo_relative(args.table)}")
    return f"python experiments/{study}.py " + " ".join([*parts, *extra])


def section_markers(key):
    return (
        f"<!-- generated: {key} (the driver rewrites this block from experiments/results/; edit the script) -->",
        f"<!-- /generated: {key} -->",
    )


def read_section(path, key):
    """The lines of a doc's generated block ``key`` (``None`` when the doc or the block is missing)."""
    begin, end = section_markers(key)
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return None
    if begin not in lines or end not in lines:
        return None
    return lines[lines.index(begin) + 1 : lines.index(end)]


def write_section(path, key, lines):
    """Rewrite the generated block ``key`` of the doc at ``path`` with ``lines``, keeping
    everything around it (the hand-written text); a new block goes at the end of the doc."""
    begin, end = section_markers(key)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        text = ""
    doc = text.split("\n") if text else []
    block = [begin, *lines, end]
    if begin in doc and end in doc and doc.index(begin) < doc.index(end):
        doc[doc.index(begin) : doc.index(end) + 1] = block
    else:
        if doc and doc[-1] == "":
            doc.pop()
        doc += ([""] if doc else []) + block + [""]
    write_text_atomic(path, "\n".join(doc))


def write_text_atomic(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
