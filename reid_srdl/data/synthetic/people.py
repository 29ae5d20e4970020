"""The people, cameras and pictures of the synthetic re-id sets (numpy + OpenCV).

Each picture is a rendered person: head, hair, torso, arms, legs, shoes and maybe a bag.
Identity lives in the clothes (shirt and trouser colours, a shirt pattern, sleeves, shorts or
skirt), body proportions, hair, hat and bag; the camera changes the background,
illumination, white balance, hue, saturation, blur, noise, framing and the usual walking
direction (front or back view, where a chest logo or a backpack strap is seen or not).
So identities are learnable, but matching across cameras is not trivial.

Everything is drawn from ``numpy.random.default_rng`` streams keyed by (seed, what, pid,
camera, image), so a given seed always gives the same bytes.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import cv2
import numpy as np

IMAGE_HEIGHT, IMAGE_WIDTH = 128, 64
_SS = 2  # drawn at twice the size, then shrunk with area averaging (cheap anti-aliasing)
_H, _W = IMAGE_HEIGHT * _SS, IMAGE_WIDTH * _SS

# Seed-stream tags: each kind of random draw has its own stream.
_LAYOUT, _IDENTITY, _CAMERA, _TRACK, _IMAGE = range(5)

BGR = Tuple[int, int, int]
# Named colours (BGR).  Identities pick from these lists and jitter them a little, so two
# people may share a shirt colour and differ only in pattern, trousers or bag.
_SHIRTS: List[BGR] = [
    (40, 40, 200),
    (30, 120, 235),
    (40, 200, 230),
    (60, 150, 50),
    (150, 150, 30),
    (190, 90, 30),
    (90, 40, 20),
    (140, 50, 110),
    (170, 120, 230),
    (235, 235, 235),
    (165, 165, 165),
    (35, 35, 35),
    (40, 70, 120),
    (150, 190, 215),
]
_LOWERS: List[BGR] = [
    (25, 25, 25),
    (70, 70, 70),
    (130, 80, 40),
    (80, 40, 25),
    (120, 170, 200),
    (40, 60, 100),
    (220, 220, 220),
    (50, 110, 100),
    (40, 40, 170),
]
_SKINS: List[BGR] = [(140, 170, 220), (100, 140, 195), (70, 100, 150), (50, 70, 110), (170, 195, 235)]
_HAIRS: List[BGR] = [(20, 20, 25), (30, 45, 70), (40, 70, 120), (90, 170, 210), (150, 150, 150)]
_BAGS: List[BGR] = [(25, 25, 25), (40, 60, 100), (40, 40, 180), (150, 80, 30), (130, 170, 200), (110, 110, 110)]
_SHOES: List[BGR] = [(20, 20, 20), (230, 230, 230), (40, 60, 90), (120, 120, 120)]
_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo", "twotone")
_LOWER_KINDS = ("trousers", "trousers", "trousers", "shorts", "skirt")
_BAG_KINDS = ("none", "none", "backpack", "shoulder", "hand")


# --------------------------------------------------------------------------- random draws
def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def _jitter(rng: np.random.Generator, colour: BGR, amount: int = 18) -> BGR:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


@dataclass(frozen=True)
class Identity:
    """What makes a person recognisable: clothes, body, hair, bag."""

    skin: BGR
    hair: BGR
    long_hair: bool
    hat: Optional[BGR]
    shirt: BGR
    pattern: str
    pattern_colour: BGR
    long_sleeves: bool
    lower_kind: str
    lower: BGR
    shoes: BGR
    height: float  # of the frame height
    shoulder: float  # shoulder width / body height
    hips: float  # hip width / shoulder width
    build: float  # limb thickness factor
    legs: float  # leg length / body height
    bag: str
    bag_colour: BGR


def sample_identity(rng: np.random.Generator) -> Identity:
    shirt = _pick(rng, _SHIRTS)
    pattern_colour = _pick(rng, [c for c in _SHIRTS if c != shirt])
    return Identity(
        skin=_jitter(rng, _pick(rng, _SKINS), 10),
        hair=_jitter(rng, _pick(rng, _HAIRS), 10),
        long_hair=bool(rng.random() < 0.3),
        hat=_jitter(rng, _pick(rng, _BAGS)) if rng.random() < 0.15 else None,
        shirt=_jitter(rng, shirt),
        pattern=_pick(rng, _PATTERNS),
        pattern_colour=_jitter(rng, pattern_colour),
        long_sleeves=bool(rng.random() < 0.5),
        lower_kind=_pick(rng, _LOWER_KINDS),
        lower=_jitter(rng, _pick(rng, _LOWERS)),
        shoes=_jitter(rng, _pick(rng, _SHOES), 10),
        height=float(rng.uniform(0.84, 0.95)),
        shoulder=float(rng.uniform(0.21, 0.29)),
        hips=float(rng.uniform(0.75, 1.0)),
        build=float(rng.uniform(0.8, 1.25)),
        legs=float(rng.uniform(0.44, 0.52)),
        bag=_pick(rng, _BAG_KINDS),
        bag_colour=_jitter(rng, _pick(rng, _BAGS)),
    )


@dataclass(frozen=True)
class Camera:
    """What a camera does to every picture it takes."""

    wall: BGR
    floor: BGR
    floor_level: float  # fraction of the height where the floor starts
    texture: str  # tiles | bricks | pillar | plain
    texture_colour: BGR
    gain: float
    white_balance: Tuple[float, float, float]
    hue_shift: int  # OpenCV hue units (2 degrees)
    saturation: float
    blur: float  # Gaussian sigma in output pixels
    noise: float
    scale: float
    y_offset: float
    jpeg_quality: int
    front_probability: float  # people mostly walk one way past a camera


def sample_camera(rng: np.random.Generator) -> Camera:
    wall = tuple(int(v) for v in rng.integers(70, 200, size=3))
    return Camera(
        wall=wall,
        floor=tuple(int(v) for v in rng.integers(60, 170, size=3)),
        floor_level=float(rng.uniform(0.55, 0.8)),
        texture=_pick(rng, ("tiles", "bricks", "pillar", "plain")),
        texture_colour=_jitter(rng, wall, 45),
        gain=float(rng.uniform(0.65, 1.3)),
        white_balance=tuple(float(v) for v in rng.uniform(0.85, 1.15, size=3)),
        hue_shift=int(rng.integers(-10, 11)),
        saturation=float(rng.uniform(0.65, 1.25)),
        blur=float(rng.uniform(0.0, 1.2)),
        noise=float(rng.uniform(1.0, 6.0)),
        scale=float(rng.uniform(0.88, 1.0)),
        y_offset=float(rng.uniform(-0.03, 0.03)),
        jpeg_quality=int(rng.integers(75, 96)),
        front_probability=float(rng.uniform(0.15, 0.85)),
    )


@dataclass(frozen=True)
class Shot:
    """One picture of one walker: direction, pose, framing, light."""

    facing: str  # front | back | side
    mirror: bool
    stride: float  # -1..1, phase of the walk
    x_shift: float  # fraction of the width
    y_shift: float  # fraction of the height
    scale: float
    light: float
    occluder: Optional[Tuple[float, float, float, BGR]]  # x0, y0, x1 as fractions; colour


def sample_track_facing(rng: np.random.Generator, camera: Camera) -> str:
    if rng.random() < 0.2:
        return "side"
    return "front" if rng.random() < camera.front_probability else "back"


def sample_shot(rng: np.random.Generator, facing: str) -> Shot:
    if rng.random() < 0.15:  # the walker turns a little within a track
        facing = "side" if facing != "side" else _pick(rng, ("front", "back"))
    occluder = None
    if rng.random() < 0.1:
        occluder = (
            float(rng.choice([-0.2, 0.6])) + float(rng.uniform(0, 0.2)),
            float(rng.uniform(0.45, 0.75)),
            float(rng.uniform(0.3, 0.5)),
            tuple(int(v) for v in rng.integers(20, 230, size=3)),
        )
    return Shot(
        facing=facing,
        mirror=bool(rng.random() < 0.5),
        stride=float(rng.uniform(-1, 1)),
        x_shift=float(rng.uniform(-0.07, 0.07)),
        y_shift=float(rng.uniform(-0.025, 0.025)),
        scale=float(rng.uniform(0.95, 1.05)),
        light=float(rng.uniform(0.9, 1.1)),
        occluder=occluder,
    )


# --------------------------------------------------------------------------- drawing
class _Layer:
    """A colour layer plus its coverage mask: every primitive is drawn into both."""

    def __init__(self):
        self.image = np.zeros((_H, _W, 3), np.uint8)
        self.mask = np.zeros((_H, _W), np.uint8)

    def line(self, p0, p1, thickness: float, colour: BGR):
        p0, p1, t = _pt(p0), _pt(p1), max(1, int(round(thickness)))
        cv2.line(self.image, p0, p1, colour, t, cv2.LINE_AA)
        cv2.line(self.mask, p0, p1, 255, t, cv2.LINE_AA)

    def poly(self, points, colour: BGR):
        pts = np.array([_pt(p) for p in points], np.int32)
        cv2.fillPoly(self.image, [pts], colour, cv2.LINE_AA)
        cv2.fillPoly(self.mask, [pts], 255, cv2.LINE_AA)

    def ellipse(self, centre, axes, colour: BGR, start: float = 0, end: float = 360):
        c, a = _pt(centre), (max(1, int(axes[0])), max(1, int(axes[1])))
        cv2.ellipse(self.image, c, a, 0, start, end, colour, -1, cv2.LINE_AA)
        cv2.ellipse(self.mask, c, a, 0, start, end, 255, -1, cv2.LINE_AA)

    def patterned_poly(self, points, base: BGR, pattern: str, second: BGR, period: float, facing: str):
        """A polygon filled with a clothing pattern (stripes, checks, logo, two-tone)."""
        pts = np.array([_pt(p) for p in points], np.int32)
        x0, y0, w, h = cv2.boundingRect(pts)
        x0, y0 = max(x0, 0), max(y0, 0)
        w, h = min(w, _W - x0), min(h, _H - y0)
        if w <= 0 or h <= 0:
            return
        # Work inside the polygon's bounding box only: the rest of the layer is untouched.
        local = pts - np.array([x0, y0], np.int32)
        region = np.zeros((h, w), np.uint8)
        cv2.fillPoly(region, [local], 255, cv2.LINE_AA)
        cloth = np.empty((h, w, 3), np.uint8)
        cloth[:] = base
        p = max(2, int(period))
        rows = (np.arange(h)[:, None] // p) % 2 == 0
        cols = (np.arange(w)[None, :] // p) % 2 == 0
        second_where = {
            "hstripes": np.broadcast_to(rows, (h, w)),
            "vstripes": np.broadcast_to(cols, (h, w)),
            "checks": rows ^ cols,
            "twotone": np.broadcast_to(np.arange(h)[:, None] < h // 2, (h, w)),  # jacket-like top
        }.get(pattern)
        if second_where is not None:
            cloth[second_where] = second
        if pattern == "logo" and facing == "front":
            cv2.circle(cloth, (w // 2, h // 3), max(2, w // 5), second, -1, cv2.LINE_AA)
        alpha = region[..., None].astype(np.float32) / 255.0
        box = self.image[y0 : y0 + h, x0 : x0 + w]
        box[:] = (cloth * alpha + box * (1 - alpha)).astype(np.uint8)
        mask_box = self.mask[y0 : y0 + h, x0 : x0 + w]
        np.maximum(mask_box, region, out=mask_box)


def _pt(p) -> Tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def _draw_background(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    canvas = np.empty((_H, _W, 3), np.uint8)
    floor_y = int(camera.floor_level * _H + rng.integers(-8, 9))
    canvas[:floor_y] = camera.wall
    canvas[floor_y:] = camera.floor
    offset = int(rng.integers(0, 40))
    tc = camera.texture_colour
    if camera.texture == "tiles":
        for y in range(floor_y, _H, 18):
            cv2.line(canvas, (0, y), (_W, y), tc, 2)
        for x in range(-offset, _W, 36):
            cv2.line(canvas, (x, floor_y), (x - 20, _H), tc, 2)
    elif camera.texture == "bricks":
        for row, y in enumerate(range(0, floor_y, 14)):
            cv2.line(canvas, (0, y), (_W, y), tc, 2)
            for x in range(-offset + (row % 2) * 16, _W, 32):
                cv2.line(canvas, (x, y), (x, y + 14), tc, 2)
    elif camera.texture == "pillar":
        x = int(rng.integers(-20, _W - 10))
        cv2.rectangle(canvas, (x, 0), (x + 26, floor_y + 10), tc, -1)
    # Uneven lighting across the frame, different in every shot.
    ramp = np.linspace(1 - 0.15 * rng.random(), 1 + 0.15 * rng.random(), _W, dtype=np.float32)
    if rng.random() < 0.5:
        ramp = ramp[::-1]
    return np.clip(canvas * ramp[None, :, None], 0, 255).astype(np.uint8)


def _draw_person(
    ident: Identity, camera: Camera, shot: Shot, x_centre: float = 0.5, extra_scale: float = 1.0, extra_y: float = 0.0
) -> _Layer:
    layer = _Layer()
    hf = ident.height * camera.scale * shot.scale * extra_scale * _H  # body height, pixels
    top = (_H - hf) / 2 + (camera.y_offset + shot.y_shift + extra_y) * _H
    cx = (x_centre + shot.x_shift) * _W
    side = shot.facing == "side"

    head_r = 0.062 * hf
    head_c = (cx + (0.02 * hf if side else 0), top + head_r)
    shoulder_y = top + 0.16 * hf
    hip_y = top + (1 - ident.legs) * hf
    feet_y = top + 0.985 * hf
    knee_y = (hip_y + feet_y) / 2
    sw = ident.shoulder * hf / 2 * (0.55 if side else 1.0)
    hw = sw * ident.hips
    leg_t = 0.075 * hf * ident.build * (0.9 if side else 1.0)
    arm_t = 0.052 * hf * ident.build

    # Legs: stride opens them front-to-back in a side view, only slightly from the front.
    spread = shot.stride * (0.16 if side else 0.04) * hf
    hips_x = (cx - hw * 0.5, cx + hw * 0.5) if not side else (cx, cx)
    feet = [(hips_x[0] - spread, feet_y), (hips_x[1] + spread, feet_y)]
    knees = [((hips_x[0] + feet[0][0]) / 2, knee_y), ((hips_x[1] + feet[1][0]) / 2, knee_y)]
    bare_from = {"trousers": None, "shorts": knee_y - 0.02 * hf, "skirt": knee_y}[ident.lower_kind]

    # A backpack seen from the side sticks out behind the body: draw it first.
    if ident.bag == "backpack" and side:
        layer.poly(
            [
                (cx - sw - 0.1 * hf, shoulder_y + 0.02 * hf),
                (cx - sw + 2, shoulder_y + 0.02 * hf),
                (cx - sw + 2, shoulder_y + 0.22 * hf),
                (cx - sw - 0.1 * hf, shoulder_y + 0.22 * hf),
            ],
            ident.bag_colour,
        )
    if ident.long_hair and shot.facing == "front":
        layer.poly(
            [
                (cx - head_r * 1.05, head_c[1]),
                (cx + head_r * 1.05, head_c[1]),
                (cx + head_r * 1.0, shoulder_y + 0.05 * hf),
                (cx - head_r * 1.0, shoulder_y + 0.05 * hf),
            ],
            ident.hair,
        )

    for hip_x, knee, foot in zip(hips_x, knees, feet):
        hip = (hip_x, hip_y)
        if bare_from is None:
            layer.line(hip, knee, leg_t, ident.lower)
            layer.line(knee, foot, leg_t * 0.9, ident.lower)
        else:
            layer.line(hip, knee, leg_t, ident.lower)
            layer.line(knee, foot, leg_t * 0.75, ident.skin)
            if ident.lower_kind == "shorts":
                layer.line(hip, ((hip[0] + knee[0]) / 2, bare_from), leg_t * 1.1, ident.lower)
        layer.ellipse((foot[0] + (0.025 * hf if side else 0), foot[1]), (0.04 * hf, 0.018 * hf), ident.shoes)
    if ident.lower_kind == "skirt":
        layer.poly(
            [
                (cx - hw, hip_y - 0.02 * hf),
                (cx + hw, hip_y - 0.02 * hf),
                (cx + hw * 1.5, knee_y + 0.02 * hf),
                (cx - hw * 1.5, knee_y + 0.02 * hf),
            ],
            ident.lower,
        )

    # Arms behind the torso in a side view only for the far arm; both hang beside it otherwise.
    swing = -shot.stride * (0.12 if side else 0.03) * hf
    shoulders = [(cx - sw, shoulder_y + arm_t / 2), (cx + sw, shoulder_y + arm_t / 2)]
    if side:
        shoulders = [(cx, shoulder_y + arm_t / 2)] * 2
    hands = [
        (shoulders[0][0] - 0.03 * hf + swing, hip_y + 0.02 * hf),
        (shoulders[1][0] + 0.03 * hf - swing, hip_y + 0.02 * hf),
    ]
    elbows = [((s[0] + h[0]) / 2, (s[1] + h[1]) / 2) for s, h in zip(shoulders, hands)]

    def arm(i):
        sleeve = ident.shirt
        layer.line(shoulders[i], elbows[i], arm_t, sleeve)
        layer.line(elbows[i], hands[i], arm_t * 0.85, sleeve if ident.long_sleeves else ident.skin)
        layer.ellipse(hands[i], (arm_t * 0.55, arm_t * 0.6), ident.skin)

    if side:
        arm(1)
    else:
        arm(0)
        arm(1)

    torso = [(cx - sw, shoulder_y), (cx + sw, shoulder_y), (cx + hw, hip_y + 0.01 * hf), (cx - hw, hip_y + 0.01 * hf)]
    layer.patterned_poly(torso, ident.shirt, ident.pattern, ident.pattern_colour, 0.035 * hf, shot.facing)
    if side:
        arm(0)

    # Bags: a backpack covers the back; from the front only its straps show.
    if ident.bag == "backpack" and shot.facing == "back":
        layer.poly(
            [
                (cx - sw * 0.75, shoulder_y + 0.03 * hf),
                (cx + sw * 0.75, shoulder_y + 0.03 * hf),
                (cx + sw * 0.8, shoulder_y + 0.24 * hf),
                (cx - sw * 0.8, shoulder_y + 0.24 * hf),
            ],
            ident.bag_colour,
        )
    elif ident.bag == "backpack" and shot.facing == "front":
        for s in (-1, 1):
            layer.line(
                (cx + s * sw * 0.6, shoulder_y), (cx + s * sw * 0.7, shoulder_y + 0.2 * hf), 0.02 * hf, ident.bag_colour
            )
    elif ident.bag == "shoulder":
        layer.line((cx - sw * 0.8, shoulder_y), (cx + hw * 1.1, hip_y - 0.03 * hf), 0.018 * hf, ident.bag_colour)
        bx, by = cx + hw * 1.15, hip_y - 0.04 * hf
        layer.poly(
            [
                (bx - 0.05 * hf, by),
                (bx + 0.05 * hf, by),
                (bx + 0.05 * hf, by + 0.09 * hf),
                (bx - 0.05 * hf, by + 0.09 * hf),
            ],
            ident.bag_colour,
        )
    elif ident.bag == "hand":
        hx, hy = hands[1]
        layer.poly(
            [
                (hx - 0.045 * hf, hy + 0.01 * hf),
                (hx + 0.045 * hf, hy + 0.01 * hf),
                (hx + 0.05 * hf, hy + 0.11 * hf),
                (hx - 0.05 * hf, hy + 0.11 * hf),
            ],
            ident.bag_colour,
        )

    # Head and hair: the face shows from the front, the back of the head from behind.
    layer.line((cx, head_c[1] + head_r * 0.8), (cx, shoulder_y + 2), head_r * 0.7, ident.skin)
    layer.ellipse(head_c, (head_r * 0.85, head_r), ident.skin)
    if shot.facing == "back":
        layer.ellipse(head_c, (head_r * 0.9, head_r * 1.05), ident.hair)
        if ident.long_hair:
            layer.poly(
                [
                    (cx - head_r * 0.9, head_c[1]),
                    (cx + head_r * 0.9, head_c[1]),
                    (cx + head_r * 0.95, shoulder_y + 0.06 * hf),
                    (cx - head_r * 0.95, shoulder_y + 0.06 * hf),
                ],
                ident.hair,
            )
    else:
        layer.ellipse((head_c[0], head_c[1] - head_r * 0.15), (head_r * 0.92, head_r * 0.9), ident.hair, 180, 360)
    if ident.hat is not None:
        layer.ellipse((head_c[0], head_c[1] - head_r * 0.35), (head_r * 0.95, head_r * 0.7), ident.hat, 180, 360)
        layer.line(
            (head_c[0] - head_r, head_c[1] - head_r * 0.35),
            (head_c[0] + head_r * 1.3, head_c[1] - head_r * 0.35),
            head_r * 0.2,
            ident.hat,
        )
    return layer


def _shade(layer: _Layer, cx: float, half_width: float) -> np.ndarray:
    """Round-body shading: darker towards the left and right edges of the figure."""
    x = (np.arange(_W, dtype=np.float32) - cx) / max(half_width * 1.6, 1.0)
    factor = np.clip(1.0 - 0.3 * x * x, 0.6, 1.0)
    return layer.image * factor[None, :, None]


def _compose(background: np.ndarray, layers: List[Tuple[_Layer, float, float]]) -> np.ndarray:
    out = background.astype(np.float32)
    for layer, cx, half_width in layers:
        alpha = layer.mask[..., None].astype(np.float32) / 255.0
        out = _shade(layer, cx, half_width) * alpha + out * (1 - alpha)
    return out


def _apply_camera(img: np.ndarray, camera: Camera, light: float, rng: np.random.Generator) -> np.ndarray:
    """Shrink to 128 x 64 and apply the camera's light, colour, blur and noise."""
    small = cv2.resize(img, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_AREA)
    small = small * (np.array(camera.white_balance, np.float32) * camera.gain * light)
    small = np.clip(small, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
    h = (hsv[..., 0].astype(np.int16) + camera.hue_shift) % 180
    s = np.clip(hsv[..., 1].astype(np.float32) * camera.saturation, 0, 255)
    hsv = np.dstack([h.astype(np.uint8), s.astype(np.uint8), hsv[..., 2]])
    small = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if camera.blur > 0.2:
        small = cv2.GaussianBlur(small, (0, 0), camera.blur)
    noise = rng.normal(0.0, camera.noise, size=small.shape).astype(np.float32)
    return np.clip(small.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def render_person(ident: Identity, camera: Camera, shot: Shot, rng: np.random.Generator) -> np.ndarray:
    """One 128 x 64 BGR crop of `ident` as seen by `camera`."""
    background = _draw_background(camera, rng)
    layer = _draw_person(ident, camera, shot)
    cx = (0.5 + shot.x_shift) * _W
    img = _compose(background, [(layer, cx, ident.shoulder * ident.height * _H / 2)])
    if shot.occluder is not None:  # someone or something passing in front
        x0, y0, w, colour = shot.occluder
        cv2.rectangle(img, (int(x0 * _W), int(y0 * _H)), (int((x0 + w) * _W), _H), colour, -1)
    if shot.mirror:
        img = img[:, ::-1]
    return _apply_camera(np.ascontiguousarray(img), camera, shot.light, rng)


def render_junk(ident: Identity, camera: Camera, shot: Shot, rng: np.random.Generator) -> np.ndarray:
    """A bad detection: the person only partly inside the box (pid -1 in Market-1501)."""
    background = _draw_background(camera, rng)
    if rng.random() < 0.5:  # box slid sideways
        x_centre = float(rng.choice([-0.05, 1.05]))
        layer = _draw_person(ident, camera, shot, x_centre=x_centre)
    else:  # box far too tight or too low: only a part of the body
        x_centre = 0.5
        layer = _draw_person(
            ident, camera, shot, extra_scale=float(rng.uniform(1.6, 2.2)), extra_y=float(rng.choice([-0.45, 0.45]))
        )
    img = _compose(background, [(layer, x_centre * _W, ident.shoulder * _H / 2)])
    return _apply_camera(img, camera, shot.light, rng)


def render_distractor(camera: Camera, rng: np.random.Generator) -> np.ndarray:
    """A false detection on background clutter (pid 0 in Market-1501)."""
    img = _draw_background(camera, rng).astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):
        colour = tuple(int(v) for v in rng.integers(10, 240, size=3))
        x, y = int(rng.integers(0, _W)), int(rng.integers(_H // 4, _H))
        if rng.random() < 0.5:  # a pole, a bin, a sign
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, 50)), y - int(rng.integers(20, 160))), colour, -1)
        else:
            cv2.ellipse(img, (x, y), (int(rng.integers(10, 50)), int(rng.integers(8, 40))), 0, 0, 360, colour, -1)
    return _apply_camera(img, camera, 1.0, rng)
