"""A self-contained HTML page of search results: each query, its ranked crops with distances,
and the match decision.  Crops are embedded as small JPEG data URIs, so the page can be
opened or mailed anywhere without the gallery folders."""

import base64
import html
import io
import logging
from typing import Optional, Sequence, Tuple

from reid_srdl.core.images import ImageRejected, decode_rgb
from reid_srdl.search.gallery import camera_name
from reid_srdl.search.results import SearchResult
from reid_srdl.search.stores.records import format_time

THUMB_HEIGHT = 128
logger = logging.getLogger(__name__)

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
.query { margin-bottom: 2em; border-bottom: 1px solid #ddd; padding-bottom: 1em; }
.row { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
figure { margin: 0; text-align: center; font-size: 12px; }
figure img { height: 128px; border: 4px solid #aaa; display: block; }
figure.within img { border-color: #2a2; } figure.beyond img { border-color: #c33; }
.decision { font-weight: bold; font-size: 18px; margin: .3em 0; }
.match { color: #2a2; } .nomatch { color: #c33; } .none { color: #666; }
.note { color: #666; font-size: 12px; }
"""


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


def _figure(path: Optional[str], caption: str, css: str = "") -> str:
    uri = thumbnail_data_uri(path) if path else None
    img = f'<img src="{uri}" alt="">' if uri else '<div class="note">(no image)</div>'
    return f'<figure class="{css}">{img}<figcaption>{caption}</figcaption></figure>'


def decision_html(result: SearchResult) -> str:
    if result.decision is None:
        return '<div class="decision none">no decision (no threshold given)</div>'
    css = "match" if result.decision == "match" else "nomatch"
    return (
        f'<div class="decision {css}">{html.escape(result.decision)}: nearest distance '
        f"{result.nearest_distance:.3f} vs threshold {result.threshold:.3f}</div>"
        f'<div class="note">threshold: {html.escape(result.threshold_source or "")}</div>'
    )


def results_html(queries: Sequence[Tuple[str, SearchResult]], title: str = "reid_srdl search", note: str = "") -> str:
    """The page for ``(query image path, result)`` pairs."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    for query_path, result in queries:
        parts.append(f'<div class="query"><h2>{html.escape(str(query_path))}</h2>')
        parts.append(f'{decision_html(result)}<div class="row">')
        parts.append(_figure(query_path, "query"))
        for r in range(len(result)):
            item = result.items[r] if result.items else None
            cam = (item.camera if item is not None else camera_name(int(result.camids[r]))) or "camera ?"
            when = format_time(item.timestamp) if item is not None and item.timestamp is not None else ""
            pid = int(result.pids[r])
            caption = f"#{r + 1} d={result.distances[r]:.3f}<br>pid {pid if pid >= 0 else '?'}, {html.escape(cam)}"
            if when:
                caption += f"<br>{html.escape(when[:19].replace('T', ' '))} UTC"
            css = "" if result.accepted is None else ("within" if result.accepted[r] else "beyond")
            parts.append(_figure(None if result.paths is None else result.paths[r], caption, css))
        parts.append("</div></div>")
    parts.append("</body></html>")
    return "".join(parts)
