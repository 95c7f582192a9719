"""Procedural chest radiograph phantoms, drawn with numpy.

A phantom is a map of attenuation ("density") turned into a radiograph: bright where much
tissue or bone lies in the beam, dark over the air-filled lungs, black outside the body.

Drawing happens in a fixed body frame: x from -1 (image left, the patient's right) to 1
(image right), y from -1 (top) to 1 (bottom). The normal anatomy of a few anatomical
variants (`Atlas`) is drawn once per image size and view; each image then adds its
findings to a variant's layers, draws its devices, and is mapped into the picture by an
affine warp that carries the pose and habitus nuisances (rotation, shift, width, height).
This keeps one 256 x 256 image at a few milliseconds.

Per-image code uses linear-ramp soft masks (`_ramp`) rather than sigmoids: they cost a few
array operations and give the same one-pixel anti-aliased edges.

All randomness comes from the `numpy.random.Generator` passed in, so an image is a pure
function of its generator state, its findings and its nuisances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage
from scipy.special import expit

from bench.data.phantom.findings import Finding

N_VARIANTS = 6  # normal anatomical variants per view
# The body frame is drawn a little beyond the picture ([-MARGIN, MARGIN] rather than
# [-1, 1]) so that rotating or shifting the patient never pulls an edge into view.
MARGIN = 1.15
_LAT_CP = 0.70  # costophrenic sulcus of the lateral view
_ATLAS_SEED = 20241003  # the variants are part of the generator, not of a dataset's seed


@dataclass(frozen=True)
class Nuisance:
    """Acquisition and patient factors that change the picture but are not findings."""

    rotation_deg: float = 0.0  # in-plane rotation of the patient
    shift_x: float = 0.0  # in body units (the image is 2 wide)
    shift_y: float = 0.0
    width: float = 1.0  # body habitus: thorax width scale
    height: float = 1.0  # thorax height scale (also inspiration depth)
    exposure: float = 1.0  # gamma applied to the normalised image (>1 darker)
    contrast: float = 1.0  # multiplies the spread around mid-grey
    noise: float = 0.015  # standard deviation of additive noise, in [0, 1] intensity
    inverted: bool = False  # displayed with black and white swapped
    variant: int = 0  # which normal anatomical variant

    @staticmethod
    def sample(rng: np.random.Generator, width: float = 1.0, height: float = 1.0, variant: int | None = None) -> "Nuisance":
        return Nuisance(
            rotation_deg=float(rng.normal(0.0, 2.5)),
            shift_x=float(rng.normal(0.0, 0.025)),
            shift_y=float(rng.normal(0.0, 0.025)),
            width=float(width * rng.uniform(0.97, 1.03)),
            height=float(height * rng.uniform(0.96, 1.04)),
            exposure=float(np.exp(rng.normal(0.0, 0.18))),
            contrast=float(rng.uniform(0.8, 1.15)),
            noise=float(rng.uniform(0.006, 0.035)),
            inverted=bool(rng.random() < 0.02),
            variant=int(rng.integers(N_VARIANTS)) if variant is None else variant,
        )


def _ramp(signed: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-mask from a signed distance (positive inside), `width` wide."""
    return np.clip(0.5 + signed * (1.0 / width), 0.0, 1.0)


def _bump(frac: np.ndarray, lo: float, hi: float, soft: float) -> np.ndarray:
    """About 1 for frac in [lo, hi], falling off smoothly outside."""
    return expit((frac - lo) / soft) * expit((hi - frac) / soft)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise with values of order 1: a coarse random grid, upsampled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))


def _strength(f: Finding | None) -> float:
    """How strongly a finding is drawn: subtle findings (reported with hedges) are faint."""
    if f is None:
        return 0.0
    return 0.45 if f.subtle else 1.0


def _rib_density(X: np.ndarray, Y: np.ndarray, lat: np.ndarray, fracture: Finding | None, edge: float) -> np.ndarray:
    """Posterior and anterior ribs; a fracture breaks and offsets one posterior rib.

    Posterior ribs arch up from the spine and fall away along the lateral chest wall; the
    rib coordinate `t` counts ribs from the top, with spacing widening downward, and a rib
    is where its fractional part lies in a band. Anterior ribs are fainter and slant down
    towards the sternum.
    """
    ax = np.abs(X)
    u = np.clip(ax - 0.06, 0.0, None)
    v = Y + 0.62 * u - 1.05 * u**2 - 0.6 * np.clip(u - 0.55, 0.0, None) ** 2
    t = 10.5 * np.clip((v + 0.88) / 1.6, 0.0, None) ** 0.8
    gap = 0.0
    if fracture is not None:
        k, ub = fracture.loc
        side = (X > 0) if fracture.side == "left" else (X < 0)
        near = side & (np.abs(t - (k + 0.35)) < 0.55) & (np.abs(ax - ub) < 0.14)
        t = t + (0.16 if fracture.subtle else 0.32) * (near & (ax > ub))
        gap = near * np.exp(-(((ax - ub) / (edge * 0.9)) ** 2))
    frac = t - np.floor(t)
    band = _bump(frac, 0.08, 0.40, 0.03)
    cortex = _bump(frac, 0.06, 0.11, 0.012) + _bump(frac, 0.37, 0.42, 0.012)
    posterior = (0.7 * band + 0.45 * cortex) * (t > 0.9) * (t < 10.4) * (1.0 - gap)
    va = Y - 0.42 * (0.92 - ax)
    at = (va + 1.2) / 0.2
    afrac = at - np.floor(at)
    anterior = 0.35 * _bump(afrac, 0.12, 0.42, 0.05) * expit((ax - 0.25) / 0.05) * (at > 1.5) * (at < 6.3)
    region = expit((lat + 0.08 - ax) / 0.02) * expit((ax - 0.07) / 0.01)
    return (posterior + anterior) * region


@dataclass
class Atlas:
    """The normal anatomy of one variant of one view at one size, in the body frame."""

    size: int
    ap: bool
    X: np.ndarray
    Y: np.ndarray
    lat: np.ndarray  # lateral lung border (distance from the midline) at each row
    apex: np.ndarray  # lung apex curve
    med: np.ndarray  # medial lung border
    dome: np.ndarray  # diaphragm
    cp_angle: float  # y of the costophrenic angles
    heart_shape: tuple[float, float, float, float, float]  # centre x, y, semi-axes a, b, tilt
    lung: np.ndarray  # soft lung mask
    heart: np.ndarray
    soft_tissue: np.ndarray  # heart, mediastinum and aortic knob
    base: np.ndarray  # density of everything but the lung air
    air_term: np.ndarray  # density added per unit of aerated lung (negative) incl. vessels
    vessels: np.ndarray
    ribs: np.ndarray
    rib_weight: np.ndarray  # how much the ribs show at each pixel
    above: np.ndarray  # soft mask of the chest above the diaphragm
    air: np.ndarray  # aerated lung: lung not covered by heart or mediastinum
    base_ribs: np.ndarray  # base with the ribs added: the density of a normal chest minus air

    @property
    def edge(self) -> float:
        return 2.0 / self.size

    def heart_mask(self, grow: float) -> np.ndarray:
        """The cardiac silhouette, `grow` times its normal width.

        Two overlapping ellipses: the left ventricle, tilted so that the apex points down
        to the patient's left, and the right atrium, a gentle bulge right of the spine.
        A big heart grows mostly to the patient's left, as the left ventricle dilates.
        """
        cx, cy, a, b, tilt = self.heart_shape
        e = 1.5 * self.edge
        a2, b2 = a * grow, b * (1.0 + 0.5 * (grow - 1.0))
        lv_x, lv_y = cx + 0.07 + 0.6 * (a2 - a), cy + 0.02 - 0.3 * (b2 - b)
        dx, dy = self.X - lv_x, self.Y - lv_y
        c, s = np.cos(tilt), np.sin(tilt)
        r = np.sqrt(((c * dx + s * dy) / a2) ** 2 + ((-s * dx + c * dy) / b2) ** 2)
        lv = _ramp((1.0 - r) * b2, e)
        ra_a, ra_b = 0.17 * (1.0 + 0.6 * (grow - 1.0)), 0.2
        r2 = np.sqrt(((self.X - (cx - 0.12 - 0.3 * (ra_a - 0.17))) / ra_a) ** 2 + ((self.Y - (cy + 0.07)) / ra_b) ** 2)
        ra = _ramp((1.0 - r2) * ra_a, e)
        return np.maximum(lv, ra)


def canvas_size(size: int) -> int:
    """Pixels of the body-frame canvas for a picture of `size` pixels."""
    return int(round(size * MARGIN))


def build_atlas(size: int, ap: bool, variant: int) -> Atlas:
    """Draw the normal anatomy of one variant (slow-ish: done once per size, view and variant)."""
    rng = np.random.default_rng([_ATLAS_SEED, size, int(ap), variant])
    n = canvas_size(size)
    lin = ((np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0) * MARGIN
    X, Y = np.meshgrid(lin, lin)
    ax = np.abs(X)
    left = X > 0
    edge = 2.0 / size

    def soft(signed: np.ndarray, width: float = 1.0) -> np.ndarray:
        return expit(signed / (edge * width)).astype(np.float32)

    # Body outline: neck and sloping shoulders, then the trunk.
    shoulder = 0.30 + 0.66 * expit((Y + 0.8) / 0.07)
    trunk_w = shoulder * (1.0 - 0.03 * np.clip(Y, 0, None))
    body = soft(trunk_w - ax, 3.0)
    thick = np.sqrt(np.clip(1.0 - (X / (trunk_w + 0.05)) ** 2, 0.0, 1.0))
    base = body * (0.34 + 0.27 * thick)

    # Lungs, bounded by the lateral chest wall, the apex, the mediastinum and the diaphragm.
    # AP films (portable, often supine) are shallower inspirations: higher domes.
    lift = 0.07 if ap else 0.0
    lat0 = rng.uniform(0.77, 0.83)
    dome_r, dome_l = rng.uniform(0.27, 0.33) + lift, rng.uniform(0.33, 0.38) + lift
    cp_angle = float(0.74 + 0.5 * lift + rng.uniform(-0.02, 0.02))
    lat = lat0 - 0.22 * np.clip(-Y - 0.15, 0.0, None) ** 2 - 0.06 * np.clip(Y - 0.45, 0, None)
    dome_top = np.where(left, dome_l, dome_r)
    dome = cp_angle - (cp_angle - dome_top) * np.clip(1.0 - ((ax - 0.40) / 0.46) ** 2, 0.0, 1.0)
    apex = -0.80 + 1.5 * (ax - 0.36) ** 2
    med = 0.085 + 0.035 * expit((-0.45 - Y) / 0.05)
    lung_sd = np.minimum(np.minimum(lat - ax, Y - apex), np.minimum(ax - med, dome - Y))
    lung = soft(lung_sd, 1.5)

    # Heart: a tilted ellipse whose apex points down and to the patient's left.
    mag = 1.08 if ap else 1.0  # the AP projection magnifies the heart
    heart_shape = (
        float(0.11 + rng.uniform(-0.02, 0.02)),
        float(0.30 + 0.6 * lift + rng.uniform(-0.02, 0.02)),
        float(0.33 * mag * rng.uniform(0.94, 1.06)),
        float(0.23 * mag),
        0.5,
    )
    mediastinum = soft(0.10 + 0.03 * expit((Y + 0.3) / 0.05) - np.abs(X - 0.01), 1.5) * expit((0.3 - Y) / 0.05)
    knob = soft(0.06 - np.hypot(X - 0.10, Y + 0.34), 1.5)
    atlas = Atlas(size, ap, X, Y, lat, apex, med, dome, cp_angle, heart_shape, lung, lung, lung, base, base, base, base, base, base, base, base)
    heart = atlas.heart_mask(1.0)
    soft_tissue = np.maximum(np.maximum(heart, mediastinum), knob)

    # Lung markings: vessels that branch out from the hila. Noise sampled in polar
    # coordinates around each hilum is stretched along the radius, so its zero crossings
    # make thin wavy lines running outward; they thin and fade towards the periphery.
    hx, hy = 0.18, -0.02
    rad = np.hypot(ax - hx, Y - hy)
    theta = np.arctan2(Y - hy, (ax - hx) + 0.02)
    grid = rng.standard_normal((64, 64)).astype(np.float32)
    field = ndimage.map_coordinates(
        grid, [(theta + np.pi) / (2 * np.pi) * 26.0 + 20 * left, np.sqrt(rad) * 7.0], order=3, mode="wrap"
    )
    width = 0.12 + 0.35 * np.exp(-rad / 0.15)
    vessels = np.exp(-((field / width) ** 2)) * np.exp(-rad / 0.38)
    vessels = vessels + 0.9 * np.exp(-(((ax - hx - 0.02) / 0.06) ** 2 + ((Y - hy) / 0.14) ** 2))  # hilar vessels
    vessels = ndimage.gaussian_filter(vessels, 0.7 * size / 256.0)
    air_term = -0.42 + 0.12 * vessels

    # Below the diaphragm: liver on the right, a stomach bubble under the left dome.
    abdomen = soft(Y - dome, 2.0) * body * soft(0.86 - ax, 4.0)
    above = expit((dome + 0.03 - Y) / 0.02)
    base = base + 0.07 * abdomen + 0.05 * heart * above
    bubble = soft(0.045 - np.hypot((X - 0.48) / 1.6, Y - (dome_l + 0.1)), 3.0)
    base = base - 0.08 * bubble * abdomen

    # Trachea and main bronchi: an air column down the midline that divides at the carina.
    carina = -0.24
    trachea = soft(0.032 - np.abs(X - 0.005), 1.0) * expit((carina - Y) / 0.02)
    tt = np.clip((Y - carina) / 0.15, 0.0, 1.0)
    bronchi = np.maximum(*(soft(0.022 - np.abs(X - (0.005 + sg * 0.15 * tt)), 1.0) for sg in (-1.0, 1.0)))
    bronchi = bronchi * expit((Y - carina + 0.01) / 0.015) * expit((carina + 0.15 - Y) / 0.015)
    base = base - 0.12 * np.maximum(trachea, bronchi)

    # Spine: vertebral bodies with disc spaces and pedicles, faint behind the heart.
    spine = soft(0.075 - np.abs(X - 0.005), 1.5) * expit((Y + 0.98) / 0.02)
    vp = (Y + 1.0) / 0.115
    vfrac = vp - np.floor(vp)
    bodies = _bump(vfrac, 0.12, 0.88, 0.05)
    pedicles = soft(0.02 - np.hypot(ax - 0.052, (vfrac - 0.4) * 0.115), 1.0)
    base = base + spine * (0.04 + 0.05 * bodies + 0.06 * pedicles) * (1.0 - 0.5 * heart)

    # Ribs show best over the lungs; kept separate so a fracture can replace them locally.
    ribs = _rib_density(X, Y, lat, None, edge)
    rib_weight = 0.14 * (0.35 + 0.65 * expit((dome + 0.05 - Y) / 0.03)) * (1.0 - 0.55 * soft_tissue)
    rib_weight *= 1.0 + 0.15 * _smooth_noise(rng, n, 6)

    # Clavicles: S-shaped bars from the sternal notch out to the shoulders.
    cu = ax - 0.06
    clav_y = -0.73 - 0.12 * cu + 0.05 * np.sin(cu * 5.5) - (0.05 if ap else 0.0) * cu
    base = base + 0.26 * soft(0.034 - np.abs(Y - clav_y), 1.5) * soft(cu, 2.0) * soft(0.66 - cu, 3.0)
    # Scapulae: faint wedges over the upper lateral lungs (less rotated out on AP films).
    scap = soft(0.13 - np.hypot((ax - 0.86) / 1.6, Y + 0.38), 8.0)
    base = base + (0.10 if ap else 0.05) * scap
    # Breast and chest-wall soft tissue over the lower lateral lungs.
    base = base + 0.04 * soft(ax - 0.45, 20.0) * expit((Y - 0.1) / 0.1) * body

    # Radiographs are never this crisp: soften the whole normal anatomy a little.
    base = ndimage.gaussian_filter(base, 0.8 * size / 256.0)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return Atlas(
        size, ap, f32(X), f32(Y), f32(lat), f32(apex), f32(med), f32(dome), cp_angle, heart_shape,
        f32(lung), f32(heart), f32(soft_tissue), f32(base), f32(air_term), f32(vessels),
        f32(ribs), f32(rib_weight), f32(above), f32(lung * (1.0 - soft_tissue)), f32(base + ribs * rib_weight),
    )  # fmt: skip


class Painter:
    """Draws phantoms; holds the atlases it has built (one per size, view and variant)."""

    def __init__(self, size: int = 256):
        self.size = size
        self.canvas = canvas_size(size)
        self._atlases: dict[tuple[bool, int], Atlas] = {}
        self._lateral: dict[str, np.ndarray] | None = None
        # A bank of pixel noise: each image takes a random window of it (cheaper than
        # drawing fresh Gaussian noise for every pixel).
        self._noise = np.random.default_rng(_ATLAS_SEED).standard_normal((2 * size, 2 * size)).astype(np.float32)

    def atlas(self, ap: bool, variant: int) -> Atlas:
        key = (ap, variant % N_VARIANTS)
        if key not in self._atlases:
            self._atlases[key] = build_atlas(self.size, ap, key[1])
        return self._atlases[key]

    # ----------------------------------------------------------------------------------
    def frontal(self, rng: np.random.Generator, findings: Mapping[str, Finding], nz: Nuisance, ap: bool) -> np.ndarray:
        """A frontal (PA or AP) radiograph phantom, uint8 of shape (size, size)."""
        A = self.atlas(ap, nz.variant)
        X, Y, e = A.X, A.Y, A.edge
        ax = np.abs(X)
        left = X > 0
        f = findings.get
        base = A.base_ribs.copy()
        lung, soft_tissue = A.lung, A.soft_tissue
        air = A.air

        dome = A.dome

        cm = f("cardiomegaly")
        if cm is not None:
            grow = 1.0 + (0.14 + 0.08 * cm.severity) * _strength(cm)
            heart = A.heart_mask(grow)
            base += 0.05 * (heart - A.heart) * A.above
            air = lung * (1.0 - np.maximum(soft_tissue, heart))

        at = f("atelectasis")
        if at is not None:
            # Volume loss: the hemidiaphragm on the side of the atelectasis rises, filling
            # the strip of lung above it with abdominal density.
            rise = (0.035 + 0.025 * at.severity) * _strength(at)
            side = left if at.side == "left" else ~left
            dome = A.dome - rise * side
            strip = _ramp(Y - dome, 2 * e) * side
            base += 0.07 * strip * lung
            air = air * (1.0 - strip)

        # Pleural effusions: fluid fills the base, its surface a meniscus climbing the wall.
        fluid = None
        for name, is_left in (("pleural_effusion_left", True), ("pleural_effusion_right", False)):
            eff = f(name)
            if eff is None:
                continue
            # A small effusion only blunts the costophrenic angle; a moderate one covers
            # the hemidiaphragm; a large one fills the lower half of the hemithorax.
            depth = (0.12, 0.44, 0.68)[eff.severity - 1] * (0.8 if eff.subtle else 1.0)
            rise = min(0.6 * depth, 0.15)
            surface = A.cp_angle - depth - rise * np.clip((ax - 0.15) / 0.65, 0.0, 1.0) ** 2
            m = _ramp(Y - surface, 0.06) * (left if is_left else ~left) * _ramp(A.lat + 0.03 - ax, 3 * e)
            m *= _strength(eff)
            fluid = m if fluid is None else np.maximum(fluid, m)
        if fluid is not None:
            base += 0.09 * fluid * lung
            air = air * (1.0 - 0.92 * fluid)

        tex = _smooth_noise(rng, self.canvas, 8)
        air_term = A.air_term * (1.0 + 0.08 * tex)

        ptx = f("pneumothorax")
        if ptx is not None:
            # The lung falls away from the apex and lateral wall: a lucent rim with no
            # vessels, bounded by the visceral pleural line.
            side = left if ptx.side == "left" else ~left
            gap = (0.06, 0.11, 0.17)[ptx.severity - 1] * (0.7 if ptx.subtle else 1.0)
            inner_sd = np.minimum(np.minimum(A.lat - gap - ax, Y - (A.apex + 1.4 * gap)), np.minimum(ax - A.med, dome - Y + 0.5 * gap))
            inner = _ramp(inner_sd, e)
            space = air * (1.0 - inner) * side
            air_term = air_term - space * (A.air_term + 0.47)  # no markings, darker
            line = np.clip(1.0 - np.abs(inner_sd) * (1.0 / (1.1 * e)), 0.0, 1.0) * side * lung
            base += (0.16 * line + 0.03 * inner * side * lung) * _strength(ptx)

        density = base + air * air_term

        ed = f("edema")
        if ed is not None:
            s = _strength(ed) * (0.6 + 0.25 * ed.severity)
            # Bat-wing haze around both hila, with blurred vessels and basal Kerley lines.
            haze = np.exp(-(((ax - 0.2) / 0.28) ** 2 + ((Y - 0.05) / 0.38) ** 2)) * (1.0 + 0.25 * tex)
            kerley = ((Y * 38.0) % 1.0 < 0.2) * _ramp(ax - (A.lat - 0.07), 4 * e) * _ramp(Y - 0.15, 4 * e)
            density += s * (0.2 * haze + 0.04 * kerley - 0.04 * A.vessels) * air

        co = f("consolidation")
        if co is not None:
            cx, cy = co.loc
            radius = (0.11, 0.16, 0.22)[co.severity - 1]
            shape = _smooth_noise(rng, self.canvas, 10)
            rr = np.hypot((X - cx) / 1.2, Y - cy) / radius + 0.45 * shape + 0.15 * tex
            blob = _ramp((1.0 - rr) * radius, 14 * e) * air
            # Air bronchograms: dark tubes inside the airless lung.
            bron = np.exp(-((tex * 3.0 + shape * 2.0) % 2.0 - 1.0) ** 2 / 0.01) * blob
            density += _strength(co) * (0.28 * blob - 0.08 * bron)

        if at is not None:
            cx, cy = at.loc
            # Plate-like (discoid) atelectasis: a thin, slightly oblique band at the base,
            # and some basal opacity on the side of the volume loss.
            tilt = 0.18 if at.side == "left" else -0.18
            d = (Y - cy) - tilt * (X - cx)
            length = 0.13 + 0.04 * at.severity
            plate = _ramp(0.012 + 0.006 * at.severity - np.abs(d), e) * _ramp(length - np.abs(X - cx), 6 * e)
            basal = _ramp(Y - (dome - 0.1), 0.1) * (left if at.side == "left" else ~left)
            density += _strength(at) * (0.15 * plate + 0.04 * at.severity * basal) * air

        nd = f("nodule")
        if nd is not None:
            cx, cy = nd.loc
            radius = (0.028, 0.036, 0.046)[nd.severity - 1]
            dot = _ramp(radius - np.hypot(X - cx, Y - cy), 2 * e)
            density += _strength(nd) * 0.26 * dot

        rf = f("rib_fracture")
        if rf is not None:
            density += (_rib_density(X, Y, A.lat, rf, e) - A.ribs) * A.rib_weight

        metal = self._devices(findings)
        if metal is not None:
            density += 0.9 * metal
        return self._expose(density, nz, rng)

    # ----------------------------------------------------------------------------------
    def _lateral_layers(self) -> dict[str, np.ndarray]:
        """The normal anatomy of the lateral view, built once per painter."""
        if self._lateral is not None:
            return self._lateral
        n, e = self.canvas, 2.0 / self.size
        lin = ((np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0) * MARGIN
        X, Y = np.meshgrid(lin, lin)
        body_w = 0.80 - 0.18 * np.clip(-Y - 0.4, 0, None)
        body = _ramp(body_w - np.abs(X + 0.02), 3 * e) * _ramp(Y + 0.98, 3 * e)
        base = body * (0.52 + 0.06 * np.clip(Y, 0, None))
        dome = _LAT_CP - 0.30 * np.clip(1.0 - ((X - 0.05) / 0.6) ** 2, 0.0, 1.0) - 0.08 * (X < 0)
        lung_sd = np.minimum(0.45 * (1.0 - np.hypot((X + 0.04) / 0.58, (Y - 0.08) / 0.84)), dome - Y)
        lung = _ramp(lung_sd, 1.5 * e)
        # Arms raised out of the way: humeri cross the upper field.
        base = base + 0.1 * _ramp(0.09 - np.abs(Y + 0.55 + 0.35 * X), 3 * e) * _ramp(0.5 - np.abs(X), 3 * e)
        # Spine at the back, sternum at the front.
        vp = (Y + 1.0) / 0.11
        bodies = _bump(vp - np.floor(vp), 0.12, 0.88, 0.05)
        spine = _ramp(0.085 - np.abs(X - (0.58 - 0.08 * Y**2)), 2 * e) * bodies * (Y > -0.95)
        sternum = _ramp(0.022 - np.abs(X + 0.68 - 0.06 * Y), 2 * e) * (Y > -0.6) * (Y < 0.25)
        base = base + 0.16 * spine + 0.12 * sternum
        self._lateral = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in dict(X=X, Y=Y, lung=lung, base=base).items()}
        return self._lateral

    def lateral(self, rng: np.random.Generator, findings: Mapping[str, Finding], nz: Nuisance) -> np.ndarray:
        """A lateral radiograph phantom (patient facing image left), uint8.

        Kept simple (the reader drops lateral images): body, lungs, heart, spine, sternum;
        cardiomegaly, effusions and sternotomy wires show.
        """
        L = self._lateral_layers()
        X, Y, lung = L["X"], L["Y"], L["lung"]
        e = 2.0 / self.size
        f = findings.get
        cm = f("cardiomegaly")
        r = 0.3 * (1.0 + (0.12 + 0.07 * cm.severity) * _strength(cm) if cm else 1.0)
        heart = _ramp((1.0 - np.hypot((X + 0.22) / r, (Y - 0.33) / r)) * 0.3, 1.5 * e)
        air = lung * (1.0 - heart)
        for name in ("pleural_effusion_left", "pleural_effusion_right"):
            eff = f(name)
            if eff is not None:  # fluid in the posterior costophrenic sulcus
                level = _LAT_CP - (0.06, 0.2, 0.38)[eff.severity - 1]
                air = air * (1.0 - 0.9 * _strength(eff) * _ramp(Y - (level - 0.2 * np.clip(X, 0, None)), 0.06) * (X > -0.1))
        tex = _smooth_noise(rng, self.canvas, 10)
        density = L["base"] - 0.4 * air * (1.0 + 0.08 * tex) - 0.12 * lung * heart + 0.08 * heart
        if "sternotomy_wires" in findings:
            for yy in np.linspace(-0.5, 0.15, 6):
                density = density + 0.8 * _ramp(0.02 - np.hypot(X + 0.68 - 0.06 * yy, Y - yy), 1.5 * e)
        return self._expose(density, nz, rng)

    # ----------------------------------------------------------------------------------
    def _devices(self, findings: Mapping[str, Finding]) -> np.ndarray | None:
        names = {"pacemaker", "endotracheal_tube", "central_line", "sternotomy_wires"} & set(findings)
        if not names:
            return None
        n = self.canvas
        scale = self.size / 256.0
        im = Image.new("L", (n, n), 0)
        dr = ImageDraw.Draw(im)

        def px(x: float, y: float) -> tuple[float, float]:
            return (x / MARGIN + 1.0) / 2.0 * n - 0.5, (y / MARGIN + 1.0) / 2.0 * n - 0.5

        def line(points: list[tuple[float, float]], width: float, value: int = 255) -> None:
            dr.line([px(*p) for p in points], fill=value, width=max(1, round(width * scale)), joint="curve")

        if "pacemaker" in findings:
            # Generator in the left infraclavicular pocket, leads to the right atrium and
            # the right ventricular apex.
            cx, cy = 0.50, -0.58
            dr.rounded_rectangle([*px(cx - 0.09, cy - 0.06), *px(cx + 0.09, cy + 0.06)], radius=3 * scale, fill=255)
            line([(cx - 0.07, cy + 0.02), (0.30, -0.52), (0.09, -0.40), (-0.04, -0.10), (0.02, 0.14), (0.24, 0.40)], 2.0, 235)
            line([(cx - 0.07, cy), (0.28, -0.56), (0.06, -0.42), (-0.06, -0.14), (-0.10, 0.02)], 2.0, 235)
        if "endotracheal_tube" in findings:
            tip = -0.36
            line([(0.0, -1.05), (0.004, -0.7), (0.004, tip)], 4.0, 110)  # the tube wall
            line([(0.012, -1.05), (0.016, -0.7), (0.016, tip)], 1.0, 255)  # its radiopaque stripe
        if "central_line" in findings:
            if findings["central_line"].side == "right":  # right internal jugular to the SVC
                line([(-0.24, -1.05), (-0.17, -0.80), (-0.09, -0.62), (-0.065, -0.35), (-0.06, -0.12)], 1.6, 215)
            else:  # left subclavian across the mediastinum to the SVC
                line([(0.80, -0.80), (0.45, -0.70), (0.15, -0.55), (-0.03, -0.42), (-0.06, -0.16)], 1.6, 215)
        if "sternotomy_wires" in findings:
            for i in range(6):
                y = -0.50 + i * 0.125
                dr.ellipse([*px(-0.015, y - 0.018), *px(0.055, y + 0.018)], outline=255, width=max(1, round(1.5 * scale)))
                line([(0.02, y + 0.018), (0.03, y + 0.045)], 1.5)  # the twisted end
        im = im.filter(ImageFilter.BoxBlur(0.6 * scale))
        return np.asarray(im, dtype=np.float32) * (1.0 / 255.0)

    def _expose(self, density: np.ndarray, nz: Nuisance, rng: np.random.Generator) -> np.ndarray:
        """Density in the body frame -> posed, exposed, noisy 8-bit radiograph."""
        size = self.size
        # Exposure and contrast as a lookup table on 8-bit values (cheaper than on floats).
        grey = np.linspace(0.0, 1.0, 256) ** nz.exposure
        lut = np.clip(0.5 + (grey - 0.5) * nz.contrast, 0.0, 1.0)
        lut = np.round(lut * 255.0).astype(np.uint8)
        img8 = np.clip(density * (255.0 / 0.95), 0.0, 255.0).astype(np.uint8)
        img = Image.fromarray(lut[img8], mode="L")
        # Pose and habitus: output pixel -> body-frame pixel (PIL wants that direction).
        t = np.deg2rad(nz.rotation_deg)
        c, s = np.cos(t), np.sin(t)
        # Output pixel q -> p = (q - h) k in [-1, 1]; body b = A p + t (rotation, then
        # habitus); canvas pixel = b / k_in + h_in.
        h, k = (size - 1) / 2.0, 2.0 / size
        n = self.canvas
        h_in, k_in = (n - 1) / 2.0, 2.0 * MARGIN / n
        a11, a12 = c / nz.width, s / nz.width
        a21, a22 = -s / nz.height, c / nz.height
        t1, t2 = -nz.shift_x / nz.width, -nz.shift_y / nz.height
        r = k / k_in
        coeffs = (
            float(a11 * r), float(a12 * r), float((t1 - (a11 + a12) * h * k) / k_in + h_in),
            float(a21 * r), float(a22 * r), float((t2 - (a21 + a22) * h * k) / k_in + h_in),
        )  # fmt: skip
        img = img.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=int(lut[0]))
        out = np.asarray(img, dtype=np.float32)
        oy, ox = rng.integers(0, size, size=2)
        out = out + (nz.noise * 255.0) * self._noise[oy : oy + size, ox : ox + size]
        out = np.clip(out + 0.5, 0.0, 255.0).astype(np.uint8)
        return 255 - out if nz.inverted else out
