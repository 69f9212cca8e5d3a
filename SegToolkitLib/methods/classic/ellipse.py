"""Ellipses for the snake's shape prior: a robust fit to a bright elliptical ridge around a seed (a fetal skull in
ultrasound, a vessel wall), and the moment ellipse of a region.

The ridge fit casts rays from the seed, keeps the strongest brightness maxima along each ray as candidates, and
fits an ellipse by RANSAC (five candidates on five random rays per trial; an ellipse scores the ridge strength of
the candidates on it, less half the strongest ridge it encloses on each ray, because the skull is the first strong
ridge around a click in the head, and its centre must lie near the click), then refines it by least squares on the
sub-sample crests of the inliers whose ridge is at least half as strong as their median (weak maxima where the
skull runs along the beam are often misplaced). A last refinement moves all five parameters (within 10 % of the
radius) to where the ridge map, sampled between pixels along the whole outline, is strongest; each point's strength
saturates above the median along the start, so the weak ends of the major axis count almost as much as the bright
sides (on HC18 this took the head-circumference error from a median 2.6 to 1.8-1.9 mm). The returned ellipse lies
on the outer part of the ridge (55 % of the way from its crest to where it has fallen half-way to the outside
level), where a reader draws the outline of a skull.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

RAYS = 120
CANDIDATES_PER_RAY = 3
TRIALS = 1000
MIN_RADIUS_PX = 6
MAX_AXIS_RATIO = 2.5
STRONG_RIDGE = 0.3  # candidate maxima reach this share of the ray's strongest ridge
WEAK_RIDGE = 0.5
SEED_OFFSET = 0.3  # the seed (a click in the middle of the head) lies within this share of the way from the
# ellipse's centre to its outline
SUBPIXEL = True  # crests and flank crossings between samples (samples are 0.5 mm apart on the snake's grid)
INSIDE_PENALTY = 0.5  # an ellipse loses this share of the strongest ridge it encloses on each ray
INSIDE_MARGIN = 2.0  # ... counting ridges more than this many inlier tolerances inside the ellipse
OUTER_FLANK_SHARE = 0.55  # place the outline just past half-way down the outer half of the ridge (outer part of a
# skull; the HC18 reference outline lies about 1 mm outside the crest)
OUTLINE_SAMPLES = 180  # points along the ellipse in the final refinement on the ridge map
EVIDENCE_QUANTILE = 0.5  # a point's ridge strength s counts as s / (s + q), q this quantile of the strengths on the
# starting ellipse: it saturates, so the bright sides do not outweigh the weak ends of the major axis (where the skull
# runs along the beam), and still rises, so the optimum is a crest, not a plateau
REFINE_BOUND = 0.1  # the refinement moves the centre and semi-axes by at most about this share of the mean radius


@dataclass
class Ellipse:
    """Centre (row, column), semi-axes and orientation (radians, of the first axis against the row axis)."""

    centre: tuple[float, float]
    axes: tuple[float, float]
    angle: float

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """The filled ellipse on a grid of ``shape`` (pixel units of this ellipse)."""
        return self.normalised_radius(np.indices(shape).astype(np.float64)) <= 1.0

    def normalised_radius(self, points: np.ndarray) -> np.ndarray:
        """``sqrt((u/a)^2 + (v/b)^2)`` of points (2, ...) in the ellipse frame: 1 on the outline."""
        dy, dx = points[0] - self.centre[0], points[1] - self.centre[1]
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        u, v = dy * cos + dx * sin, -dy * sin + dx * cos
        return np.sqrt((u / self.axes[0]) ** 2 + (v / self.axes[1]) ** 2)

    def outline(self, samples: int) -> np.ndarray:
        """``samples`` points (rows, columns) on the ellipse, evenly spaced in its parametric angle."""
        t = np.linspace(0.0, 2.0 * np.pi, samples, endpoint=False)
        u, v = self.axes[0] * np.cos(t), self.axes[1] * np.sin(t)
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        return np.array([self.centre[0] + u * cos - v * sin, self.centre[1] + u * sin + v * cos])

    def grown(self, distance: float) -> Ellipse:
        return Ellipse(self.centre, (self.axes[0] + distance, self.axes[1] + distance), self.angle)


@dataclass
class RidgeFit:
    ellipse: Ellipse
    inlier_fraction: float  # share of the rays whose ridge lies on the ellipse: the fit's reliability


def moment_ellipse(mask: np.ndarray) -> Ellipse | None:
    """The ellipse with the area, centroid and second moments of a 2D region (None for an empty region)."""
    coords = np.argwhere(mask).astype(np.float64)
    if len(coords) < 5:
        return None
    centre = coords.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(coords.T))
    axes = 2.0 * np.sqrt(np.maximum(eigenvalues[::-1], 1e-6))
    major = eigenvectors[:, 1]
    return Ellipse((float(centre[0]), float(centre[1])), (float(axes[0]), float(axes[1])),
                   float(np.arctan2(major[1], major[0])))


def fit_ridge_ellipse(image: np.ndarray, seed: tuple[float, float], sigma: float = 2.0,
                      rng: np.random.Generator | None = None) -> RidgeFit | None:
    """Fit an ellipse to the bright ridge enclosing ``seed`` in a 2D array (pixel units); None when none is found."""
    rng = rng if rng is not None else np.random.default_rng(0)
    smoothed = ndimage.gaussian_filter(image.astype(np.float32), sigma)
    ridge = ridge_strength(image, sigma)
    profiles, radii, angles = _ray_profiles(smoothed, seed)
    ridges = _ray_profiles(ridge, seed)[0]
    candidates = [_ridge_candidates(profile) for profile in ridges]
    usable = [i for i, c in enumerate(candidates) if len(c)]
    if len(usable) < 0.3 * RAYS:
        return None
    table = _candidate_table(candidates, radii, ridges)
    best, best_score = None, -np.inf
    for _ in range(TRIALS):
        rays = rng.choice(usable, 5, replace=False)
        points = np.array([_point(seed, angles[r], radii[rng.choice(candidates[r])]) for r in rays])
        ellipse = _fit_conic(points)
        if ellipse is None or not _plausible(ellipse, seed, smoothed.shape):
            continue
        score = _score(ellipse, seed, angles, table)
        if score > best_score:
            best, best_score = ellipse, score
    if best is None:
        return None
    for _ in range(3):  # least-squares refinement on the inlier points
        inliers = _strong(_inliers(best, seed, angles, radii, candidates), ridges)
        refined = _fit_conic(np.array([_point(seed, angles[r], _crest(ridges[r], k)) for r, k in inliers])) \
            if len(inliers) >= 6 else None
        if refined is None or not _plausible(refined, seed, smoothed.shape):
            break
        best = refined
    # the fit's reliability: rays whose crest (on the rays' sample grid) lies on the least-squares ellipse and
    # falls off outside (a line, not the dark side of a step edge); the sub-pixel refinement below does not change it
    support = len(_outer_flank(profiles, _inliers(best, seed, angles, radii, candidates))) / RAYS
    best = _refined_on_crest(ridge, best, seed, smoothed.shape)
    offsets = _outer_flank(profiles, _inliers(best, seed, angles, radii, candidates))
    if not offsets:
        return None
    return RidgeFit(best.grown(OUTER_FLANK_SHARE * float(np.median(offsets))), support)


def _refined_on_crest(ridge: np.ndarray, ellipse: Ellipse, seed, shape) -> Ellipse:
    """The ellipse near ``ellipse`` (all five parameters) along which the ridge map is strongest, sampled between
    pixels: it uses the whole outline, not only the crests found on the rays, and measures the geometric fit (the
    least-squares conic minimises an algebraic distance, which misplaces the ends of the major axis)."""
    from scipy import optimize

    def evidence(candidate: Ellipse) -> np.ndarray:
        return ndimage.map_coordinates(ridge, candidate.outline(OUTLINE_SAMPLES), order=1, mode="nearest")

    scale = max(float(np.quantile(evidence(ellipse), EVIDENCE_QUANTILE)), 1e-9)
    start = np.array([*ellipse.centre, *ellipse.axes, ellipse.angle])
    size = 0.5 * (ellipse.axes[0] + ellipse.axes[1])

    def cost(x: np.ndarray) -> float:
        candidate = Ellipse((x[0], x[1]), (abs(x[2]), abs(x[3])), x[4])
        drift = np.maximum(np.abs(x[:4] - start[:4]) / size - REFINE_BOUND, 0.0)
        strength = evidence(candidate)
        return -float(np.mean(strength / (strength + scale))) + 100.0 * float(np.sum(drift ** 2))

    simplex = [start] + [start + step for step in np.diag([2.0, 2.0, 2.0, 2.0, 0.05])]  # pixels, radians
    x = optimize.minimize(cost, start, method="Nelder-Mead",
                          options={"initial_simplex": simplex, "xatol": 0.05, "fatol": 1e-5, "maxiter": 800}).x
    refined = Ellipse((float(x[0]), float(x[1])), (float(abs(x[2])), float(abs(x[3]))), float(x[4]))
    if refined.axes[1] > refined.axes[0]:  # keep the first axis the major one
        refined = Ellipse(refined.centre, refined.axes[::-1], refined.angle + np.pi / 2.0)
    return refined if _plausible(refined, seed, shape) else ellipse


def ridge_strength(image: np.ndarray, sigma: float) -> np.ndarray:
    """Bright-line response: minus the smaller Hessian eigenvalue at scale ``sigma`` (pixels), clipped at 0."""
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals

    hessian = hessian_matrix(image.astype(np.float32), sigma=sigma, order="rc", use_gaussian_derivatives=False)
    return np.maximum(-hessian_matrix_eigvals(hessian)[1], 0.0) * sigma ** 2


def _ray_profiles(smoothed: np.ndarray, seed) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intensity profiles (rays x samples, one pixel apart) from the seed to the farthest image corner."""
    reach = int(np.ceil(max(np.hypot(seed[0] - y, seed[1] - x) for y in (0, smoothed.shape[0])
                            for x in (0, smoothed.shape[1]))))
    angles = np.linspace(0.0, 2.0 * np.pi, RAYS, endpoint=False)
    radii = np.arange(reach, dtype=np.float64)
    rows = seed[0] + np.outer(np.sin(angles), radii)
    cols = seed[1] + np.outer(np.cos(angles), radii)
    profiles = ndimage.map_coordinates(smoothed, [rows, cols], order=1, mode="constant", cval=np.nan)
    return profiles, radii, angles


def _ridge_candidates(profile: np.ndarray) -> np.ndarray:
    """Sample indices of the strongest ridge maxima along a ray (beyond the minimal radius, inside the image)."""
    valid = profile[~np.isnan(profile)]
    if valid.size < 3 * MIN_RADIUS_PX:
        return np.array([], dtype=int)
    inner = valid[1:-1]
    peaks = np.flatnonzero((inner >= valid[:-2]) & (inner > valid[2:])) + 1
    peaks = peaks[peaks >= MIN_RADIUS_PX]
    if peaks.size == 0:
        return peaks
    strong = peaks[valid[peaks] >= STRONG_RIDGE * valid[peaks].max()]
    # the strongest clear ridges, nearest first: the skull is the brightest echo, while the brain inside a large
    # head can show more than CANDIDATES_PER_RAY weaker ridges before it
    strongest = np.sort(strong[np.argsort(-valid[strong], kind="stable")[:CANDIDATES_PER_RAY]])
    return strongest


def _point(seed, angle: float, radius: float) -> tuple[float, float]:
    return seed[0] + radius * np.sin(angle), seed[1] + radius * np.cos(angle)


def _fit_conic(points: np.ndarray) -> Ellipse | None:
    """Least-squares ellipse through points (Fitzgibbon's direct fit, Halir-Flusser form)."""
    y, x = points[:, 0], points[:, 1]
    mean_y, mean_x = y.mean(), x.mean()
    scale = max(float(np.sqrt(((y - mean_y) ** 2 + (x - mean_x) ** 2).mean())), 1e-9)
    y, x = (y - mean_y) / scale, (x - mean_x) / scale
    quadratic = np.column_stack([x * x, x * y, y * y])
    linear = np.column_stack([x, y, np.ones_like(x)])
    s1, s2, s3 = quadratic.T @ quadratic, quadratic.T @ linear, linear.T @ linear
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        return None
    m = s1 + s2 @ t
    m = np.array([m[2] / 2.0, -m[1], m[0] / 2.0])
    try:
        eigenvalues, eigenvectors = np.linalg.eig(m)
    except np.linalg.LinAlgError:
        return None
    eigenvectors = np.real(eigenvectors)
    condition = 4 * eigenvectors[0] * eigenvectors[2] - eigenvectors[1] ** 2
    good = np.flatnonzero(condition > 0)
    if good.size == 0:
        return None
    a1 = eigenvectors[:, good[0]]
    a, b, c, d, e, f = (*a1, *(t @ a1))
    return _conic_to_ellipse(a, b, c, d, e, f, scale, mean_y, mean_x)


def _conic_to_ellipse(a, b, c, d, e, f, scale, mean_y, mean_x) -> Ellipse | None:
    """Centre, semi-axes and angle of ``a x² + b xy + c y² + d x + e y + f = 0`` (normalised coordinates)."""
    denominator = b * b - 4 * a * c
    if denominator >= 0:
        return None
    x0 = (2 * c * d - b * e) / denominator
    y0 = (2 * a * e - b * d) / denominator
    value = a * x0 * x0 + b * x0 * y0 + c * y0 * y0 + d * x0 + e * y0 + f
    matrix = np.array([[a, b / 2.0], [b / 2.0, c]])
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    squared = -value / eigenvalues
    if np.any(squared <= 0):
        return None
    semi = np.sqrt(squared) * scale  # semi-axis along each eigenvector (x, y components)
    major = int(np.argmax(semi))
    vector = eigenvectors[:, major]  # (x, y)
    angle = float(np.arctan2(vector[0], vector[1]))  # against the row (y) axis
    return Ellipse((float(mean_y + y0 * scale), float(mean_x + x0 * scale)),
                   (float(semi[major]), float(semi[1 - major])), angle)


def _plausible(ellipse: Ellipse, seed, shape) -> bool:
    a, b = ellipse.axes
    if b < MIN_RADIUS_PX or a > MAX_AXIS_RATIO * b or a > max(shape):
        return False
    return bool(ellipse.normalised_radius(np.array(seed, dtype=np.float64).reshape(2, 1))[0] < SEED_OFFSET)


def _inliers(ellipse: Ellipse, seed, angles, radii, candidates) -> list[tuple[int, int]]:
    """(ray, sample) pairs: per ray the candidate nearest the ellipse, when within 3 % of its radius (>= 2 px)."""
    distances = _ray_exit_distance(ellipse, seed, angles)
    found = []
    for ray, options in enumerate(candidates):
        if not len(options):
            continue
        gaps = np.abs(radii[options] - distances[ray])
        nearest = int(np.argmin(gaps))
        if gaps[nearest] <= max(2.0, 0.03 * distances[ray]):
            found.append((ray, int(options[nearest])))
    return found


def _candidate_table(candidates, radii, ridges) -> tuple[np.ndarray, np.ndarray]:
    """Candidate radii and ridge strengths as (rays x CANDIDATES_PER_RAY) arrays, NaN / 0 where a ray has fewer."""
    radius = np.full((len(candidates), CANDIDATES_PER_RAY), np.nan)
    strength = np.zeros_like(radius)
    for ray, options in enumerate(candidates):
        radius[ray, :len(options)] = radii[options]
        strength[ray, :len(options)] = ridges[ray, options]
    return radius, strength


def _score(ellipse: Ellipse, seed, angles, table) -> float:
    """Ridge strength of the candidates on the ellipse (one per ray), less INSIDE_PENALTY times the strongest
    candidate well inside it on each ray: the skull is the first strong ridge around the seed, so an ellipse that
    jumps over a strong ridge to a bright structure beyond the head loses."""
    radius, strength = table
    distances = _ray_exit_distance(ellipse, seed, angles)[:, None]
    tolerance = np.maximum(2.0, 0.03 * distances)
    with np.errstate(invalid="ignore"):
        gaps = np.abs(radius - distances)
        on = np.where(gaps <= tolerance, strength, 0.0)
        inside = np.where(radius < distances - INSIDE_MARGIN * tolerance, strength, 0.0)
    return float(on.max(axis=1).sum() - INSIDE_PENALTY * inside.max(axis=1).sum())


def _strong(inliers: list[tuple[int, int]], ridges: np.ndarray) -> list[tuple[int, int]]:
    """The inliers whose ridge is at least WEAK_RIDGE of the inliers' median strength (echo dropout where the skull
    runs along the beam gives weak, misplaced maxima)."""
    if not inliers:
        return inliers
    strengths = np.array([ridges[ray, sample] for ray, sample in inliers])
    keep = strengths >= WEAK_RIDGE * float(np.median(strengths))
    return [pair for pair, kept in zip(inliers, keep) if kept]


def _ray_exit_distance(ellipse: Ellipse, seed, angles: np.ndarray) -> np.ndarray:
    """Distance from the seed (inside the ellipse) to the ellipse along each ray."""
    cos, sin = np.cos(ellipse.angle), np.sin(ellipse.angle)
    dy, dx = seed[0] - ellipse.centre[0], seed[1] - ellipse.centre[1]
    p_u, p_v = dy * cos + dx * sin, -dy * sin + dx * cos
    ray_y, ray_x = np.sin(angles), np.cos(angles)
    d_u, d_v = ray_y * cos + ray_x * sin, -ray_y * sin + ray_x * cos
    a2, b2 = ellipse.axes[0] ** 2, ellipse.axes[1] ** 2
    qa = d_u ** 2 / a2 + d_v ** 2 / b2
    qb = 2 * (p_u * d_u / a2 + p_v * d_v / b2)
    qc = p_u ** 2 / a2 + p_v ** 2 / b2 - 1.0
    return (-qb + np.sqrt(np.maximum(qb * qb - 4 * qa * qc, 0.0))) / (2 * qa)


def _crest(profile: np.ndarray, peak: int) -> float:
    """Sub-sample position of a maximum: the vertex of the parabola through it and its two neighbours."""
    if not 0 < peak < len(profile) - 1 or not SUBPIXEL:
        return float(peak)
    left, centre, right = (float(v) for v in profile[peak - 1:peak + 2])
    curvature = left - 2.0 * centre + right
    if not np.isfinite(curvature) or curvature >= 0:
        return float(peak)
    return peak + float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def _crossing(values: np.ndarray, index: int, level: float) -> float:
    """Where ``values`` falls through ``level`` between ``index - 1`` and ``index`` (linear interpolation)."""
    if index == 0 or not SUBPIXEL:
        return float(index)
    above, below = float(values[index - 1]), float(values[index])
    return index - 1 + (above - level) / max(above - below, 1e-12)


def _outer_flank(profiles: np.ndarray, inliers: list[tuple[int, int]]) -> list[float]:
    """Per inlier ray, the distance (pixels) from the ridge crest to where it has fallen half-way to the outside
    level; rays where it does not fall by at least a quarter of the crest's contrast to the inside are left out."""
    offsets = []
    for ray, peak in inliers:
        profile = profiles[ray]
        after = profile[peak:peak + 40]
        after = after[~np.isnan(after)]
        if after.size < 3:
            continue
        floor, crest = float(np.min(after)), float(after[0])
        inside = float(np.nanmin(profile[:peak + 1]))
        if crest - floor < 0.25 * max(crest - inside, 1e-6):
            continue
        below = np.flatnonzero(after <= (crest + floor) / 2.0)
        if below.size:
            offsets.append(_crossing(after, int(below[0]), (crest + floor) / 2.0))
    return offsets
