"""tools/eval_reid.py on small feature files, the .npz format, atomic outputs and pictures."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from reid_srdl.cli import eval_reid as cli
from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.core.files import OutputBatch, atomic_path
from reid_srdl.evaluation import colours
from reid_srdl.evaluation.io import load_features, save_features
from reid_srdl.evaluation.metrics import MultiQuery, evaluate_reid
from reid_srdl.evaluation.plots import plot_cmc, render_ranked_list

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "eval_reid.py")
JSON_KEYS = ["rank1", "rank5", "rank10", "rank20", "mAP", "mINP", "num_queries", "num_valid_queries"]


@pytest.fixture
def sets(tmp_path):
    """Query, gallery and gt_bbox feature files with images on disk (paths)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(40):
        p = tmp_path / "img" / f"{i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(p), np.full((32, 16, 3), 6 * i, dtype=np.uint8))
        paths.append(str(p))
    data = {
        "q": (rng.standard_normal((6, 4)), rng.integers(1, 5, 6), rng.integers(0, 2, 6), paths[:6]),
        "g": (rng.standard_normal((30, 4)), rng.integers(0, 5, 30), rng.integers(0, 3, 30), paths[6:36]),
        "m": (rng.standard_normal((12, 4)), rng.integers(1, 5, 12), rng.integers(0, 2, 12), None),
    }
    files = {}
    for name, (f, p, c, im) in data.items():
        files[name] = str(tmp_path / f"{name}.npz")
        save_features(files[name], f, p, c, im)
    return files, data, tmp_path


def run_subprocess(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- CLI
def test_cli_json_plot_and_ranked_lists(sets, capsys):
    files, data, tmp = sets
    out = tmp / "out"
    code = cli.main(
        [
            "--query",
            files["q"],
            "--gallery",
            files["g"],
            "--json",
            str(out / "m.json"),
            "--plot",
            str(out / "cmc.png"),
            "--visualize",
            "3",
            "--out",
            str(out / "ranked"),
            "--ap",
            "official",
        ]
    )
    assert code == 0
    (qf, qp, qc, _), (gf, gp, gc, _) = data["q"], data["g"]
    expected = evaluate_reid(qf, gf, qp, gp, qc, gc, ap="official").to_dict()
    written = json.loads((out / "m.json").read_text())
    assert list(written) == JSON_KEYS
    assert written == pytest.approx(expected, abs=1e-12)
    assert all(0 <= written[k] <= 1 for k in JSON_KEYS[:6])
    assert f"{100 * expected['mAP']:.2f}" in capsys.readouterr().out  # the printed table, in %
    cmc = cv2.imread(str(out / "cmc.png"))
    assert cmc is not None and cmc.shape[0] > 100 and cmc.shape[1] > 100
    pictures = sorted(os.listdir(out / "ranked"))
    assert len(pictures) == 3 and pictures[0] == f"query_00000_pid{qp[0]}_cam{qc[0]}.png"
    for name in pictures:
        assert cv2.imread(str(out / "ranked" / name)) is not None
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_cli_multi_query_matches_library(sets):
    files, data, tmp = sets
    code = cli.main(
        [
            "--query",
            files["q"],
            "--gallery",
            files["g"],
            "--multi-query",
            files["m"],
            "--pool",
            "max",
            "--json",
            str(tmp / "mq.json"),
        ]
    )
    assert code == 0
    (qf, qp, qc, _), (gf, gp, gc, _), (mf, mp, mc, _) = data["q"], data["g"], data["m"]
    expected = evaluate_reid(qf, gf, qp, gp, qc, gc, multi_query=MultiQuery(mf, mp, mc), pool="max")
    assert json.loads((tmp / "mq.json").read_text()) == pytest.approx(expected.to_dict(), abs=1e-12)


def test_cli_rerank_matches_torchreid_dense_reranking(sets, capsys):
    from torchreid.reid.metrics.rank import evaluate_rank
    from torchreid.reid.utils.rerank import re_ranking

    files, data, tmp = sets
    code = cli.main(
        [
            "--query",
            files["q"],
            "--gallery",
            files["g"],
            "--rerank",
            "--rerank-k1",
            "8",
            "--rerank-k2",
            "3",
            "--json",
            str(tmp / "rr.json"),
        ]
    )
    assert code == 0 and "re-ranked k1=8 k2=3 lambda=0.3" in capsys.readouterr().out
    (qf, qp, qc, _), (gf, gp, gc, _) = data["q"], data["g"]
    euclid = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    dist = re_ranking(euclid(qf, gf), euclid(qf, qf), euclid(gf, gf), k1=8, k2=3, lambda_value=0.3)
    cmc, mAP = evaluate_rank(dist, qp, gp, qc, gc, max_rank=10, use_cython=False)
    written = json.loads((tmp / "rr.json").read_text())
    assert written["mAP"] == pytest.approx(mAP, abs=1e-6) and written["rank1"] == pytest.approx(cmc[0])
    with pytest.raises(SystemExit):
        cli.parse_args(["--query", files["q"], "--gallery", files["g"], "--rerank-k1", "8"])
    with pytest.raises(SystemExit):
        cli.parse_args(["--query", files["q"], "--gallery", files["g"], "--rerank", "--visualize", "2", "--out", "x"])
    code = cli.main(["--query", files["q"], "--gallery", files["g"], "--rerank", "--rerank-lambda", "1.5"])
    assert code == 2 and "lambda must be in [0, 1]" in capsys.readouterr().err


def test_cli_bad_input_exits_2_with_one_line_and_no_outputs(sets):
    files, _, tmp = sets
    broken = tmp / "broken.npz"
    np.savez(broken, features=np.zeros((3, 4), np.float32), pids=np.arange(3))  # no camids
    out = tmp / "never"
    proc = run_subprocess(
        "--query", files["q"], "--gallery", str(broken), "--json", str(out / "m.json"), "--plot", str(out / "c.png")
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "broken.npz" in proc.stderr and "missing key(s) camids" in proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda d: dict(features=np.zeros((3, 5), np.float32), pids=np.arange(3), camids=np.zeros(3)),
            "has 5-dimensional features but",
        ),
        (
            lambda d: dict(features=np.full((3, 4), np.nan, np.float32), pids=np.arange(3), camids=np.zeros(3)),
            "contains NaN or inf",
        ),
        (
            lambda d: dict(features=np.zeros((3, 4), np.float32), pids=np.arange(2), camids=np.zeros(3)),
            "key 'pids': has 2 entries but there are 3 features",
        ),
        (lambda d: dict(features=np.zeros((0, 4), np.float32), pids=np.arange(0), camids=np.zeros(0)), "is empty"),
        (lambda d: dict(features=d[0], pids=d[1] + 100, camids=d[2]), "no valid query"),
    ],
)
def test_cli_errors_in_process(sets, capsys, make, message):
    files, data, tmp = sets
    bad = tmp / "bad.npz"
    np.savez(bad, **make(data["g"]))
    out = tmp / "out"
    code = cli.main(["--query", files["q"], "--gallery", str(bad), "--json", str(out / "m.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ")
    assert not out.exists()


def test_cli_visualize_without_paths_is_refused_before_anything_is_written(sets, capsys):
    files, _, tmp = sets
    code = cli.main(
        [
            "--query",
            files["m"],
            "--gallery",
            files["g"],
            "--json",
            str(tmp / "x.json"),
            "--visualize",
            "2",
            "--out",
            str(tmp / "vis"),
        ]
    )
    assert code == 2
    assert "--visualize needs image paths" in capsys.readouterr().err
    assert not (tmp / "x.json").exists() and not (tmp / "vis").exists()


def test_cli_unreadable_image_leaves_no_partial_outputs(sets, capsys):
    files, data, tmp = sets
    for path in data["g"][3]:  # the gallery images disappear after feature extraction
        os.remove(path)
    out = tmp / "out"
    code = cli.main(
        [
            "--query",
            files["q"],
            "--gallery",
            files["g"],
            "--json",
            str(out / "m.json"),
            "--plot",
            str(out / "c.png"),
            "--visualize",
            "6",
            "--out",
            str(out / "vis"),
        ]
    )
    assert code == 2
    assert "cannot read image" in capsys.readouterr().err
    assert not out.exists()


# ----------------------------------------------------------------------------- npz files
def test_save_load_round_trip(tmp_path):
    path = tmp_path / "f.npz"
    save_features(str(path), np.eye(3, 2), [4, 5, 6], np.array([1.0, 2.0, 3.0]), ["a.jpg", "b.jpg", "c.jpg"])
    fs = load_features(str(path))
    assert fs.features.dtype == np.float32 and fs.features.tolist() == np.eye(3, 2).tolist()
    assert fs.pids.tolist() == [4, 5, 6] and fs.camids.tolist() == [1, 2, 3]
    assert list(fs.paths) == ["a.jpg", "b.jpg", "c.jpg"]
    assert load_features(str(path)) and os.listdir(tmp_path) == ["f.npz"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(EvaluationInputError, match="feature file not found: .*nope.npz"):
        load_features(str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(EvaluationInputError, match="junk.npz: not a readable .npz"):
        load_features(str(junk))
    obj = tmp_path / "obj.npz"
    np.savez(obj, features=np.zeros((1, 2)), pids=[1], camids=[1], paths=np.array([{"a": 1}], dtype=object))
    with pytest.raises(EvaluationInputError, match="obj.npz"):
        load_features(str(obj))


def test_failed_save_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "f.npz"
    save_features(str(path), np.ones((2, 2)), [1, 2], [0, 0])
    with pytest.raises(EvaluationInputError, match="contains NaN"):
        save_features(str(path), np.full((2, 2), np.nan), [1, 2], [0, 0])
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("crash while writing")
    assert os.listdir(tmp_path) == ["f.npz"] and load_features(str(path)).features.tolist() == [[1, 1], [1, 1]]


def test_output_batch_is_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with OutputBatch() as batch:
            open(batch.path(str(tmp_path / "a.txt")), "w").write("a")
            open(batch.path(str(tmp_path / "new" / "deep" / "b.txt")), "w").write("b")
            raise RuntimeError("second output failed")
    assert os.listdir(tmp_path) == []
    with OutputBatch() as batch:
        open(batch.path(str(tmp_path / "a.txt")), "w").write("a")
    assert os.listdir(tmp_path) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "a"


# ----------------------------------------------------------------------------- pictures
def test_plot_cmc_writes_a_png(tmp_path):
    plot_cmc({"ours": np.linspace(0.5, 1, 20), "baseline": np.linspace(0.3, 0.9, 20)}, str(tmp_path / "c.png"))
    img = cv2.imread(str(tmp_path / "c.png"))
    assert img.shape == (360, 500, 3) and img.std() > 0


def test_ranked_list_borders_are_the_decision_and_bars_the_ground_truth(tmp_path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], np.full((20, 10, 3), 128, dtype=np.uint8))
    pic = render_ranked_list(paths[0], paths[1:], [True, False], size=(40, 20), border=3)
    tile_w, gap = 20 + 2 * 3, 6  # layout: query, 2 gaps, rank 1, gap, rank 2
    rank1_mid = tile_w + 2 * gap + tile_w // 2
    rank2_mid = 2 * tile_w + 3 * gap + tile_w // 2
    bar_row = 40 + 2 * 3 + 2 + 3  # the middle of the bar under the framed image
    assert pic.shape[1:] == (3 * tile_w + 3 * gap, 3) and pic.shape[0] > 40 + 2 * 3 + 2 + 6 + 18  # tiles, legend
    assert tuple(pic[1, rank1_mid]) == tuple(pic[1, rank2_mid]) == colours.bgr(colours.NO_DECISION)  # no threshold
    assert tuple(pic[bar_row, rank1_mid]) == colours.bgr(colours.SAME_PERSON)
    assert tuple(pic[bar_row, rank2_mid]) == colours.bgr(colours.OTHER_PERSON)
    assert tuple(pic[10, rank1_mid]) == (128, 128, 128)  # the image itself inside the border
    decided = render_ranked_list(paths[0], paths[1:], [True, False], size=(40, 20), border=3, accepted=[False, True])
    assert tuple(decided[1, rank1_mid]) == colours.bgr(colours.BEYOND)  # a missed match: red over blue
    assert tuple(decided[1, rank2_mid]) == colours.bgr(colours.WITHIN)  # a false match: green over orange
    assert tuple(decided[bar_row, rank2_mid]) == colours.bgr(colours.OTHER_PERSON)


# ----------------------------------------------------------------------------- checkpoint mode
@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    import torch

    from reid_srdl.core.checkpoint import save_model_file
    from reid_srdl.models import build_model

    torch.manual_seed(0)
    model = build_model("small_reid", 4, feature_dim=16)
    path = str(tmp_path_factory.mktemp("model") / "final.pt")
    save_model_file(model, path, task="reid", height=64, width=32)
    return path, model


def test_checkpoint_mode_extracts_evaluates_and_saves_features(tiny_market_root, tiny_model_file, tmp_path, capsys):
    from reid_srdl.config import DataConfig
    from reid_srdl.data import build_data
    from reid_srdl.inference.features import extract_features

    path, model = tiny_model_file
    feats_dir, out = tmp_path / "feats", tmp_path / "mq.json"
    args = [
        "--checkpoint",
        path,
        "--data-root",
        tiny_market_root,
        "--multi-query",
        "--workers",
        "0",
        "--save-features",
        str(feats_dir),
        "--json",
        str(out),
    ]
    assert cli.main(args) == 0
    # Independent path: the same network, the data layer's loaders at the trained size.
    data = build_data(DataConfig(root=tiny_market_root, synthetic=False, height=64, width=32, workers=0))
    model.eval()
    q, g, m = (extract_features(model, s.loader) for s in (data.query, data.gallery, data.multi_query))
    expected = evaluate_reid(
        q,
        g,
        data.query.pids,
        data.gallery.pids,
        data.query.camids,
        data.gallery.camids,
        multi_query=MultiQuery(m, data.multi_query.pids, data.multi_query.camids),
    ).to_dict()
    with open(out) as f:
        assert json.load(f) == pytest.approx(expected, abs=1e-6)
    saved = load_features(str(feats_dir / "query.npz"))
    assert np.allclose(saved.features, q, atol=1e-5) and list(saved.paths) == data.query.paths
    assert sorted(os.listdir(feats_dir)) == ["gallery.npz", "gt_bbox.npz", "query.npz"]
    # The saved files give the same numbers through the feature-file mode.
    again = tmp_path / "again.json"
    assert (
        cli.main(
            [
                "--query",
                str(feats_dir / "query.npz"),
                "--gallery",
                str(feats_dir / "gallery.npz"),
                "--multi-query",
                str(feats_dir / "gt_bbox.npz"),
                "--json",
                str(again),
            ]
        )
        == 0
    )
    with open(again) as f:
        assert json.load(f) == pytest.approx(expected, abs=1e-6)


def test_checkpoint_mode_errors(tiny_market_root, tiny_model_file, tmp_path, capsys):
    path, _ = tiny_model_file
    assert cli.main(["--checkpoint", str(tmp_path / "nothing.pt"), "--data-root", tiny_market_root]) == 2
    assert "model file not found" in capsys.readouterr().err
    assert (
        cli.main(["--checkpoint", path, "--data-root", str(tmp_path / "nowhere"), "--json", str(tmp_path / "x.json")])
        == 2
    )
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err and not os.path.exists(tmp_path / "x.json")
    with pytest.raises(SystemExit):
        cli.main(["--checkpoint", path])  # no --data-root
    with pytest.raises(SystemExit):
        cli.main(["--checkpoint", path, "--data-root", tiny_market_root, "--query", "q.npz"])


def test_checkpoint_mode_passes_the_fast_extraction_options(tiny_market_root, tiny_model_file, tmp_path, monkeypatch):
    import reid_srdl.inference.features as features

    seen = []
    original = features.extract_features

    def spy(model, loader, options):
        seen.append((options.fast, options.precision, options.progress))
        return original(model, loader, options)

    monkeypatch.setattr(features, "extract_features", spy)
    path, _ = tiny_model_file
    out = tmp_path / "fast.json"
    args = [
        "--checkpoint",
        path,
        "--data-root",
        tiny_market_root,
        "--workers",
        "0",
        "--fast",
        "--precision",
        "fp32",
        "--json",
        str(out),
    ]
    assert cli.main(args) == 0
    assert seen == [(True, "fp32", True), (True, "fp32", True)]  # query and gallery
    # fp32 with folding and channels-last: the same metrics as the exact path (to 1e-4 features).
    exact = tmp_path / "exact.json"
    assert (
        cli.main(["--checkpoint", path, "--data-root", tiny_market_root, "--workers", "0", "--json", str(exact)]) == 0
    )
    with open(out) as f, open(exact) as g:
        assert json.load(f) == pytest.approx(json.load(g), abs=1e-6)
    with pytest.raises(SystemExit):
        cli.main(["--query", "q.npz", "--gallery", "g.npz", "--fast"])
