"""Seeded Pathfinder generator (Linsley et al. 2018, arXiv 1805.08315; LRA's Pathfinder-32).

Our own implementation of the procedure of the Pathfinder challenge ("snakes") at 32 × 32, with
the parameters LRA used for ``pathfinder32`` (``lra_benchmarks/data/pathfinder.py``: paddle
length 2, margin 1, thickness 0.5, marker radius 1.5, seed distance 7, continuity 1.0, padding
1, distractor length ``contour_length // 3``, ``20 // distractor_length`` distractors, paddle
contrast 0.75; ``curv_contour_length_14`` = contour length 14, the difficulty Skyformer and
Spectraformer report).

A *path* ("snake") is a chain of ``n`` dashes ("paddles") of length ``L`` separated by gaps:
dash ``i`` runs from ``s_i`` to ``e_i = s_i + L·u(θ_i)``; the next one turns at the pivot
``p = e_i + m·u(θ_i)`` and starts at ``s_{i+1} = p + m·u(θ_{i+1})`` (``m`` = margin, so the gap
is ``2m`` on a straight path). The turn ``Δ = θ_{i+1} − θ_i`` is drawn among ``K`` candidate
angles in ``|Δ| < π / (2·continuity)`` with weight ``cos²(Δ·continuity)`` times availability:
a dash must stay ``padding`` away from the border and its core must keep a clearance of
``2m + thickness`` from every other dash except its predecessor in the same path (an occupancy
grid at half-pixel resolution, dilated by that clearance). Paths therefore never touch or cross.

An image: two *target* paths of ``contour_length`` dashes grow alternately, dash by dash, from
two origins ``seed_distance`` apart near the image centre (a failed path restarts the image);
then up to ``num_distractors`` distractor paths of ``distractor_length`` dashes are seeded at
random free places (a distractor that cannot be completed after 4 tries is left out). Two
circles (radius ``marker_radius``) mark the ends: for label 1 both ends of target path ``k``;
for label 0 the origin of path ``k`` and the far end of the other target path (``k`` random).
Positives and negatives are drawn by the same code up to that last choice, so the number of
paths, dashes and lit pixels, the brightness and the marker positions have the same
distribution in both classes; only connectivity tells them apart. Labels are balanced exactly
per chunk (a seeded permutation of ``[0, 1] * (n / 2)``; an odd chunk adds one random label).

A dead end of a target path backs it out by two dashes and regrows it (at most 40 times, then
the image restarts); Linsley's code restarts the image at once, which is about 5× slower at
32 × 32. Finished images satisfy the same constraints either way, but the path shapes are not
drawn from exactly the same distribution (backtracking favours paths that found room).

Rendering: dashes (intensity ``paddle_contrast``) and circles (intensity 1) are drawn on a 4×
supersampled canvas (a sub-pixel is lit when its centre is within ``max(thickness/2, 1/8)`` px
of the dash / within the radius of the circle) and box-averaged to 32 × 32 ``uint8``.

Split ``j`` is made of chunks of ``CHUNK_IMAGES`` images (the last one smaller); chunk ``i`` of
split ``j`` uses ``SeedSequence(seed, spawn_key=(j, i))``, so the output does not depend on the
number of worker processes, and every split is label-balanced on its own.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .registry import SPLITS

GENERATOR_VERSION = 1
CHUNK_IMAGES = 500
_CANDIDATES = 24  # candidate turning angles per dash
_CORE_POINTS = 5  # points along a dash core checked against the occupancy grid
_GRID = 2  # occupancy cells per pixel
_AA = 4  # render supersampling
_SEED_TRIES = 20
_DISTRACTOR_TRIES = 4
_IMAGE_TRIES = 200


@dataclass(frozen=True)
class PathfinderParams:
    """Generator parameters; defaults = LRA's ``pathfinder32`` / ``curv_contour_length_14``."""

    contour_length: int = 14
    distractor_length: int | None = None  # None: contour_length // 3
    num_distractors: int | None = None  # None: 20 // distractor_length
    image_size: int = 32
    paddle_length: float = 2.0
    paddle_margin: float = 1.0
    paddle_thickness: float = 0.5
    paddle_contrast: float = 0.75
    marker_radius: float = 1.5
    seed_distance: float = 7.0
    continuity: float = 1.0
    padding: float = 1.0
    num_train: int = 160_000
    num_val: int = 20_000
    num_test: int = 20_000

    def __post_init__(self) -> None:
        for name in ("contour_length", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int (got {value!r})")
        for name in ("distractor_length", "num_distractors"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise ValueError(f"{name} must be None or an int >= 0 (got {value!r})")
        if self.distractor_length == 0 and self.num_distractors:
            raise ValueError("distractor_length must be >= 1 when there are distractors")
        for name in ("paddle_length", "paddle_thickness", "paddle_contrast", "marker_radius",
                     "continuity"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)!r})")
        for name in ("paddle_margin", "seed_distance", "padding"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)!r})")
        if not self.paddle_contrast <= 1:
            raise ValueError(f"paddle_contrast must be in (0, 1] (got {self.paddle_contrast})")
        for name in ("num_train", "num_val", "num_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0 (got {value!r})")

    @property
    def n_distractor_dashes(self) -> int:
        if self.distractor_length is None:
            return self.contour_length // 3
        return self.distractor_length

    @property
    def n_distractors(self) -> int:
        if self.num_distractors is not None:
            return self.num_distractors
        length = self.n_distractor_dashes
        return 20 // length if length else 0

    @property
    def split_sizes(self) -> dict[str, int]:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}

    @property
    def total(self) -> int:
        return self.num_train + self.num_val + self.num_test

    def cache_key(self, seed: int, chunk: int = CHUNK_IMAGES) -> str:
        """Hash of the parameters, seed, chunk size and generator version."""
        blob = json.dumps({"params": asdict(self), "seed": seed, "version": GENERATOR_VERSION,
                           "chunk": chunk}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class Scene:
    """One generated image and how it was made (for tests and inspection)."""

    image: np.ndarray  # (S, S) uint8
    label: int
    targets: list[np.ndarray]  # two (n, 2, 2) arrays: dash (start, end) points, (x, y) in px
    distractors: list[np.ndarray] = field(default_factory=list)
    markers: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))  # (2, 2) centres
    target_index: int = 0  # k: the target path whose origin is marked


# ------------------------------------------------------------------------------- geometry
_PAD_PX = 8  # the occupancy grid reaches this far beyond the image; that band is always blocked
_BACKTRACKS = 40  # dead ends a pair of target paths may back out of before the image restarts
_BACKTRACK_DASHES = 2  # dashes removed from a path at a dead end


class _Grid:
    """Occupancy counts (``_GRID`` cells per pixel): how many stamped dash cores lie within the
    clearance of a cell. A dash may only be placed where all its core points are on free cells.
    Counts (not booleans) make a stamp exactly undoable (backtracking)."""

    def __init__(self, p: PathfinderParams) -> None:
        self.p = p
        n = (p.image_size + 2 * _PAD_PX) * _GRID
        self.centres = (np.arange(n) + 0.5) / _GRID - _PAD_PX  # cell centres in pixels
        outside = (self.centres < p.padding) | (self.centres > p.image_size - p.padding)
        self.counts = np.zeros((n, n), dtype=np.int16)  # [y, x]
        self.counts[outside, :] = 1
        self.counts[:, outside] = 1
        self.clearance = 2 * p.paddle_margin  # core to core: the gap between two dashes
        # a point closer than the clearance to a core always falls on a stamped cell:
        self.reach = self.clearance + math.sqrt(0.5) / _GRID
        # offsets of the checked core points from the pivot, along the new direction
        self.offsets = p.paddle_margin + np.linspace(0.0, p.paddle_length, _CORE_POINTS)
        self.templates = _stamp_templates(float(p.paddle_length), self.reach, n)
        # candidate turns: delta0 + U(0, 1) · delta_step spans |Δ| < π / (2·continuity)
        half = (math.pi / 2) / p.continuity
        self.delta0 = (np.arange(_CANDIDATES) * (2 / _CANDIDATES) - 1) * half
        self.delta_step = 2 * half / _CANDIDATES
        # beyond this pivot distance a dash start cannot come near a candidate dash
        self.far = 2 * (p.paddle_margin + p.paddle_length) + self.clearance

    def hits(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """(K,) True where some point of a dash ((K, P) coordinates) is on an occupied cell."""
        ix = ((px + _PAD_PX) * _GRID).astype(np.intp)
        iy = ((py + _PAD_PX) * _GRID).astype(np.intp)
        iy *= self.counts.shape[1]
        iy += ix
        return self.counts.ravel()[iy].any(axis=1)

    def stamp(self, dash: tuple[float, ...], sign: int = 1) -> None:
        """Add (``sign`` = 1) or remove (-1) the cells within reach of a dash core (a
        precomputed template for the dash's direction and sub-cell start position)."""
        sx, sy, _, _, theta = dash
        gx, gy = (sx + _PAD_PX) * _GRID, (sy + _PAD_PX) * _GRID
        ix, iy = int(gx), int(gy)
        fx, fy = int((gx - ix) * _SUBCELLS), int((gy - iy) * _SUBCELLS)
        a = round(theta / (2 * math.pi) * _ANGLES) % _ANGLES
        n = self.counts.shape[1]
        cells = self.templates[(a * _SUBCELLS + fy) * _SUBCELLS + fx] + (iy * n + ix)
        flat = self.counts.ravel()
        flat[cells] += sign


_ANGLES = 128  # stamp templates: directions
_SUBCELLS = 4  # stamp templates: start positions per cell and axis


@functools.lru_cache(maxsize=8)
def _stamp_templates(length: float, reach: float, n: int) -> tuple[np.ndarray, ...]:
    """Flat grid offsets (row stride ``n``) of the cells within ``reach`` of a dash of
    ``length`` pixels, for each quantized direction and sub-cell start (relative to the start
    cell). The reach is widened by the quantization error, so every cell within ``reach`` of
    the true dash is included."""
    slack = math.sqrt(2) / (2 * _SUBCELLS * _GRID) + length * math.pi / _ANGLES
    r = reach + slack
    span = math.ceil((length + r) * _GRID) + 1
    rel = np.arange(-span, span + 1)
    cx = ((rel + 0.5) / _GRID)[None, :]  # cell centres relative to the start cell's corner
    cy = ((rel + 0.5) / _GRID)[:, None]
    out = []
    for a in range(_ANGLES):
        theta = 2 * math.pi * a / _ANGLES
        for fy in range(_SUBCELLS):
            for fx in range(_SUBCELLS):
                sx, sy = (fx + 0.5) / (_SUBCELLS * _GRID), (fy + 0.5) / (_SUBCELLS * _GRID)
                ex, ey = sx + length * math.cos(theta), sy + length * math.sin(theta)
                jj, ii = np.nonzero(_distance2(cx, cy, sx, sy, ex, ey) <= r * r)
                out.append((rel[jj] * n + rel[ii]).astype(np.intp))
    return tuple(out)


def _distance2(px: np.ndarray, py: np.ndarray, sx: float, sy: float, ex: float, ey: float
               ) -> np.ndarray:
    """Squared distance of points (``px``, ``py``, broadcast) to the segment (sx, sy)–(ex, ey)."""
    dx, dy = ex - sx, ey - sy
    length2 = dx * dx + dy * dy
    if length2 == 0:
        return (px - sx) ** 2 + (py - sy) ** 2
    t = np.minimum(np.maximum(((px - sx) * dx + (py - sy) * dy) / length2, 0.0), 1.0)
    return (sx + t * dx - px) ** 2 + (sy + t * dy - py) ** 2


class _Path:
    """A path under construction: dashes ``(sx, sy, ex, ey, θ)``; every dash but the newest is
    stamped on the grid."""

    def __init__(self, sx: float, sy: float, theta: float, p: PathfinderParams) -> None:
        self.p = p
        c, s = math.cos(theta), math.sin(theta)
        length = p.paddle_length
        self.dashes = [(sx, sy, sx + length * c, sy + length * s, theta)]

    @property
    def origin(self) -> tuple[float, float]:
        return self.dashes[0][0], self.dashes[0][1]

    @property
    def tip(self) -> tuple[float, float]:
        return self.dashes[-1][2], self.dashes[-1][3]

    def pivot(self) -> tuple[float, float, float]:
        _, _, ex, ey, theta = self.dashes[-1]
        m = self.p.paddle_margin
        return ex + m * math.cos(theta), ey + m * math.sin(theta), theta

    def pop(self, grid: _Grid) -> None:
        """Remove the newest dash (its predecessor becomes the unstamped newest)."""
        self.dashes.pop()
        grid.stamp(self.dashes[-1], -1)

    def array(self) -> np.ndarray:
        """(n, 2, 2): (start, end) of each dash, (x, y) in pixels."""
        return np.array([d[:4] for d in self.dashes], dtype=np.float64).reshape(-1, 2, 2)


def _extend(path: _Path, grid: _Grid, rng: np.random.Generator,
            other: _Path | None = None) -> bool:
    """Add one dash to ``path`` (stamping its previous newest dash); False at a dead end.

    Candidate turns ``Δ`` (``_CANDIDATES`` of them, jittered) in ``|Δ| < π / (2·continuity)``
    get weight ``cos²(Δ·continuity)``, zero when the dash would hit an occupied cell or come
    within the clearance of ``other``'s newest (not yet stamped) dash."""
    p = path.p
    qx, qy, theta = path.pivot()
    delta = grid.delta0 + rng.random() * grid.delta_step
    weight = np.cos(delta * p.continuity)
    weight *= weight
    thetas = delta + theta
    ux, uy = np.cos(thetas), np.sin(thetas)
    px = np.multiply.outer(ux, grid.offsets)
    px += qx
    py = np.multiply.outer(uy, grid.offsets)
    py += qy
    hit = grid.hits(px, py)
    if other is not None:
        sx, sy, ex, ey, _ = other.dashes[-1]
        # only when the other path's newest dash is within reach of the candidates
        if math.hypot(sx - qx, sy - qy) < grid.far:
            hit |= (_distance2(px, py, sx, sy, ex, ey) < grid.clearance ** 2).any(axis=1)
    weight[hit] = 0.0
    cumulative = np.cumsum(weight)
    if cumulative[-1] <= 0:
        return False
    k = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")),
            _CANDIDATES - 1)
    grid.stamp(path.dashes[-1])
    m, length = p.paddle_margin, p.paddle_length
    cx, cy = float(ux[k]), float(uy[k])
    sx, sy = qx + m * cx, qy + m * cy
    path.dashes.append((sx, sy, sx + length * cx, sy + length * cy, float(thetas[k])))
    return True


def _free_seed(grid: _Grid, sx: float, sy: float, theta: float) -> bool:
    ux, uy = math.cos(theta), math.sin(theta)
    offsets = grid.offsets - grid.p.paddle_margin
    return not grid.hits(sx + ux * offsets[None, :], sy + uy * offsets[None, :])[0]


def _seed_path(grid: _Grid, rng: np.random.Generator, low: float, high: float) -> _Path | None:
    """A one-dash path at a free random place with its start in the square [low, high]²."""
    for _ in range(_SEED_TRIES):
        sx, sy = rng.uniform(low, high, size=2)
        theta = float(rng.uniform(-math.pi, math.pi))
        if _free_seed(grid, sx, sy, theta):
            return _Path(float(sx), float(sy), theta, grid.p)
    return None


def _two_targets(grid: _Grid, rng: np.random.Generator) -> list[_Path] | None:
    """Two target paths of ``contour_length`` dashes grown alternately (the shorter one first)
    from origins ``seed_distance`` apart near the centre; a dead end backs the path out by
    ``_BACKTRACK_DASHES`` dashes (at most ``_BACKTRACKS`` times, then None: restart)."""
    p = grid.p
    size = p.image_size
    half_width = max(size / 2 - 2 * p.seed_distance, 0.5)
    paths: list[_Path] = []
    for _ in range(_SEED_TRIES):
        ox, oy = rng.uniform(size / 2 - half_width, size / 2 + half_width, size=2)
        phi, t0, t1 = rng.uniform(-math.pi, math.pi, size=3)
        origins = [(ox, oy), (ox + p.seed_distance * math.cos(phi),
                              oy + p.seed_distance * math.sin(phi))]
        paths = [_Path(float(x), float(y), float(t), p) for (x, y), t in zip(origins, (t0, t1))]
        if not all(_free_seed(grid, *path.dashes[0][:2], path.dashes[0][4]) for path in paths):
            continue
        a, b = paths[0].dashes[0], paths[1].dashes[0]
        ts = np.linspace(0.0, 1.0, _CORE_POINTS)
        bx, by = b[0] + ts * (b[2] - b[0]), b[1] + ts * (b[3] - b[1])
        if (_distance2(bx, by, *a[:4]) >= grid.clearance ** 2).all():
            break
    else:
        return None
    backtracks = 0
    n = p.contour_length
    while True:
        lengths = [len(path.dashes) for path in paths]
        if min(lengths) >= n:
            break
        i = 0 if lengths[0] <= lengths[1] else 1
        if _extend(paths[i], grid, rng, paths[1 - i]):
            continue
        backtracks += 1
        if backtracks > _BACKTRACKS:
            return None
        for _ in range(_BACKTRACK_DASHES):
            if len(paths[i].dashes) > 1:
                paths[i].pop(grid)
    for path in paths:
        grid.stamp(path.dashes[-1])
    return paths


def _distractors(grid: _Grid, rng: np.random.Generator) -> list[_Path]:
    """Up to ``num_distractors`` paths of ``distractor_length`` dashes at random free places;
    one that hits a dead end is removed and tried again (4 tries, then left out)."""
    p = grid.p
    out: list[_Path] = []
    length = p.n_distractor_dashes
    for _ in range(p.n_distractors):
        for _try in range(_DISTRACTOR_TRIES):
            saved = grid.counts.copy()
            path = _seed_path(grid, rng, p.padding, p.image_size - p.padding)
            if path is not None and all(_extend(path, grid, rng) for _ in range(length - 1)):
                grid.stamp(path.dashes[-1])
                out.append(path)
                break
            grid.counts = saved
    return out


def render(dashes: np.ndarray, markers: np.ndarray, p: PathfinderParams) -> np.ndarray:
    """The (S, S) ``uint8`` image of ``dashes`` ((D, 2, 2) start/end points, intensity
    ``paddle_contrast``) and circles centred at ``markers`` ((M, 2), intensity 1): a sub-pixel
    of the 4× supersampled canvas is lit when its centre is within ``max(thickness/2, 1/8)`` px
    of a dash core / within ``marker_radius`` of a centre; then box-averaged."""
    size = p.image_size
    n = size * _AA
    half = max(p.paddle_thickness / 2, 0.5 / _AA)

    def lit(lo: np.ndarray, width: int, inside: Callable[[np.ndarray, np.ndarray], np.ndarray]
            ) -> np.ndarray:
        """Flat canvas indices lit by shapes whose windows start at sub-pixel ``lo`` (S, 2)."""
        steps = np.arange(width)
        ii = lo[:, 0, None] + steps  # (S, W) columns
        jj = lo[:, 1, None] + steps  # (S, W) rows
        cx = ((ii + 0.5) / _AA)[:, None, :]
        cy = ((jj + 0.5) / _AA)[:, :, None]
        keep = inside(cx, cy)
        keep &= ((ii >= 0) & (ii < n))[:, None, :] & ((jj >= 0) & (jj < n))[:, :, None]
        return (jj[:, :, None] * n + ii[:, None, :])[keep]

    dash_canvas = np.zeros(n * n, dtype=bool)
    marker_canvas = np.zeros(n * n, dtype=bool)
    dashes = np.asarray(dashes, dtype=np.float64).reshape(-1, 2, 2)
    if len(dashes):
        s, e = dashes[:, 0], dashes[:, 1]
        lo = np.floor((np.minimum(s, e) - half) * _AA).astype(np.intp)
        width = math.ceil((p.paddle_length + 2 * half) * _AA) + 2
        d = (e - s)[:, None, None, :]
        length2 = np.maximum((d ** 2).sum(-1), 1e-12)
        s_ = s[:, None, None, :]

        def on_dash(cx: np.ndarray, cy: np.ndarray) -> np.ndarray:
            rx, ry = cx - s_[..., 0], cy - s_[..., 1]
            t = np.clip((rx * d[..., 0] + ry * d[..., 1]) / length2, 0.0, 1.0)
            return (rx - t * d[..., 0]) ** 2 + (ry - t * d[..., 1]) ** 2 <= half * half

        dash_canvas[lit(lo, width, on_dash)] = True
    markers = np.asarray(markers, dtype=np.float64).reshape(-1, 2)
    if len(markers):
        r = p.marker_radius
        lo = np.floor((markers - r) * _AA).astype(np.intp)
        width = math.ceil(2 * r * _AA) + 2
        c = markers[:, None, None, :]
        marker_canvas[lit(lo, width, lambda cx, cy: (cx - c[..., 0]) ** 2
                          + (cy - c[..., 1]) ** 2 <= r * r)] = True
    canvas = np.maximum(dash_canvas * np.float32(p.paddle_contrast), marker_canvas)
    small = canvas.reshape(size, _AA, size, _AA).mean(axis=(1, 3))
    return np.rint(small * 255).astype(np.uint8)


def draw_scene(rng: np.random.Generator, p: PathfinderParams, label: int) -> Scene:
    """One image with label ``label`` (1 = the two circles are joined by a path)."""
    for _ in range(_IMAGE_TRIES):
        grid = _Grid(p)
        targets = _two_targets(grid, rng)
        if targets is not None:
            break
    else:
        raise RuntimeError(
            f"could not place two target paths of {p.contour_length} dashes in a "
            f"{p.image_size}×{p.image_size} image after {_IMAGE_TRIES} tries; lower "
            "contour_length or paddle_length"
        )
    distractors = _distractors(grid, rng)
    k = int(rng.integers(2))
    other = k if label == 1 else 1 - k
    markers = np.array([targets[k].origin, targets[other].tip])
    arrays = [path.array() for path in (*targets, *distractors)]
    image = render(np.concatenate(arrays), markers, p)
    return Scene(image, int(label), arrays[:2], arrays[2:], markers, k)


# ------------------------------------------------------------------------------ chunks
@dataclass
class Chunk:
    """Images (n, S, S) ``uint8`` and labels (n,) ``int8`` of one chunk."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def chunk_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Balanced labels: a permutation of ``[0, 1] * (n // 2)`` (+ one random label if odd)."""
    labels = np.tile(np.array([0, 1], dtype=np.int8), n // 2 + 1)[:n]
    if n % 2:
        labels[-1] = rng.integers(2)
    return rng.permutation(labels)


def generate_chunk(params: PathfinderParams, seed: int, key: tuple[int, ...],
                   n_images: int = CHUNK_IMAGES) -> Chunk:
    """``n_images`` images from the random stream ``SeedSequence(seed, spawn_key=key)``."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))
    labels = chunk_labels(rng, n_images)
    size = params.image_size
    images = np.empty((n_images, size, size), dtype=np.uint8)
    for i, label in enumerate(labels):
        images[i] = draw_scene(rng, params, int(label)).image
    return Chunk(images, labels)


def generate_scenes(n: int, params: PathfinderParams, seed: int = 0) -> list[Scene]:
    """``n`` scenes with their geometry (tests, inspection); labels balanced and shuffled."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,)))
    return [draw_scene(rng, params, int(label)) for label in chunk_labels(rng, n)]


def chunk_plan(params: PathfinderParams, n_images: int = CHUNK_IMAGES
               ) -> list[tuple[str, tuple[int, int], int]]:
    """``(split, key, size)`` of every chunk: split ``j``'s images come in chunks
    ``key = (j, i)`` of ``n_images`` (the last one smaller), so each split is balanced on its own
    (exactly, when its chunks have even sizes) and the stream does not depend on the workers."""
    plan = []
    for j, split in enumerate(SPLITS):
        total = params.split_sizes[split]
        for i, start in enumerate(range(0, total, n_images)):
            plan.append((split, (j, i), min(n_images, total - start)))
    return plan


def iter_chunks(params: PathfinderParams, seed: int, workers: int = 1,
                n_images: int = CHUNK_IMAGES) -> Iterator[tuple[str, Chunk]]:
    """``(split, chunk)`` of :func:`chunk_plan` in order (``workers`` processes when > 1)."""
    plan = chunk_plan(params, n_images)
    if workers <= 1:
        for split, key, size in plan:
            yield split, generate_chunk(params, seed, key, size)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[tuple[str, Future[Chunk]]] = deque()
        todo = iter(plan)
        try:
            while True:
                while len(pending) < 2 * workers:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    split, key, size = nxt
                    pending.append((split, pool.submit(generate_chunk, params, seed, key, size)))
                if not pending:
                    return
                split, fut = pending.popleft()
                yield split, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()


def split_file(out_dir: Path, split: str, kind: str) -> Path:
    """``out_dir/{split}_{kind}.npy`` with kind ``images`` or ``labels``."""
    return out_dir / f"{split}_{kind}.npy"


def write_pathfinder(out_dir: str | os.PathLike, params: PathfinderParams, seed: int = 0, *,
                     workers: int | None = None, n_images: int = CHUNK_IMAGES,
                     progress: Callable[[int], None] | None = None) -> dict:
    """Write ``{train,val,test}_{images,labels}.npy`` into ``out_dir`` (images (n, S, S) uint8,
    labels (n,) int8; splits in generation order) and return a summary. ``progress(k)`` is
    called with the number of images added after each chunk."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    size = params.image_size
    sizes = params.split_sizes
    images_all = {s: np.lib.format.open_memmap(out / f".{s}_images.npy.partial", mode="w+",
                                               dtype=np.uint8, shape=(sizes[s], size, size))
                  for s in SPLITS}
    labels_all = {s: np.zeros(sizes[s], dtype=np.int8) for s in SPLITS}
    filled = dict.fromkeys(SPLITS, 0)
    ok = False
    try:
        for split, chunk in iter_chunks(params, seed, workers, n_images):
            a, b = filled[split], filled[split] + len(chunk)
            images_all[split][a:b] = chunk.images
            labels_all[split][a:b] = chunk.labels
            filled[split] = b
            if progress is not None:
                progress(len(chunk))
        ok = True
    finally:
        for split in SPLITS:
            images_all[split].flush()
        del images_all
        if not ok:
            for split in SPLITS:
                (out / f".{split}_images.npy.partial").unlink(missing_ok=True)
    summary = {"params": asdict(params), "seed": seed, "version": GENERATOR_VERSION,
               "chunk_images": n_images, "cache_key": params.cache_key(seed, n_images),
               "source": "generated (lra_data.pathfinder_generate)", "splits": {}}
    for split in SPLITS:
        os.replace(out / f".{split}_images.npy.partial", split_file(out, split, "images"))
        np.save(split_file(out, split, "labels"), labels_all[split])
        summary["splits"][split] = {
            "rows": sizes[split], "labels": np.bincount(labels_all[split], minlength=2).tolist(),
            "bytes": split_file(out, split, "images").stat().st_size,
        }
    return summary
