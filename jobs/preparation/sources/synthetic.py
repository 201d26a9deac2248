"""The `synthetic` source: seeded scenes of patterned shapes for the demo, the tests and the benchmarks.

Every sample is a pure function of (seed, index, height, width), so samples can be rendered in
parallel and in any order. The class of a pixel is defined by the *shape* of the object it belongs
to only: every layer (background, clutter, objects) draws its colours from one distribution
(uniform over the RGB cube), and all five object classes share one texture distribution, so no
colour lookup can segment the scenes and no texture says which shape an object is.

Scene recipe, in drawing order (later layers occlude earlier ones; the mask shows what is visible):
1. a full-frame background that is smooth at the scale of the objects: a flat colour, a gradient
   or soft value noise (sometimes thresholded into large blotches);
2. background clutter (class 0): up to two thin bars, small blobs or (rarely) thin open arcs, with
   smooth fills blended into what lies beneath at partial opacity;
3. two to four objects (disk, square, triangle, ring, cross), roughly upright (within +-15 degrees),
   of random size, patterned with hard-edged stripes or checks; each colour of the pattern is the
   colour beneath shifted by a large random offset, wrapped around the RGB cube (so the colour
   distribution stays uniform, yet objects stand out from whatever they lie on);
4. rarely a thin bar across everything (class 0), occluding objects;
5. a lighting gradient, mild blur and low pixel noise on the image (the mask keeps hard labels).

"Patterned vs smooth" separates objects from the background (with exceptions: clutter, border
cuts, occlusion) so that a small network learns the scenes in a few epochs; the class of an object
is still carried by its outline only.

Drawing uses numpy and Pillow only (Pillow is a direct dependency of segq).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from workers.exceptions import DataError
from jobs.preparation.sources.base import Dataset, Sample, Source, SourceFlag, SourceRequest
from jobs.preparation.sources.splits import SPLIT_FLAG, seeded_split

CLASS_NAMES: list[str] = ["background", "disk", "square", "triangle", "ring", "cross"]

PALETTE: list[tuple[int, int, int]] = [
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (145, 30, 180),
]

TEXTURES = ("solid", "stripes", "checker", "noise", "gradient")


@dataclass(frozen=True)
class Style:
    """How one layer is painted: texture mix, colour pairing and texture scale."""

    weights: tuple[float, float, float, float, float]  # probability of each of TEXTURES
    subtle: float  # probability that the second colour is a small perturbation of the first
    spread: float  # RGB standard deviation of that perturbation
    scale: float  # texture periods are this fraction of the default (a fraction of the short side)
    hard: float  # probability that stripes and noise are thresholded into hard-edged patterns


BACKGROUND_STYLE = Style(weights=(0.2, 0.0, 0.0, 0.2, 0.6), subtle=0.15, spread=35.0, scale=1.0, hard=0.5)
CLUTTER_STYLE = Style(weights=(0.6, 0.0, 0.0, 0.0, 0.4), subtle=0.5, spread=50.0, scale=0.6, hard=0.5)
OBJECT_STYLE = Style(weights=(0.0, 0.5, 0.5, 0.0, 0.0), subtle=0.0, spread=0.0, scale=0.5, hard=1.0)

# Object size is the radius of the shape's bounding circle, as a fraction of the short side, so
# that the extent is roughly 30-60% of the short side at any resolution (at the standard level).
MIN_OBJECT_RADIUS = 0.15
MAX_OBJECT_RADIUS = 0.30
# Objects per square frame (proportionally more on a wide one: the same density per area).
MIN_OBJECTS = 2
MAX_OBJECTS = 4
# Objects are roughly upright: rotated by at most this angle either way.
MAX_ROTATION = math.pi / 12.0
# Triangles are drawn larger than their bounding circle so that their area matches the others'.
TRIANGLE_SCALE = 1.2

# Background clutter per square frame, the probability of each kind (bars, small blobs, thin open
# arcs: the arcs are hard negatives for rings) and the opacity range it is blended with.
MAX_CLUTTER = 2
CLUTTER_KIND_WEIGHTS = (0.45, 0.4, 0.15)
CLUTTER_OPACITY = (0.35, 0.8)
OCCLUDER_PROBABILITY = 0.05
NOISE_SIGMA = (1.0, 3.0)

@dataclass(frozen=True)
class Difficulty:
    """What varies with `--difficulty`: object sizes and counts, and how much clutter there is.

    Colours and textures never vary with it (they carry no class at any level): an easier level has
    fewer, larger objects and less clutter, so a small network tells the shapes apart in fewer steps.
    """

    radius: tuple[float, float]  # object radius range, a fraction of the short side
    objects: tuple[int, int]  # objects per square frame, inclusive range
    max_clutter: int  # background distractors per square frame, at most
    occluder_probability: float


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty(radius=(0.22, 0.34), objects=(1, 3), max_clutter=1, occluder_probability=0.0),
    "standard": Difficulty(radius=(MIN_OBJECT_RADIUS, MAX_OBJECT_RADIUS), objects=(MIN_OBJECTS, MAX_OBJECTS),
                           max_clutter=MAX_CLUTTER, occluder_probability=OCCLUDER_PROBABILITY),
}
DEFAULT_DIFFICULTY = "standard"


# An object's two pattern colours are the mean colour beneath it shifted by random RGB offsets of at
# least this length (and at least this far from each other), wrapped around the cube. The object is
# redrawn (up to CONTRAST_TRIES times, keeping the best draw) while more than 5% of its pixels are
# closer than MIN_OBJECT_CONTRAST to what lies beneath them.
MIN_COLOUR_OFFSET = 110.0
MIN_OBJECT_CONTRAST = 110.0
CONTRAST_QUANTILE = 0.05
CONTRAST_TRIES = 8

CIRCLE_POINTS = 48


def render_sample(seed: int, index: int, height: int, width: int,
                  difficulty: str = DEFAULT_DIFFICULTY) -> tuple[np.ndarray, np.ndarray]:
    """Scene `index` of the dataset with this seed: image uint8 (H, W, 3) C-contiguous, mask uint8 (H, W)."""
    if height < 8 or width < 8:
        raise ValueError(f"synthetic scenes need at least 8x8 pixels, got {height}x{width}")
    level = get_difficulty(difficulty)
    rng = np.random.default_rng([seed, index])
    short = min(height, width)
    image = paint_texture(rng, 0, 0, height, width, short, BACKGROUND_STYLE)
    mask = np.zeros((height, width), dtype=np.uint8)

    for polygons in sample_clutter(rng, height, width, level):
        opacity = rng.uniform(*CLUTTER_OPACITY)
        paste_layer(rng, image, mask, polygons, 0, CLUTTER_STYLE, opacity=opacity)
    for label, polygons in sample_objects(rng, height, width, level):
        paste_layer(rng, image, mask, polygons, label, OBJECT_STYLE, stand_out=True)
    for polygons in sample_occluders(rng, height, width, level):
        paste_layer(rng, image, mask, polygons, 0, CLUTTER_STYLE)

    image = apply_lighting(rng, image)
    image = degrade(rng, image, short)
    return np.ascontiguousarray(image), mask


# ---------------------------------------------------------------------------------------------
# Colours and textures (colours from one distribution for objects, background and clutter alike)


def sample_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 255.0, size=3).astype(np.float32)


def sample_colour_pair(rng: np.random.Generator, style: Style) -> tuple[np.ndarray, np.ndarray]:
    first = sample_colour(rng)
    if rng.random() >= style.subtle:
        return first, sample_colour(rng)
    # A close second colour gives subtle textures, not only high-contrast ones.
    second = np.clip(first + rng.normal(0.0, style.spread, size=3), 0.0, 255.0).astype(np.float32)
    return first, second


def sample_offset(rng: np.random.Generator, avoid: np.ndarray | None = None) -> np.ndarray:
    """A random RGB offset of length >= MIN_COLOUR_OFFSET (and as far from `avoid`), by rejection."""
    offset = rng.uniform(-128.0, 128.0, size=3)
    for _ in range(20):
        if np.linalg.norm(offset) >= MIN_COLOUR_OFFSET and (
            avoid is None or np.linalg.norm(offset - avoid) >= MIN_COLOUR_OFFSET
        ):
            break
        offset = rng.uniform(-128.0, 128.0, size=3)
    return offset


def sample_contrasting_pair(rng: np.random.Generator, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two colours far from `reference` and from each other.

    Each is `reference` plus an offset, wrapped modulo 256 per channel: the wrapped sum of a uniform
    colour and any independent offset is uniform again, so object colours keep the distribution of
    background colours, while each channel still moves by at least the offset's size.
    """
    first_offset = sample_offset(rng)
    second_offset = sample_offset(rng, avoid=first_offset)
    first = np.mod(reference + first_offset, 256.0).clip(0.0, 255.0).astype(np.float32)
    second = np.mod(reference + second_offset, 256.0).clip(0.0, 255.0).astype(np.float32)
    return first, second


def paint_texture(
    rng: np.random.Generator,
    top: int,
    left: int,
    height: int,
    width: int,
    short: int,
    style: Style,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """A float32 (height, width, 3) texture for the image box at (top, left).

    Texture scales are fractions of the image's short side, never of the object, so a texture's
    frequency says nothing about what it is painted on. With a `reference` colour, the texture's
    colours are chosen to contrast with it.
    """
    kind = TEXTURES[rng.choice(len(TEXTURES), p=style.weights)]
    if reference is None:
        first, second = sample_colour_pair(rng, style)
    else:
        first, second = sample_contrasting_pair(rng, reference)
    weight = compute_texture_weight(rng, kind, top, left, height, width, short * style.scale, style.hard)
    return first + (second - first) * weight[..., None]


def compute_texture_weight(
    rng: np.random.Generator, kind: str, top: int, left: int, height: int, width: int, short: float, hard: float
) -> np.ndarray:
    """Mixing weight in [0, 1] between the texture's two colours, shape (height, width)."""
    ys = np.arange(top, top + height, dtype=np.float32)[:, None]
    xs = np.arange(left, left + width, dtype=np.float32)[None, :]
    angle = rng.uniform(0.0, math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    if kind == "solid":
        return np.zeros((height, width), dtype=np.float32)
    if kind == "stripes":
        period = max(3.0, rng.uniform(0.04, 0.15) * short)
        wave = np.sin(along * (2.0 * math.pi / period) + rng.uniform(0.0, 2.0 * math.pi))
        if rng.random() < hard:
            return (wave > rng.uniform(-0.5, 0.5)).astype(np.float32)
        return 0.5 + 0.5 * wave
    if kind == "checker":
        cell = max(2.5, rng.uniform(0.04, 0.12) * short)
        across = ys * math.cos(angle) - xs * math.sin(angle)
        parity = (np.floor(along / cell) + np.floor(across / cell)) % 2.0
        return parity.astype(np.float32)
    if kind == "noise":
        return compute_noise_weight(rng, height, width, short, hard)
    # gradient: a linear ramp across a random length, centred on the box
    centre = (left + width / 2.0) * math.cos(angle) + (top + height / 2.0) * math.sin(angle)
    length = rng.uniform(0.3, 1.5) * short
    return np.clip(0.5 + (along - centre) / length, 0.0, 1.0)


def compute_noise_weight(
    rng: np.random.Generator, height: int, width: int, short: float, hard: float
) -> np.ndarray:
    """Smooth value noise (upsampled random grid), sometimes thresholded into hard-edged blotches."""
    cell = max(2.0, rng.uniform(0.05, 0.2) * short)
    grid_h = max(2, math.ceil(height / cell) + 1)
    grid_w = max(2, math.ceil(width / cell) + 1)
    grid = rng.random((grid_h, grid_w), dtype=np.float32)
    field = Image.fromarray(grid).resize(
        (round(grid_w * cell), round(grid_h * cell)), Image.Resampling.BILINEAR
    )
    weight = np.asarray(field, dtype=np.float32)[:height, :width]
    if rng.random() < hard:
        return (weight > rng.uniform(0.35, 0.65)).astype(np.float32)
    return weight


# ---------------------------------------------------------------------------------------------
# Geometry: every shape is a list of (polygon, fill) pairs in image coordinates (x, y), filled in
# order, so a fill of 0 cuts a hole (the ring).


def make_circle(aspect: float = 1.0) -> np.ndarray:
    angles = np.linspace(0.0, 2.0 * math.pi, CIRCLE_POINTS, endpoint=False)
    return np.stack([aspect * np.cos(angles), np.sin(angles)], axis=1)


def make_unit_shape(rng: np.random.Generator, name: str) -> list[tuple[np.ndarray, int]]:
    """The shape `name` in a unit bounding circle, centred on the origin, upright, before rotation."""
    if name == "disk":
        return [(0.9 * make_circle(rng.uniform(0.8, 1.0)), 1)]
    if name == "ring":
        aspect = rng.uniform(0.8, 1.0)
        hole = rng.uniform(0.45, 0.68)
        return [(make_circle(aspect), 1), (hole * make_circle(aspect), 0)]
    if name == "square":
        half = 0.72
        stretch = rng.uniform(0.85, 1.0)
        corners = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        return [(half * corners * [stretch, 1.0], 1)]
    if name == "triangle":
        # Apex up in image coordinates (y grows downwards).
        angles = -math.pi / 2.0 + np.arange(3) * (2.0 * math.pi / 3.0) + rng.uniform(-0.14, 0.14, 3)
        radii = TRIANGLE_SCALE * rng.uniform(0.9, 1.0, 3)
        return [(np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1), 1)]
    if name == "cross":
        arm = rng.uniform(0.26, 0.38)
        outline = [(arm, 1), (arm, arm), (1, arm), (1, -arm), (arm, -arm), (arm, -1),
                   (-arm, -1), (-arm, -arm), (-1, -arm), (-1, arm), (-arm, arm), (-arm, 1)]
        return [(0.95 * np.array(outline, dtype=np.float64), 1)]
    raise ValueError(f"unknown shape {name!r}")


def place_shape(
    unit: list[tuple[np.ndarray, int]], centre: np.ndarray, radius: float, angle: float
) -> list[tuple[np.ndarray, int]]:
    rotation = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    return [(points @ rotation * radius + np.asarray(centre), fill) for points, fill in unit]


def make_bar(rng: np.random.Generator, height: int, width: int, thickness: float) -> np.ndarray:
    """A thin rectangle (a "wire") through a random point, as long as up to the whole image."""
    centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    angle = rng.uniform(0.0, math.pi)
    half_length = rng.uniform(0.15, 0.7) * math.hypot(height, width)
    along = np.array([math.cos(angle), math.sin(angle)]) * half_length
    across = np.array([-math.sin(angle), math.cos(angle)]) * max(0.6, thickness / 2.0)
    return np.stack([centre - along - across, centre + along - across,
                     centre + along + across, centre - along + across])


def make_blob(rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, 9))
    radii = radius * rng.uniform(0.6, 1.3, 9)
    return centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def make_arc(rng: np.random.Generator, centre: np.ndarray, radius: float, thickness: float) -> np.ndarray:
    """A thin open arc: a hard negative for rings (thinner and never closed)."""
    start = rng.uniform(0.0, 2.0 * math.pi)
    angles = start + np.linspace(0.0, rng.uniform(0.6, 1.1) * math.pi, 16)
    unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    inner = radius - max(0.6, thickness / 2.0)
    outer = radius + max(0.6, thickness / 2.0)
    return centre + np.concatenate([unit * outer, unit[::-1] * inner])


# ---------------------------------------------------------------------------------------------
# Scene layout


def sample_clutter(rng: np.random.Generator, height: int, width: int,
                   level: Difficulty) -> list[list[tuple[np.ndarray, int]]]:
    """Background-class distractors: bars, small blobs and thin arcs."""
    short = min(height, width)
    aspect = max(height, width) / short
    count = int(rng.integers(0, 1 + round(level.max_clutter * aspect)))
    clutter = []
    for _ in range(count):
        kind = rng.choice(3, p=CLUTTER_KIND_WEIGHTS)
        centre = np.array([rng.uniform(0, width), rng.uniform(0, height)])
        if kind == 0:
            polygon = make_bar(rng, height, width, rng.uniform(0.01, 0.035) * short)
        elif kind == 1:
            polygon = make_blob(rng, centre, rng.uniform(0.025, 0.07) * short)
        else:
            radius = rng.uniform(0.1, 0.3) * short
            polygon = make_arc(rng, centre, radius, rng.uniform(0.06, 0.14) * radius)
        clutter.append([(polygon, 1)])
    return clutter


def sample_objects(rng: np.random.Generator, height: int, width: int,
                   level: Difficulty) -> list[tuple[int, list[tuple[np.ndarray, int]]]]:
    """A few labelled shapes, spread so that they overlap partly but rarely hide each other."""
    short = min(height, width)
    aspect = max(height, width) / short
    fewest, most = level.objects
    count = int(rng.integers(round(fewest * aspect), 1 + round(most * aspect)))
    placed: list[tuple[np.ndarray, float]] = []
    objects = []
    for _ in range(count):
        label = int(rng.integers(1, len(CLASS_NAMES)))
        radius = rng.uniform(*level.radius) * short
        centre = sample_centre(rng, height, width, radius, placed)
        placed.append((centre, radius))
        unit = make_unit_shape(rng, CLASS_NAMES[label])
        angle = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
        objects.append((label, place_shape(unit, centre, radius, angle)))
    return objects


def sample_centre(
    rng: np.random.Generator, height: int, width: int, radius: float, placed: list[tuple[np.ndarray, float]]
) -> np.ndarray:
    # Centres may sit a little outside the frame's inner margin, so some objects are cut by the border.
    margin = 0.5 * radius
    centre = np.zeros(2)
    for _ in range(10):
        centre = np.array([rng.uniform(margin, width - margin), rng.uniform(margin, height - margin)])
        if all(np.hypot(*(centre - other)) > 0.75 * (radius + other_radius) for other, other_radius in placed):
            break
    return centre


def sample_occluders(rng: np.random.Generator, height: int, width: int,
                     level: Difficulty) -> list[list[tuple[np.ndarray, int]]]:
    """Rarely a thin background bar crosses in front of everything (a wire before the objects)."""
    if rng.random() >= level.occluder_probability:
        return []
    short = min(height, width)
    return [[(make_bar(rng, height, width, rng.uniform(0.015, 0.04) * short), 1)]
            for _ in range(int(rng.integers(1, 3)))]


# ---------------------------------------------------------------------------------------------
# Compositing


def rasterise(polygons: list[tuple[np.ndarray, int]], height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """Hard-edged coverage of the polygons, clipped to the image: (top, left, bool box) or None."""
    points = np.concatenate([polygon for polygon, _ in polygons])
    left = max(0, math.floor(points[:, 0].min()))
    top = max(0, math.floor(points[:, 1].min()))
    right = min(width, math.ceil(points[:, 0].max()) + 1)
    bottom = min(height, math.ceil(points[:, 1].max()) + 1)
    if right <= left or bottom <= top:
        return None
    canvas = Image.new("L", (right - left, bottom - top), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon, fill in polygons:
        draw.polygon([(float(x), float(y)) for x, y in polygon - [left, top]], fill=fill)
    coverage = np.asarray(canvas, dtype=bool)
    if not coverage.any():
        return None
    return top, left, coverage


def paste_layer(
    rng: np.random.Generator,
    image: np.ndarray,
    mask: np.ndarray,
    polygons: list[tuple[np.ndarray, int]],
    label: int,
    style: Style,
    stand_out: bool = False,
    opacity: float = 1.0,
) -> None:
    height, width = mask.shape
    raster = rasterise(polygons, height, width)
    if raster is None:
        return
    top, left, coverage = raster
    box = (slice(top, top + coverage.shape[0]), slice(left, left + coverage.shape[1]))
    beneath = image[box]
    short = min(height, width)
    if stand_out:
        texture = choose_contrasting_texture(rng, beneath, coverage, short, top, left, style)
    else:
        texture = paint_texture(rng, top, left, coverage.shape[0], coverage.shape[1], short, style)
    if opacity < 1.0:
        texture = beneath + opacity * (texture - beneath)
    image[box][coverage] = texture[coverage]
    mask[box][coverage] = label


def choose_contrasting_texture(
    rng: np.random.Generator,
    beneath: np.ndarray,
    coverage: np.ndarray,
    short: int,
    top: int,
    left: int,
    style: Style,
) -> np.ndarray:
    """An object's texture: the first of a few draws that stands out from what lies beneath."""
    height, width = coverage.shape
    under = beneath[coverage]
    reference = under.mean(axis=0)
    best, best_contrast = None, -1.0
    for _ in range(CONTRAST_TRIES):
        texture = paint_texture(rng, top, left, height, width, short, style, reference)
        contrast = measure_contrast(texture[coverage], under)
        if contrast > best_contrast:
            best, best_contrast = texture, contrast
        if best_contrast >= MIN_OBJECT_CONTRAST:
            break
    return best


def measure_contrast(over: np.ndarray, under: np.ndarray) -> float:
    """A low quantile of the per-pixel RGB distance: nearly all the object must differ from beneath."""
    distance = np.sqrt(((over - under) ** 2).sum(axis=1))
    return float(np.quantile(distance, CONTRAST_QUANTILE))


def apply_lighting(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Global brightness and a linear illumination ramp, so absolute colours shift per scene."""
    height, width = image.shape[:2]
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ys = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :]
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) * rng.uniform(0.0, 0.3)
    gain = rng.uniform(0.8, 1.15) * (1.0 + ramp)
    return image * gain[..., None]


def degrade(rng: np.random.Generator, image: np.ndarray, short: int) -> np.ndarray:
    """Mild blur (scaled with the resolution) and Gaussian pixel noise; returns uint8."""
    blurred = Image.fromarray(np.clip(image, 0.0, 255.0).round().astype(np.uint8))
    radius = rng.uniform(0.3, 0.8) * max(1.0, short / 192.0)
    blurred = blurred.filter(ImageFilter.GaussianBlur(radius))
    noisy = np.asarray(blurred, dtype=np.float32)
    noisy += rng.standard_normal(noisy.shape, dtype=np.float32) * rng.uniform(*NOISE_SIGMA)
    return np.clip(noisy, 0.0, 255.0).round().astype(np.uint8)


def get_difficulty(name: str) -> Difficulty:
    try:
        return DIFFICULTIES[name]
    except KeyError:
        raise DataError(f"--difficulty {name!r}: unknown level; valid: {', '.join(DIFFICULTIES)}") from None


def load_synthetic(ref: tuple, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample loader for preparation: `ref` is (seed, index) or (seed, index, difficulty)."""
    return render_sample(*ref[:2], height, width, *ref[2:])


def synthetic_dataset(count: int, seed: int, split: tuple[float, float, float],
                      difficulty: str = DEFAULT_DIFFICULTY) -> Dataset:
    """The prepare-able description of `count` scenes, split by a seeded shuffle."""
    if count < 3:
        raise DataError(f"--count {count}: need at least 3 scenes (one per split)")
    get_difficulty(difficulty)
    parts = seeded_split(count, split, seed)
    # The standard level keeps the two-field ref, so that its datasets are described as before.
    level = () if difficulty == DEFAULT_DIFFICULTY else (difficulty,)
    options = {"count": count, "seed": seed, "split": list(split)}
    if level:
        options["difficulty"] = difficulty
    return Dataset(
        source="synthetic",
        options=options,
        class_names=list(CLASS_NAMES),
        palette=list(PALETTE),
        splits={name: [Sample(f"synthetic/{i:06d}", (seed, int(i), *level)) for i in rows]
                for name, rows in parts.items()},
        labeled={name: True for name in parts},
    )


def list_synthetic(request: SourceRequest) -> Dataset:
    return synthetic_dataset(request.options["--count"], request.seed, request.options["--split"],
                             request.options["--difficulty"])


COUNT_FLAG = SourceFlag("--count", 200, "number of scenes")
DIFFICULTY_FLAG = SourceFlag("--difficulty", DEFAULT_DIFFICULTY,
                             f"scene level: {', '.join(DIFFICULTIES)} (easy: fewer, larger objects, less clutter)")
SOURCE = Source("synthetic", list_synthetic, load_synthetic, flags=(COUNT_FLAG, SPLIT_FLAG, DIFFICULTY_FLAG), needs_root=False)
