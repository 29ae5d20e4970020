"""Export to ONNX / TorchScript: parity with PyTorch, stored image size, loading by the
search API, and the CLI's errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from reid_srdl.core.checkpoint import save_model_file
from reid_srdl.export import ExportError, export_onnx, export_torchscript, load_exported
from reid_srdl.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 32
pytestmark = pytest.mark.usefixtures("single_thread")


def trained_like_net(seed=0) -> nn.Module:
    """small_reid with BN statistics measured on random images, as after training."""
    torch.manual_seed(seed)
    net = build_model("small_reid", num_classes=5, feature_dim=16)
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 3, H, W))
    return net.eval()


def pytorch_features(net, images):
    with torch.inference_mode():
        return net(images)[1].numpy()


def test_onnx_runs_in_onnxruntime_with_any_batch_and_matches_pytorch(tmp_path):
    import onnx
    import onnxruntime

    net = trained_like_net()
    path = str(tmp_path / "m.onnx")
    export_onnx(net, path, H, W, {"task": "reid"})
    assert os.listdir(tmp_path) == ["m.onnx"]  # no temp file left behind
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch axis is dynamic (the export traced a batch of 2)
        images = torch.randn(batch, 3, H, W, generator=torch.Generator().manual_seed(batch))
        (got,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
        assert got.shape == (batch, 16)
        assert np.abs(got - pytorch_features(net, images)).max() <= 1e-4
    stored = json.loads({p.key: p.value for p in onnx.load(path).metadata_props}["reid_srdl"])
    assert (stored["height"], stored["width"], stored["feature_dim"], stored["task"]) == (H, W, 16, "reid")


def test_torchscript_round_trip_and_loaded_modules_return_no_logits(tmp_path):
    net = trained_like_net()
    images = torch.randn(3, 3, H, W)
    expected = pytorch_features(net, images)
    export_torchscript(net, str(tmp_path / "m.ts"), H, W)
    export_onnx(net, str(tmp_path / "m.onnx"), H, W)
    for name in ("m.ts", "m.onnx"):
        exported = load_exported(str(tmp_path / name))
        logits, feats = exported(images)
        assert logits is None
        assert (exported.meta["height"], exported.meta["width"]) == (H, W)
        assert np.abs(feats.numpy() - expected).max() <= 1e-4
    assert net.training is False


def test_searcher_indexes_images_with_an_exported_model_at_its_stored_size(tmp_path):
    from PIL import Image

    from reid_srdl.api import ReIDSearcher

    net = trained_like_net()
    export_onnx(net, str(tmp_path / "m.onnx"), H, W)
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (128, 64, 3), dtype=np.uint8)).save(paths[-1])
    exported = ReIDSearcher.from_images(str(tmp_path / "m.onnx"), paths)  # size from the file
    reference = ReIDSearcher.from_images(net, paths, height=H, width=W)
    assert np.abs(exported.features - reference.features).max() <= 1e-4
    hit = exported.search(paths[2], k=1)[0]
    assert hit.paths == [paths[2]]
    exported.save(str(tmp_path / "index.npz"))
    again = ReIDSearcher.load(str(tmp_path / "index.npz"), model=str(tmp_path / "m.onnx"))
    assert again.search(paths[3], k=1)[0].indices.tolist() == [3]


def test_a_file_that_is_not_an_export_is_refused_by_name(tmp_path):
    net = trained_like_net()
    save_model_file(net, str(tmp_path / "final.pt"), task="reid", height=H, width=W)
    with pytest.raises(ExportError, match="final.pt is not an exported reid_srdl embedding"):
        load_exported(str(tmp_path / "final.pt"))
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ExportError, match="cannot read exported model .*broken.onnx"):
        load_exported(str(bad))


def run_cli(*args):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "export.py"), *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_cli_exports_a_checkpoint_and_refuses_a_config_of_another_architecture(tmp_path, capsys):
    net = trained_like_net()
    checkpoint = str(tmp_path / "final.pt")
    save_model_file(net, checkpoint, task="reid", height=H, width=W)
    config = tmp_path / "other.yaml"
    config.write_text("model:\n  name: small_reid\n  feature_dim: 32\n")
    out = str(tmp_path / "m.onnx")

    bad = run_cli(checkpoint, "--config", str(config), "--onnx", out)
    assert bad.returncode == 2
    assert "final.pt" in bad.stderr and "other.yaml" in bad.stderr and "model.feature_dim=32" in bad.stderr
    assert "Traceback" not in bad.stderr and not os.path.exists(out)

    # The success path in-process (one torch import less than a second subprocess).
    from reid_srdl.cli import export as export_cli

    assert (
        export_cli.main([checkpoint, "--config", str(config), "model.feature_dim=16", "--onnx", out, "--verify"]) == 0
    )
    printed = capsys.readouterr().out
    assert f"({H}x{W}, 16-d features)" in printed
    assert float(printed.split("max |exported - PyTorch| = ")[1]) <= 1e-4
    images = torch.randn(2, 3, H, W)
    assert np.abs(load_exported(out)(images)[1].numpy() - pytorch_features(net, images)).max() <= 1e-4
