"""README.md stays a five-minute read, and no relative link of README.md or docs/*.md is broken."""

import glob
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_README_LINES = 150
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def relative_links(text):
    """The targets of the Markdown links outside code blocks that point into the repository."""
    text = FENCE.sub("", text)
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s), mailto, ...; an anchor on the same page
        yield target.split("#", 1)[0]


def test_link_finder_on_a_hand_written_page():
    page = (
        "[a](docs/a.md#x) ![pic](img/p.png) [web](https://example.org/x.md) [here](#top)\n"
        '```\n[not a link](inside/code.md)\n```\n[b](../b.md "title")\n'
    )
    assert list(relative_links(page)) == ["docs/a.md", "img/p.png", "../b.md"]


def test_readme_is_short():
    with open(os.path.join(REPO, "README.md")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move details to docs/"


PAGES = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md")))]


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_point_at_files(page):
    path = os.path.join(REPO, page)
    with open(path) as f:
        text = f.read()
    targets = list(relative_links(text))
    if page == "README.md":
        assert len(targets) >= 10  # the README sends readers on: docs, experiments
    broken = [
        target
        for target in targets
        if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), target)))
    ]
    assert broken == [], f"{page}: links to missing files: {broken}"
