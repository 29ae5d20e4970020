"""What the colours of a ranked list mean, in every picture the project draws: the search
page (``reid_srdl.serve``), the HTML report (``tools/search.py query --html``) and the
ranked-list pictures (``tools/eval_reid.py --visualize``).

* A gallery crop's **border is the decision**: green when its distance is within the
  threshold (the search says "match"), red beyond it, grey when there is no threshold.
* A **bar under the crop is the ground truth**, drawn only when both identities are known:
  blue for the same person as the query, orange for another (a distractor is another).

Two channels, so a wrong decision is visible at a glance: a green border over an orange bar
is a false match, a red border over a blue bar a missed one.
"""

from typing import Optional, Tuple

WITHIN = "#22aa22"
BEYOND = "#cc3333"
NO_DECISION = "#aaaaaa"
SAME_PERSON = "#1f6fd1"
OTHER_PERSON = "#f28e1c"
QUERY = "#333333"

LEGEND = (
    ("border", WITHIN, "within the threshold (match)"),
    ("border", BEYOND, "beyond the threshold"),
    ("border", NO_DECISION, "no threshold"),
    ("bar", SAME_PERSON, "same person (both identities known)"),
    ("bar", OTHER_PERSON, "another person"),
)


def border_colour(accepted: Optional[bool]) -> str:
    """The border of a crop: the decision (None: no threshold)."""
    if accepted is None:
        return NO_DECISION
    return WITHIN if accepted else BEYOND


def truth_colour(same_person: Optional[bool]) -> Optional[str]:
    """The bar under a crop: the ground truth (None: unknown, no bar)."""
    if same_person is None:
        return None
    return SAME_PERSON if same_person else OTHER_PERSON


def bgr(colour: str) -> Tuple[int, int, int]:
    """``"#rrggbb"`` -> OpenCV's (blue, green, red).

    >>> bgr("#1f6fd1")
    (209, 111, 31)
    """
    value = colour.lstrip("#")
    r, g, b = (int(value[i : i + 2], 16) for i in (0, 2, 4))
    return (b, g, r)
