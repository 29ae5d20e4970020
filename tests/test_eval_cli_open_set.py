"""reid-eval --open-set: the printed table, the JSON entry and the distribution PNG."""

import json

import numpy as np

from reid_srdl.cli import eval_reid as cli
from reid_srdl.evaluation.io import save_features
from reid_srdl.evaluation.open_set import evaluate_open_set


def labelled_split(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, 6))
    g_pids, g_cams = np.repeat(np.arange(30), 4), np.tile(np.arange(4), 30)
    q_pids, q_cams = np.repeat(np.arange(30), 4), np.tile(np.arange(4), 30)
    g = (centres[g_pids] + 0.5 * rng.standard_normal((120, 6))).astype(np.float32)
    q = (centres[q_pids] + 0.5 * rng.standard_normal((120, 6))).astype(np.float32)
    save_features(str(tmp_path / "q.npz"), q, q_pids, q_cams)
    save_features(str(tmp_path / "g.npz"), g, g_pids, g_cams)
    return q, g, q_pids, g_pids, q_cams, g_cams


def test_open_set_table_json_and_plot(tmp_path, capsys):
    q, g, qp, gp, qc, gc = labelled_split(tmp_path)
    out = tmp_path / "out"
    code = cli.main(
        [
            "--query",
            str(tmp_path / "q.npz"),
            "--gallery",
            str(tmp_path / "g.npz"),
            "--open-set",
            "--json",
            str(out / "m.json"),
            "--open-set-plot",
            str(out / "dist.png"),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    expected = evaluate_open_set(q, g, qp, gp, qc, gc, fars=[0.01, 0.05, 0.10])
    saved = json.loads((out / "m.json").read_text())
    assert saved["open_set"] == expected.to_dict() and "rank1" in saved
    for p in expected.points:
        assert f"{p.threshold:.4f}" in printed and f"{100 * p.dir:.2f}" in printed
    assert "Liao et al." in printed
    assert (out / "dist.png").read_bytes()[:4] == b"\x89PNG"


def test_open_set_options_are_checked_before_anything_runs(tmp_path, capsys):
    labelled_split(tmp_path)
    import pytest

    for argv, message in (
        (["--open-set-plot", "x.png"], "--open-set-plot needs --open-set"),
        (["--open-set", "--rerank"], "without --rerank"),
    ):
        with pytest.raises(SystemExit) as e:
            cli.main(["--query", str(tmp_path / "q.npz"), "--gallery", str(tmp_path / "g.npz"), *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err
