"""Pictures of an evaluation: the CMC curve, ranked lists (query + top-k gallery images) and
the open-set distance distributions.

All are written atomically (PNG bytes rendered in memory, then one temp-file rename).  The
curves use matplotlib's Agg canvas directly, so no pyplot state or GUI backend is touched;
ranked lists are composed with OpenCV.
"""

import io
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from reid_srdl.core.arrays import EvaluationInputError
from reid_srdl.core.files import write_bytes_atomic
from reid_srdl.evaluation import colours

# BGR colours for OpenCV; what they mean is in reid_srdl.evaluation.colours (the search page
# and the HTML report use the same ones).
SAME_COLOUR = colours.bgr(colours.SAME_PERSON)  # bar under a tile: same identity as the query
OTHER_COLOUR = colours.bgr(colours.OTHER_PERSON)  # bar: another identity (or a distractor)
QUERY_COLOUR = colours.bgr(colours.QUERY)
BACKGROUND = (255, 255, 255)
BAR_HEIGHT = 6


def plot_cmc(
    curves: Union[np.ndarray, Mapping[str, np.ndarray]],
    path: str,
    title: str = "CMC",
    max_rank: Optional[int] = None,
) -> None:
    """Write a CMC curve PNG: one curve (an array) or several (label -> array).

    Values are fractions in [0, 1] and are shown in percent, rank on the x axis from 1.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(curves, Mapping):
        curves = {"": curves}
    if not curves:
        raise EvaluationInputError("plot_cmc: no curve given")
    fig = Figure(figsize=(5, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, cmc in curves.items():
        cmc = np.asarray(cmc, dtype=np.float64).reshape(-1)
        if max_rank is not None:
            cmc = cmc[:max_rank]
        ranks = np.arange(1, len(cmc) + 1)
        ax.plot(ranks, 100 * cmc, marker="." if len(cmc) <= 50 else None, label=label or None)
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_title(title)
    ax.set_ylim(0, 100.5)
    ax.set_xlim(left=1)
    ax.grid(True, alpha=0.3)
    if any(curves):
        ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(path, buf.getvalue())


def _read_image(path: str, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    from reid_srdl.core.images import ImageRejected, check_image

    try:  # OpenCV decodes up to a gigapixel: the header is checked against our limit first
        check_image(str(path))
    except (ImageRejected, OSError) as e:
        reason = e.reason if isinstance(e, ImageRejected) else "missing or not an image"
        raise EvaluationInputError(f"cannot read image {path} ({reason}) for the ranked list") from None
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise EvaluationInputError(f"cannot read image {path} (missing or not an image) for the ranked list")
    height, width = size
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


def _tile(img: np.ndarray, colour, border: int, caption: str, bar=BACKGROUND) -> np.ndarray:
    import cv2

    framed = cv2.copyMakeBorder(img, border, border, border, border, cv2.BORDER_CONSTANT, value=colour)
    under = np.full((2 + BAR_HEIGHT, framed.shape[1], 3), BACKGROUND, dtype=np.uint8)
    under[2:] = bar
    pad = np.full((18, framed.shape[1], 3), BACKGROUND, dtype=np.uint8)
    cv2.putText(pad, caption, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([framed, under, pad])


def _legend(width: int, used) -> np.ndarray:
    """Rows naming the colours the picture uses (``used``: entries of colours.LEGEND), wrapped
    to ``width`` so that a short list still shows every key."""
    import cv2

    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    rows, row, x = [], None, width
    for kind, colour, text in used:
        needed = 18 + cv2.getTextSize(text, font, scale, 1)[0][0] + 12
        if x + needed > width and x > 2:  # a new row (a key wider than the picture gets its own)
            row, x = np.full((18, width, 3), BACKGROUND, dtype=np.uint8), 2
            rows.append(row)
        if kind == "border":
            cv2.rectangle(row, (x, 4), (x + 10, 14), colours.bgr(colour), 2)
        else:
            cv2.rectangle(row, (x, 7), (x + 14, 12), colours.bgr(colour), -1)
        cv2.putText(row, text, (x + 18, 13), font, scale, (60, 60, 60), 1, cv2.LINE_AA)
        x += needed
    return np.vstack(rows) if rows else np.zeros((0, width, 3), dtype=np.uint8)


def render_ranked_list(
    query_path: str,
    gallery_paths: Sequence[str],
    is_match: Sequence[bool],
    distances: Optional[Sequence[float]] = None,
    size: Tuple[int, int] = (128, 64),
    border: int = 4,
    accepted: Optional[Sequence[bool]] = None,
) -> np.ndarray:
    """The picture (BGR uint8) of a query followed by its ranked gallery images, and a legend.

    Colours as everywhere (:mod:`reid_srdl.evaluation.colours`): a tile's border is the
    decision -- green/red within/beyond the threshold when ``accepted`` is given, grey
    without one; the bar under it is the ground truth -- blue when ``is_match`` (same
    identity), orange otherwise.  The caption is the rank and, when given, the distance.
    """
    if len(gallery_paths) != len(is_match):
        raise EvaluationInputError(f"ranked list: {len(gallery_paths)} gallery images but {len(is_match)} match flags")
    if accepted is not None and len(accepted) != len(gallery_paths):
        raise EvaluationInputError(f"ranked list: {len(gallery_paths)} gallery images but {len(accepted)} decisions")
    gap = np.full((size[0] + 2 * border + 2 + BAR_HEIGHT + 18, 6, 3), BACKGROUND, dtype=np.uint8)
    tiles = [_tile(_read_image(query_path, size), QUERY_COLOUR, border, "query"), gap, gap]
    shown = set()
    for rank, (path, match) in enumerate(zip(gallery_paths, is_match), start=1):
        caption = f"{rank}" if distances is None else f"{rank}: {distances[rank - 1]:.2f}"
        decision = colours.border_colour(None if accepted is None else bool(accepted[rank - 1]))
        truth = colours.truth_colour(bool(match))
        shown.update((decision, truth))
        tiles.append(_tile(_read_image(path, size), colours.bgr(decision), border, caption, colours.bgr(truth)))
        tiles.append(gap)
    picture = np.hstack(tiles[:-1] if len(tiles) > 3 else tiles)
    used = [entry for entry in colours.LEGEND if entry[1] in shown]
    return np.vstack([picture, _legend(picture.shape[1], used)])


def save_ranked_list(
    path: str,
    query_path: str,
    gallery_paths: Sequence[str],
    is_match: Sequence[bool],
    distances: Optional[Sequence[float]] = None,
    size: Tuple[int, int] = (128, 64),
    accepted: Optional[Sequence[bool]] = None,
) -> None:
    """Write :func:`render_ranked_list` as a PNG file, atomically."""
    import cv2

    picture = render_ranked_list(query_path, gallery_paths, is_match, distances, size, accepted=accepted)
    ok, png = cv2.imencode(".png", picture)
    if not ok:  # OpenCV reports failure by a flag, not an exception
        raise EvaluationInputError(f"could not encode the ranked list for {query_path} as PNG")
    write_bytes_atomic(path, png.tobytes())


def plot_open_set(
    genuine: np.ndarray,
    impostor: np.ndarray,
    thresholds: Mapping[str, float],
    path: str,
    title: str = "Open-set distances",
    note: str = "",
) -> None:
    """Write a PNG of the genuine and impostor distance distributions with thresholds.

    ``genuine``: distances of (query, true match) pairs; ``impostor``: per query, the
    distance to the nearest other identity (see :mod:`reid_srdl.evaluation.open_set`);
    ``thresholds``: label -> distance, drawn as vertical lines (e.g. ``{"FAR 1%": 0.83}``);
    ``note``: a small line under the axes (machine, date, commit of a figure in the docs).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    genuine = np.asarray(genuine, dtype=np.float64).reshape(-1)
    impostor = np.asarray(impostor, dtype=np.float64).reshape(-1)
    if genuine.size == 0 or impostor.size == 0:
        raise EvaluationInputError("plot_open_set: needs at least one genuine and one impostor distance")
    fig = Figure(figsize=(6, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # One set of bins for both, so that the two densities are comparable bar by bar.
    bins = np.histogram_bin_edges(np.concatenate([genuine, impostor]), bins=40)
    ax.hist(
        genuine,
        bins=bins,
        density=True,
        alpha=0.55,
        color="tab:green",
        label=f"genuine: query to a true match ({genuine.size})",
    )
    ax.hist(
        impostor,
        bins=bins,
        density=True,
        alpha=0.55,
        color="tab:red",
        label=f"impostor: query to the nearest other identity ({impostor.size})",
    )
    styles = ("--", "-.", ":", (0, (5, 1)))
    for i, (label, tau) in enumerate(thresholds.items()):
        if np.isfinite(tau):
            ax.axvline(
                tau,
                color="black",
                linestyle=styles[i % len(styles)],
                linewidth=1.2,
                label=f"threshold {label}: {tau:.3f}",
            )
    ax.set_xlabel("L2 distance (accept a match when distance <= threshold)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6, color="0.4")
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(path, buf.getvalue())
