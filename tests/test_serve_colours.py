"""The colours of a ranked list mean the same in the search page, the HTML report and
eval_reid's pictures: the border is the decision, a bar under the crop the ground truth."""

import re

import cv2
import numpy as np
import pytest

from reid_srdl.evaluation import colours
from reid_srdl.evaluation.plots import render_ranked_list
from reid_srdl.search.report import results_html
from reid_srdl.search.searcher import SearchResult

# CSS selector of each meaning, in the page and in the report.
MEANINGS = {
    "figure.within img": ("border-color", colours.WITHIN),
    "figure.beyond img": ("border-color", colours.BEYOND),
    "figure img": ("border", colours.NO_DECISION),
    ".truth.same": ("background", colours.SAME_PERSON),
    ".truth.other": ("background", colours.OTHER_PERSON),
}


def css_rules(css: str) -> dict:
    """selector -> declarations, from a flat stylesheet."""
    return {sel.strip(): body for sel, body in re.findall(r"([^{}]+)\{([^}]*)\}", css)}


def assert_meanings(css: str) -> None:
    rules = css_rules(css)
    for selector, (prop, colour) in MEANINGS.items():
        value = re.search(rf"(?:^|;)\s*{prop}:\s*([^;]+)", rules[selector]).group(1)
        assert colour in value, (selector, value, colour)


def test_the_page_uses_the_shared_meanings():
    pytest.importorskip("fastapi", reason="the page module is plain, but the serve package imports it")
    from reid_srdl.serve.page import PAGE_CSS, PAGE_HTML

    assert_meanings(PAGE_CSS)
    legend = re.search(r'<div id="legend">(.*?)</div>', PAGE_HTML).group(1)
    texts = re.findall(r'<span class="([a-z ]+)"></span>([^<]+)</span>', legend)
    assert texts == [
        ("swatch within", "border: within the threshold (match)"),
        ("swatch beyond", "border: beyond the threshold"),
        ("swatch", "border: no threshold"),
        ("bar same", "bar: same person (both identities known)"),
        ("bar other", "bar: another person"),
    ]
    rules = css_rules(PAGE_CSS)
    assert colours.WITHIN in rules[".swatch.within"] and colours.SAME_PERSON in rules[".bar.same"]


def test_the_report_uses_the_shared_meanings(tmp_path):
    crops = []
    for i in range(3):
        crops.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(crops[-1], np.full((16, 8, 3), 50 * i, dtype=np.uint8))
    result = SearchResult(
        distances=np.array([0.1, 0.2, 0.9]),
        pids=np.array([7, 8, -1]),
        camids=np.array([0, 1, 2]),
        paths=crops,
        indices=np.array([0, 1, 2]),
        decision="match",
        threshold=0.5,
        threshold_source="given",
        accepted=np.array([True, True, False]),
    )
    page = results_html([(crops[0], result)], query_pids=[7])
    assert_meanings(re.search(r"<style>(.*)</style>", page, re.S).group(1))
    figures = re.findall(r'<figure class="([a-z]*)">.*?(?:<div class="truth ([a-z]+)"></div>)?<figcaption>', page)
    # query; pid 7 within (same person), pid 8 within (another: a false match), pid -1 beyond (unknown: no bar)
    assert figures == [("probe", ""), ("within", "same"), ("within", "other"), ("beyond", "")]
    assert "border: within the threshold (match)" in page and "bar: another person" in page
    no_truth = results_html([(crops[0], result)])
    assert 'class="truth' not in no_truth


def test_eval_reids_pictures_use_the_shared_meanings(tmp_path):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], np.full((20, 10, 3), 128, dtype=np.uint8))
    pic = render_ranked_list(paths[0], paths[1:], [False, True], size=(40, 20), border=3, accepted=[True, False])
    tile_w, gap = 26, 6
    mids = [tile_w + 2 * gap + tile_w // 2, 2 * tile_w + 3 * gap + tile_w // 2]
    assert [tuple(pic[1, x]) for x in mids] == [colours.bgr(colours.WITHIN), colours.bgr(colours.BEYOND)]
    assert [tuple(pic[49, x]) for x in mids] == [colours.bgr(colours.OTHER_PERSON), colours.bgr(colours.SAME_PERSON)]
    legend = pic[40 + 6 + 2 + 6 + 18 :]  # the rows under the tiles, wrapped to the picture's width
    assert legend.shape[0] % 18 == 0 and legend.shape[0] > 18
    present = {tuple(int(v) for v in px) for px in legend.reshape(-1, 3)}
    for colour in (colours.WITHIN, colours.BEYOND, colours.SAME_PERSON, colours.OTHER_PERSON):
        assert colours.bgr(colour) in present  # each colour the picture uses is in its legend
    without = render_ranked_list(paths[0], paths[1:], [False, True], size=(40, 20), border=3)
    assert without.shape[0] < pic.shape[0]  # no decisions: the legend has fewer keys (grey only, no green/red)
