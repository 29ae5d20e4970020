"""A TorchScript program loads only when asked for by name (a ``.ts`` file name or
--trust-torchscript / trust_torchscript=True), never because of what a file contains.

The payload is a real TorchScript embedding (with the description reid-export stores)
whose forward touches a marker file (``torch.from_file(marker, shared=True)`` creates it):
named ``.pt`` it is refused at every entry point and the marker never appears; named
``.ts``, or with the flag, it loads and runs (the marker appears: the payload is live)."""

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
from trust_helpers import one_line

from reid_srdl.cli import search as search_cli
from reid_srdl.cli import serve as serve_cli
from reid_srdl.export import TORCHSCRIPT_EXTRA, ExportError
from reid_srdl.search import ReIDSearcher

pytestmark = pytest.mark.usefixtures("single_thread")
H, W, D = 32, 16, 4


class TouchesMarker(torch.nn.Module):
    """An embedding (images -> (B, 4) features) whose forward creates ``marker``."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        touched = torch.from_file(self.marker, True, 1, dtype=torch.uint8)
        return images.mean(dim=(2, 3)).repeat(1, 2)[:, :4] + touched.float().sum() * 0


@pytest.fixture
def setup(tmp_path):
    from PIL import Image

    marker = tmp_path / "PAYLOAD_RAN"
    program = tmp_path / "model.pt"
    description = {"format": "reid_srdl.embedding/1", "height": H, "width": W, "in_channels": 3, "feature_dim": D}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated and says so
        scripted = torch.jit.script(TouchesMarker(str(marker)))
        torch.jit.save(scripted, str(program), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(description)})
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(images / f"{i}.png")
    gallery = tmp_path / "gallery.npz"
    ReIDSearcher(rng.normal(size=(3, D)).astype(np.float32), [0, 1, 2], [0, 0, 1]).save(str(gallery))
    return {"marker": marker, "program": str(program), "images": str(images), "gallery": str(gallery), "tmp": tmp_path}


def assert_refused_by_name(text: str, marker, path: str) -> None:
    line = one_line(text)
    assert not marker.exists(), "the TorchScript program ran"
    assert f"refusing to load {path}: it is a TorchScript program" in line, line
    assert "naming it *.ts or passing --trust-torchscript" in line, line


def test_named_pt_it_is_refused_by_the_search_cli(setup, capsys):
    out = setup["tmp"] / "g.npz"
    code = search_cli.main(["build", "--model", setup["program"], "--images", setup["images"], "--out", str(out)])
    assert code == 2 and not out.exists()
    assert_refused_by_name(capsys.readouterr().err, setup["marker"], setup["program"])
    code = search_cli.main(
        ["query", os.path.join(setup["images"], "0.png"), "--gallery", setup["gallery"], "--model", setup["program"]]
    )
    assert code == 2
    assert_refused_by_name(capsys.readouterr().err, setup["marker"], setup["program"])


def test_named_pt_it_is_refused_by_the_server(setup, capsys, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, **kw: served.append(server.config.app))
    code = serve_cli.main(["--gallery", setup["gallery"], "--model", setup["program"], "--port", "0"])
    assert code == 2 and not served
    assert_refused_by_name(capsys.readouterr().err, setup["marker"], setup["program"])


def test_named_pt_it_is_refused_by_the_python_api(setup):
    paths = sorted(os.path.join(setup["images"], n) for n in os.listdir(setup["images"]))
    with pytest.raises(ExportError) as e:
        ReIDSearcher.from_images(setup["program"], paths)
    assert_refused_by_name(str(e.value), setup["marker"], setup["program"])
    with pytest.raises(ExportError) as e:
        ReIDSearcher.load(setup["gallery"], model=setup["program"], allow_mismatch=True)
    assert_refused_by_name(str(e.value), setup["marker"], setup["program"])


def test_named_ts_or_trusted_it_loads_and_runs(setup, capsys, monkeypatch):
    named = str(setup["tmp"] / "model.ts")
    shutil.copy(setup["program"], named)
    paths = sorted(os.path.join(setup["images"], n) for n in os.listdir(setup["images"]))
    searcher = ReIDSearcher.from_images(named, paths)
    assert setup["marker"].exists()  # the payload is a live program: asked for by name, it ran
    # Its features are the mean colour per channel, as the program computes them.
    expected = []
    from PIL import Image

    for p in paths:
        image = np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255
        expected.append(((image - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).mean(axis=(0, 1)))
    expected = np.concatenate([np.array(expected), np.array(expected)[:, :1]], axis=1)
    assert np.abs(searcher.features - expected).max() < 1e-4
    setup["marker"].unlink()

    out = setup["tmp"] / "g.npz"
    code = search_cli.main(
        ["build", "--model", setup["program"], "--images", setup["images"], "--out", str(out), "--trust-torchscript"]
    )
    assert code == 0 and out.exists() and setup["marker"].exists()
    setup["marker"].unlink()
    assert ReIDSearcher.load(str(out), model=setup["program"], trust_torchscript=True).dim == D

    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, **kw: served.append(server.config.app))
    assert serve_cli.main(["--gallery", str(out), "--model", named, "--port", "0"]) == 0 and served
