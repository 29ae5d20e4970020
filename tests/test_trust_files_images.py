"""Decompression bombs are refused with one line wherever images are decoded, before their
pixels are: search build (with and without --skip-unreadable), the pre-flight check, --html
thumbnails, uploads to the web service.  The bomb is a real 12,000 x 12,000 PNG of 140 KB
(144 megapixels: PIL only warns and decodes it) and a header declaring 20,000 x 20,000 (PIL
raises its own DecompressionBombError, which is no OSError); one test decodes under an
address-space cap that the decoded image would not fit in."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from tiny_runs import save_tiny_model
from trust_files_helpers import last_json_line, run_limited, write_png_bomb
from trust_helpers import one_line

from reid_srdl.cli import search as search_cli
from reid_srdl.core import limits
from reid_srdl.core.images import ImageRejected, check_image, decode_rgb
from reid_srdl.data.indexed import ImageReadError, check_image_header, read_rgb_image

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    honest, declared = str(folder / "bomb.png"), str(folder / "huge.png")
    assert write_png_bomb(honest, 12_000) < 200_000
    write_png_bomb(declared, 20_000, decodable=False)
    return {"honest": honest, "declared": declared}


@pytest.fixture
def crops(tmp_path):
    folder = tmp_path / "crops"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(folder / f"crop{i}.png")
    return folder


def test_the_decoder_refuses_both_bombs_by_their_size(bombs):
    expected = {
        bombs["honest"]: f"12000 x 12000 = {144_000_000:,} pixels is over the limit of {limits.MAX_IMAGE_PIXELS:,}",
        # PIL itself raises above twice its own limit, before we see the size
        bombs["declared"]: f"it declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, over the limit",
    }
    for path, needle in expected.items():
        for decode in (decode_rgb, check_image):
            with pytest.raises(ImageRejected) as e:
                decode(path)
            assert e.value.too_large and needle in e.value.reason, e.value.reason
        with pytest.raises(ImageReadError) as e:
            read_rgb_image(path)
        assert one_line(str(e.value)) == f"cannot read image '{path}': {e.value.args[0].split(': ', 1)[1]}"
        assert needle in str(e.value)


def test_the_pre_flight_check_names_the_bomb(bombs):
    for path in bombs.values():
        with pytest.raises(ImageReadError) as e:
            check_image_header(path)
        line = one_line(str(e.value))
        assert path in line and "decompression bomb" in line


@pytest.mark.slow
def test_decoding_the_bomb_under_a_memory_cap_refuses_it_instead(bombs):
    # Decoded, the honest bomb takes 144 MB as greyscale and 432 MB as RGB: over the cap.
    code = f"""
        import json
        from reid_srdl.core.images import ImageRejected, decode_rgb
        from PIL import Image
        limit_address_space(0.25)
        result = {{}}
        try:
            decode_rgb({bombs["honest"]!r})
            result["ours"] = "decoded"
        except ImageRejected as e:
            result["ours"] = e.reason
        try:  # PIL alone, as the code before this check did
            with Image.open({bombs["honest"]!r}) as im:
                im.convert("RGB")
            result["pil"] = "decoded"
        except MemoryError:
            result["pil"] = "MemoryError"
        print(json.dumps(result))
    """
    done = run_limited(code)
    assert done.returncode == 0, done.stderr
    result = last_json_line(done.stdout)
    assert "over the limit" in result["ours"] and result["pil"] == "MemoryError"


def test_search_build_refuses_or_skips_the_bomb(bombs, crops, tmp_path, capsys):
    model = save_tiny_model(tmp_path / "final.pt")
    shutil.copy(bombs["honest"], crops / "zz_bomb.png")
    out = tmp_path / "g.npz"
    assert search_cli.main(["build", "--model", model, "--images", str(crops), "--out", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "zz_bomb.png" in line and "decompression bomb" in line and not out.exists()

    assert (
        search_cli.main(["build", "--model", model, "--images", str(crops), "--out", str(out), "--skip-unreadable"])
        == 0
    )
    captured = capsys.readouterr()
    skipped = [line for line in captured.err.splitlines() if "zz_bomb.png" in line]
    assert len(skipped) == 1 and "over the limit" in skipped[0] and "Traceback" not in captured.err
    assert "3 images" in captured.out and "skipped 1 unreadable" in captured.out


def test_html_thumbnails_leave_out_a_bomb_with_one_warning(bombs, crops, tmp_path, capsys):
    model = save_tiny_model(tmp_path / "final.pt")
    gallery = tmp_path / "g.npz"
    assert search_cli.main(["build", "--model", model, "--images", str(crops), "--out", str(gallery)]) == 0
    shutil.copy(bombs["declared"], crops / "crop2.png")  # a gallery image replaced after the build
    page = tmp_path / "hits.html"
    query = str(crops / "crop0.png")
    assert (
        search_cli.main(["query", query, "--gallery", str(gallery), "--model", model, "--k", "3", "--html", str(page)])
        == 0
    )
    warning = one_line(capsys.readouterr().err)  # progress bars are redrawn and cleared
    assert "no thumbnail for" in warning and "crop2.png" in warning and "over the limit" in warning
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 3 and html.count("(no image)") == 1  # query + 2 of 3 hits


def test_uploads_name_the_upload_never_a_bytes_object(bombs, crops, tmp_path):
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from reid_srdl.search import ReIDSearcher
    from reid_srdl.serve.app import create_app

    model = save_tiny_model(tmp_path / "final.pt")
    paths = sorted(str(p) for p in crops.iterdir())
    searcher = ReIDSearcher.from_images(model, paths)
    searcher.save(str(tmp_path / "g.npz"))
    app = create_app(searcher, str(tmp_path / "g.npz"), None, max_upload_bytes=1 << 20)
    client = TestClient(app, base_url="http://127.0.0.1:8000")  # a Host the server answers to
    for name, data, status, needle in (
        ("bomb.png", open(bombs["honest"], "rb").read(), 413, "pixels is over the limit"),
        ("huge.png", open(bombs["declared"], "rb").read(), 413, "over the limit"),
        ("notes.txt", b"hello, this is text", 415, "not a readable image (cannot identify image file"),
    ):
        reply = client.post("/search", files={"file": (name, data, "image/png")})
        text = json.dumps(reply.json())
        assert reply.status_code == status and needle in text and name in text, text
        assert "BytesIO" not in text and "0x" not in text
    good = io.BytesIO()
    Image.open(paths[0]).save(good, format="PNG")
    assert client.post("/search", files={"file": ("q.png", good.getvalue(), "image/png")}).status_code == 200
