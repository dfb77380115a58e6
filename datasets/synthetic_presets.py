"""The tabletop scene presets built from analytic primitives.

easy, occluded, lookalike, thin: rising difficulty, the target small in the frame. twotone: a house
(red-brick walls, grey roofs: parts of strongly different colours) filling most of the frame, its back
unseen from view 0. border: a large target (a caterpillar) that crosses the image border in many views.

World: millimetres, +z up, table top at z = 0, table centred on the origin. Each preset returns the
Scene plus the azimuth (deg) of view 0, chosen so view 0 sees the target well (unoccluded).
`seed` jitters textures and small placements; objects that touch the target move with it.
"""
from __future__ import annotations

import math

import numpy as np

from datasets.sdf_primitives import (Capsule, Cylinder, Parts, RoundBox, Shape, SmoothUnion, Sphere, Torus,
                                     rotation_matrix)
from datasets.solid_textures import PartTexture, SolidTexture
from datasets.synthetic_scene import Scene, SceneObject

PRESETS = ("easy", "occluded", "lookalike", "thin", "twotone", "border")
# Per-preset camera framing (zoom, look-at height mm); others: (1, LOOK_AT_HEIGHT_MM), the bounding sphere
# filling the frame. zoom multiplies the focal: > 1 makes large content fill the frame or cross its border.
FRAMING = {"twotone": (1.45, 55.0), "border": (1.8, 15.0)}

TABLE_RADIUS_MM = 170.0     # table disk: scene is ~340 mm across (DTU-sized)
TABLE_THICKNESS_MM = 10.0
TABLE_ROUNDING_MM = 2.0
SINK_MM = 1.0               # objects sink this much into the table so they touch it
TARGET_JITTER_MM = 3.0      # max seed-dependent shift of the target (and what touches it)
DISTRACTOR_JITTER_MM = 6.0  # max seed-dependent shift of separated distractors
YAW_JITTER_DEG = 8.0
PALETTE_JITTER = 0.04       # max seed-dependent change of each palette channel
TEXTURE_DIRECTION = (1.0, 0.3, 0.6)  # base stripe/marble axis, jittered per object
DIRECTION_JITTER = 0.3
LAMP_POLE_RADIUS_MM = 4.0   # the thin part of the 'thin' preset's target
LOOK_AT_HEIGHT_MM = 15.0    # cameras aim at this height above the table centre (centres the content)
HOUSE_EAVES_MM = 8.0        # how far the roofs overhang the walls


def framing(preset: str) -> tuple[float, float]:
    """(zoom, look-at height in mm) of the preset's cameras (synthetic_cameras.make_cameras)."""
    return FRAMING.get(preset, (1.0, LOOK_AT_HEIGHT_MM))

# Palettes (3 RGB colours in [0, 1]) and patterns per object kind.
PALETTES = {
    "table": ((0.78, 0.74, 0.66), (0.52, 0.47, 0.40), (0.66, 0.60, 0.52)),
    "snowman": ((0.86, 0.24, 0.14), (0.97, 0.78, 0.22), (0.55, 0.12, 0.35)),
    "lamp": ((0.08, 0.55, 0.62), (0.92, 0.92, 0.84), (0.10, 0.20, 0.45)),
    "block": ((0.14, 0.28, 0.80), (0.88, 0.92, 0.97), (0.30, 0.75, 0.90)),
    "can": ((0.20, 0.62, 0.25), (0.08, 0.22, 0.10), (0.75, 0.85, 0.30)),
    "log": ((0.56, 0.36, 0.20), (0.33, 0.19, 0.09), (0.70, 0.55, 0.35)),
    "ring": ((0.55, 0.25, 0.70), (0.92, 0.80, 0.95), (0.25, 0.10, 0.35)),
    "tower": ((0.40, 0.45, 0.52), (0.85, 0.55, 0.30), (0.20, 0.22, 0.28)),
    "table_white": ((0.92, 0.92, 0.90), (0.82, 0.82, 0.80), (0.97, 0.96, 0.94)),
    "brick": ((0.80, 0.26, 0.16), (0.62, 0.17, 0.11), (0.90, 0.48, 0.34)),
    "roof": ((0.42, 0.43, 0.46), (0.28, 0.29, 0.31), (0.58, 0.58, 0.60)),
    "caterpillar": ((0.55, 0.78, 0.18), (0.95, 0.62, 0.10), (0.20, 0.45, 0.12)),
}
PATTERN = {"table": ("checker", 30.0), "snowman": ("marble", 28.0), "lamp": ("stripes", 14.0),
           "block": ("checker", 12.0), "can": ("spots", 9.0), "log": ("stripes", 6.0),
           "ring": ("marble", 16.0), "tower": ("stripes", 20.0),
           "table_white": ("checker", 30.0), "brick": ("stripes", 8.0), "roof": ("stripes", 10.0),
           "caterpillar": ("stripes", 18.0)}


def _xy(x: float, y: float, yaw_deg: float, local) -> np.ndarray:
    """World point of a local point (x right, y back, z up) of an object at (x, y) rotated by yaw."""
    r = rotation_matrix(yaw_deg)
    return np.array([x, y, 0.0]) + r @ np.asarray(local, dtype=np.float64)


def snowman(x: float, y: float, yaw: float) -> Shape:
    """Toy snowman (~120 mm wide, ~131 mm tall): body, head, scarf, arms, hat and nose (faces -y)."""
    at = lambda *p: _xy(x, y, yaw, p)  # noqa: E731
    body = Sphere(at(0, 0, 38 - SINK_MM), 38)
    head = Sphere(at(0, 0, 92), 25)
    parts = [SmoothUnion([body, head], k=10.0),
             Torus(at(0, 0, 68), 22, 7),
             Capsule(at(30, 0, 52), at(58, 0, 78), 4.5), Capsule(at(-30, 0, 52), at(-56, 0, 74), 4.5),
             Cylinder(at(0, 0, 121), 16, 10, rounding=2), Cylinder(at(0, 0, 112), 24, 2, rounding=1.5),
             Capsule(at(0, -20, 95), at(0, -44, 93), 5)]
    return SmoothUnion(parts, k=3.0)


def lamp(x: float, y: float, yaw: float) -> Shape:
    """Desk lamp (~97 mm wide, ~121 mm tall) on a thin pole of radius LAMP_POLE_RADIUS_MM."""
    at = lambda *p: _xy(x, y, yaw, p)  # noqa: E731
    parts = [Cylinder(at(0, 0, 6 - SINK_MM), 35, 6, rounding=3),
             Capsule(at(0, 0, 10), at(0, 0, 108), LAMP_POLE_RADIUS_MM),
             Capsule(at(0, 0, 108), at(34, 0, 116), 3.5),
             Cylinder(at(40, 0, 108), 22, 13, rounding=5),
             Sphere(at(40, 0, 92), 9)]
    return SmoothUnion(parts, k=3.0)


def _gabled(at, yaw: float, centre, half, along_y: bool, parts: dict[str, list]) -> None:
    """A gabled building block, appended to `parts`: walls (box, half sizes `half` mm, standing on the
    table at local `centre` xy), brick gable triangles on its ends and a 45-degree roof overhanging
    by HOUSE_EAVES_MM. Gables and roof are boxes turned 45 degrees about the ridge, their lower
    halves hidden inside the walls; the ridge runs along local x (along y when along_y)."""
    hx, hy, hz = half
    top = 2 * hz - SINK_MM
    length, width = (hy, hx) if along_y else (hx, hy)       # ridge length and half width of the walls
    turn = rotation_matrix(yaw, 45.0, 0.0) if along_y else rotation_matrix(yaw, 0.0, 45.0)
    ridge = at(centre[0], centre[1], top)

    def prism(half_len: float, half_diag: float, rounding: float) -> RoundBox:
        s = half_diag / math.sqrt(2.0)
        return RoundBox(ridge, (s, half_len, s) if along_y else (half_len, s, s), rounding=rounding, rotation=turn)

    parts["walls"] += [RoundBox(at(centre[0], centre[1], hz - SINK_MM), half, rounding=2.0,
                                rotation=rotation_matrix(yaw)), prism(length, width, 1.0)]
    parts["roof"].append(prism(length - 5.0, width + HOUSE_EAVES_MM, 1.0))


def house(x: float, y: float, yaw: float) -> Parts:
    """Toy house (~190 x 170 mm, ~165 mm tall), parts "walls" (brick: walls, gables, chimney) and "roof"
    (grey: the main roof and the lower front wing's). Front (with the wing) faces -y."""
    at = lambda *p: _xy(x, y, yaw, p)  # noqa: E731
    parts: dict[str, list] = {"walls": [], "roof": []}
    _gabled(at, yaw, (0.0, 0.0), (95.0, 55.0, 45.0), False, parts)          # main house, ridge along x
    _gabled(at, yaw, (50.0, -75.0), (35.0, 40.0, 30.0), True, parts)        # front wing, ridge along y
    parts["walls"].append(RoundBox(at(-50.0, 20.0, 140.0), (9.0, 9.0, 25.0), rounding=1.5,
                                   rotation=rotation_matrix(yaw)))           # chimney through the roof
    return Parts({name: SmoothUnion(shapes) for name, shapes in parts.items()})


def caterpillar(x: float, y: float, yaw: float) -> Shape:
    """Toy caterpillar (~310 mm long, ~100 mm tall): seven body segments on a wave, a raised head with
    two antennae (head towards +x)."""
    at = lambda *p: _xy(x, y, yaw, p)  # noqa: E731
    body = []
    for i in range(7):
        r = 27.0 + 9.0 * math.sin(math.pi * i / 6.0)
        body.append(Sphere(at(-115.0 + 36.0 * i, 22.0 * math.sin(0.9 * i), r - SINK_MM), r))
    head = Sphere(at(132.0, 10.0, 52.0), 30.0)
    antennae = [Capsule(at(138.0, 10.0 + s * 12.0, 74.0), at(150.0, 10.0 + s * 26.0, 104.0), 3.5) for s in (-1, 1)]
    return SmoothUnion(body + [head] + antennae, k=8.0)


def block(x, y, yaw, half=(22.0, 22.0, 22.0)) -> Shape:
    return RoundBox((x, y, half[2] - SINK_MM), half, rounding=4.0, rotation=rotation_matrix(yaw))


def can(x, y, radius=24.0, height=70.0) -> Shape:
    return Cylinder((x, y, height / 2 - SINK_MM), radius, height / 2, rounding=3.0)


def ring(x, y, major=26.0, minor=8.0) -> Shape:
    return Torus((x, y, minor - SINK_MM), major, minor)


def ball(x, y, radius=30.0) -> Shape:
    return Sphere((x, y, radius - SINK_MM), radius)


def log(a_xy, b_xy, radius=14.0) -> Shape:
    z = radius - SINK_MM
    return Capsule((a_xy[0], a_xy[1], z), (b_xy[0], b_xy[1], z), radius)


def table() -> Shape:
    half = TABLE_THICKNESS_MM / 2
    return Cylinder((0.0, 0.0, -half), TABLE_RADIUS_MM, half, rounding=TABLE_ROUNDING_MM)


class _Builder:
    """Collects objects for one preset; owns the seeded RNG so the call order fixes the output."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.seed = int(seed)
        self.objects: list[SceneObject] = []

    def jitter(self, scale: float) -> np.ndarray:  # (2,) xy offset in mm
        return self.rng.uniform(-scale, scale, size=2)

    def yaw(self) -> float:
        return float(self.rng.uniform(-YAW_JITTER_DEG, YAW_JITTER_DEG))

    def texture(self, kind: str, like: str | None = None) -> SolidTexture:
        """Texture of palette `like or kind`, jittered by the seed (lookalikes share the palette)."""
        key = like or kind
        palette = np.clip(np.asarray(PALETTES[key]) + self.rng.uniform(-PALETTE_JITTER, PALETTE_JITTER, (3, 3)), 0, 1)
        pattern, scale = PATTERN[key]
        direction = np.array(TEXTURE_DIRECTION) + self.rng.uniform(-DIRECTION_JITTER, DIRECTION_JITTER, 3)
        tex_seed = int(self.rng.integers(0, 2**31 - 1))
        return SolidTexture(palette, pattern, scale, tex_seed, direction=direction,
                            phase=float(self.rng.uniform(0, 2 * math.pi)))

    def add(self, name: str, shape: Shape, kind: str, target: bool = False, like: str | None = None):
        self.objects.append(SceneObject(name, shape, self.texture(kind, like), is_target=target))

    def add_parts(self, name: str, shape: Parts, kinds: tuple[str, ...], target: bool = False):
        """An object made of parts, part i painted with palette kinds[i]."""
        texture = PartTexture(shape.part_of, [self.texture(k) for k in kinds])
        self.objects.append(SceneObject(name, shape, texture, is_target=target))

    def scene(self) -> Scene:
        return Scene(self.objects)


def build_preset(preset: str, seed: int = 0) -> tuple[Scene, float]:
    """Scene of `preset` (one of PRESETS) and the azimuth in degrees at which view 0 looks from."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {PRESETS}")
    b = _Builder(seed)
    b.add("table", table(), "table_white" if preset == "twotone" else "table")
    o = b.jitter(TARGET_JITTER_MM)
    j = lambda x, y: np.array([x, y]) + b.jitter(DISTRACTOR_JITTER_MM)  # noqa: E731
    if preset == "easy":
        b.add("snowman", snowman(o[0], o[1], b.yaw()), "snowman", target=True)
        p = j(100, -60)
        b.add("block", block(p[0], p[1], float(b.rng.uniform(0, 90))), "block")
        p = j(-95, -65)
        b.add("can", can(p[0], p[1]), "can")
        p = j(85, 90)
        b.add("ring", ring(p[0], p[1]), "ring")
        return b.scene(), -60.0
    if preset == "occluded":
        # A tall box behind the target and a can at its front-left both touch it.
        b.add("snowman", snowman(o[0], o[1], 0.5 * b.yaw()), "snowman", target=True)
        b.add("tower", block(o[0], o[1] + 54, 0.0, half=(35.0, 18.0, 45.0)), "tower")
        b.add("can", can(o[0] - 45, o[1] - 45), "can")
        p, q = j(75, -95), j(125, -50)
        b.add("log", log(p, q), "log")
        return b.scene(), -20.0
    if preset == "lookalike":
        # A ball painted like the target touches it from behind-left.
        b.add("snowman", snowman(o[0], o[1], 0.5 * b.yaw()), "snowman", target=True)
        b.add("ball", ball(o[0] - 46.7, o[1] + 46.7), "ball", like="snowman")
        p = j(100, -60)
        b.add("block", block(p[0], p[1], float(b.rng.uniform(0, 90))), "block")
        p = j(90, 85)
        b.add("can", can(p[0], p[1]), "can")
        return b.scene(), -135.0
    if preset == "twotone":
        # The house fills most of the frame; view 0 sees its front, wing and east gable, not its back.
        b.add_parts("house", house(o[0], o[1] + 30.0, b.yaw()), ("brick", "roof"), target=True)
        p = j(-135, -20)
        b.add("can", can(p[0], p[1], radius=16.0, height=50.0), "can")
        p = j(135, 40)
        b.add("ball", ball(p[0], p[1], radius=22.0), "ring")
        return b.scene(), -60.0
    if preset == "border":
        # Zoomed views (ZOOM) cut the caterpillar's head or tail off at the image border.
        b.add("caterpillar", caterpillar(o[0], o[1], b.yaw()), "caterpillar", target=True)
        p = j(-60, -110)
        b.add("block", block(p[0], p[1], float(b.rng.uniform(0, 90))), "block")
        p = j(10, 115)
        b.add("can", can(p[0], p[1]), "can")
        return b.scene(), -100.0
    # thin
    b.add("lamp", lamp(o[0], o[1], b.yaw()), "lamp", target=True)
    p = j(-90, 70)
    b.add("block", block(p[0], p[1], float(b.rng.uniform(0, 90))), "block")
    p = j(90, 85)
    b.add("can", can(p[0], p[1]), "can")
    p = j(-85, -75)
    b.add("ball", ball(p[0], p[1]), "ring")
    return b.scene(), -90.0
