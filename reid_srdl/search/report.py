"""A self-contained HTML page of search results: each query, its ranked crops with distances,
and the match decision; colours as in :mod:`reid_srdl.evaluation.colours` (border: decision,
bar: ground truth when known), with a legend.  Crops are embedded as small JPEG data URIs,
so the page can be opened or mailed anywhere without the gallery folders."""

import base64
import html
import io
import logging
from typing import Optional, Sequence, Tuple

from reid_srdl.core.images import ImageRejected, decode_rgb
from reid_srdl.evaluation import colours
from reid_srdl.search.gallery import camera_name
from reid_srdl.search.results import SearchResult
from reid_srdl.search.stores.records import format_time

THUMB_HEIGHT = 128
logger = logging.getLogger(__name__)

_STYLE = f"""
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
.query {{ margin-bottom: 2em; border-bottom: 1px solid #ddd; padding-bottom: 1em; }}
.row {{ display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }}
figure {{ margin: 0; text-align: center; font-size: 12px; }}
figure img {{ height: 128px; border: 4px solid {colours.NO_DECISION}; display: block; }}
figure.probe img {{ border-color: {colours.QUERY}; }}
figure.within img {{ border-color: {colours.WITHIN}; }} figure.beyond img {{ border-color: {colours.BEYOND}; }}
.truth {{ height: 6px; margin-top: 2px; }}
.truth.same {{ background: {colours.SAME_PERSON}; }} .truth.other {{ background: {colours.OTHER_PERSON}; }}
.legend {{ font-size: 12px; color: #444; margin-bottom: 1em; }} .key {{ margin-right: 1.2em; }}
.swatch {{ display: inline-block; width: 12px; height: 12px; border: 3px solid; vertical-align: middle; }}
.bar {{ display: inline-block; width: 18px; height: 6px; vertical-align: middle; }}
.decision {{ font-weight: bold; font-size: 18px; margin: .3em 0; }}
.match {{ color: {colours.WITHIN}; }} .nomatch {{ color: {colours.BEYOND}; }} .none {{ color: #666; }}
.note {{ color: #666; font-size: 12px; }}
"""


def legend_html() -> str:
    """What the colours mean (the same as in the search page and eval_reid's pictures)."""
    keys = []
    for kind, colour, text in colours.LEGEND:
        mark = (
            f'<span class="swatch" style="border-color:{colour}"></span>'
            if kind == "border"
            else f'<span class="bar" style="background:{colour}"></span>'
        )
        keys.append(f'<span class="key">{mark} {kind}: {html.escape(text)}</span>')
    return '<div class="legend">' + "".join(keys) + "</div>"


def thumbnail_data_uri(path: str, height: int = THUMB_HEIGHT) -> Optional[str]:
    """A JPEG data URI of the image at ``path`` scaled to ``height``; None (and one warning
    line naming the file) if it cannot be read or is over ``limits.MAX_IMAGE_PIXELS``."""
    try:
        im = decode_rgb(path)
    except (ImageRejected, OSError) as e:
        logger.warning("no thumbnail for %s: %s", path, e.reason if isinstance(e, ImageRejected) else e.strerror or e)
        return None
    width = max(1, round(im.width * height / max(1, im.height)))
    buf = io.BytesIO()
    im.resize((width, height)).save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(path: Optional[str], caption: str, css: str = "", same_person: Optional[bool] = None) -> str:
    uri = thumbnail_data_uri(path) if path else None
    img = f'<img src="{uri}" alt="">' if uri else '<div class="note">(no image)</div>'
    bar = "" if same_person is None else f'<div class="truth {"same" if same_person else "other"}"></div>'
    return f'<figure class="{css}">{img}{bar}<figcaption>{caption}</figcaption></figure>'


def decision_html(result: SearchResult) -> str:
    if result.decision is None:
        return '<div class="decision none">no decision (no threshold given)</div>'
    css = "match" if result.decision == "match" else "nomatch"
    return (
        f'<div class="decision {css}">{html.escape(result.decision)}: nearest distance '
        f"{result.nearest_distance:.3f} vs threshold {result.threshold:.3f}</div>"
        f'<div class="note">threshold: {html.escape(result.threshold_source or "")}</div>'
    )


def results_html(
    queries: Sequence[Tuple[str, SearchResult]],
    title: str = "reid_srdl search",
    note: str = "",
    query_pids: Optional[Sequence[int]] = None,
) -> str:
    """The page for ``(query image path, result)`` pairs; with ``query_pids`` (-1: unknown)
    each hit of known pid gets its ground-truth bar."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{legend_html()}"
    ]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    for q, (query_path, result) in enumerate(queries):
        query_pid = -1 if query_pids is None else int(query_pids[q])
        parts.append(f'<div class="query"><h2>{html.escape(str(query_path))}</h2>')
        parts.append(f'{decision_html(result)}<div class="row">')
        parts.append(_figure(query_path, "query", "probe"))
        for r in range(len(result)):
            item = result.items[r] if result.items else None
            cam = (item.camera if item is not None else camera_name(int(result.camids[r]))) or "camera ?"
            when = format_time(item.timestamp) if item is not None and item.timestamp is not None else ""
            pid = int(result.pids[r])
            caption = f"#{r + 1} d={result.distances[r]:.3f}<br>pid {pid if pid >= 0 else '?'}, {html.escape(cam)}"
            if when:
                caption += f"<br>{html.escape(when[:19].replace('T', ' '))} UTC"
            css = "" if result.accepted is None else ("within" if result.accepted[r] else "beyond")
            same = None if query_pid < 0 or pid < 0 else pid == query_pid
            parts.append(_figure(None if result.paths is None else result.paths[r], caption, css, same))
        parts.append("</div></div>")
    parts.append("</body></html>")
    return "".join(parts)
