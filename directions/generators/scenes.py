"""``scenes``: the embedded default generator, procedural, differentiable and with ground truth.

A scene is one object (a soft 2-D shape from one of ten families, the class) over a
background (two-colour gradient, wavy clutter, two blurry blobs), lit from one side. Every
visual property is a named *factor*. A latent ``z ~ N(0, I)`` reaches the factors through a
fixed, seeded, smooth nonlinear mixing map::

    p = Q z + beta * tanh(M z)          (Q: random orthonormal rows, M: random Gaussian)
    factor_i = low_i + (high_i - low_i) * sigmoid(gain_i * p_i + offset_i)

so no factor is tied to one latent coordinate and a random direction moves several factors,
as in a trained GAN. The whiteness factor is the exception by design: its pre-activation is
linear and the nonlinear part is blind to its direction, so one linear latent direction
fades the background and changes nothing else. Unlike a trained GAN, it answers what the paper could only judge by eye:
the factor values, the exact object mask and the latent gradient of every factor, for any
``(z, class)``. One factor, ``whiteness``, fades the background to plain white and leaves the
object as it was: the analogue of the background-removal direction h_bg found in BigGAN.

Everything is plain tensor arithmetic, so the renderer runs on any device, at any square
resolution, and gradients flow from the pixels back to ``z``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from directions.generators.base import Generator
from directions.generators.registry import register_generator

PI = math.pi


@dataclass(frozen=True)
class Factor:
    """One factor of variation: ``low + (high - low) * sigmoid(gain * p + offset)``."""

    name: str
    low: float
    high: float
    group: str
    gain: float = 1.3
    offset: float = 0.0


# Order matters: factor i is driven by row i of the mixing map. 32 factors, one per latent
# dimension of the default 32-d latent.
FACTORS: tuple[Factor, ...] = (
    # the object
    Factor("pos_x", -0.36, 0.36, "object"),
    Factor("pos_y", -0.36, 0.36, "object"),
    Factor("scale", 0.42, 0.88, "object"),
    Factor("rotation", -PI, PI, "object", gain=1.0),
    Factor("aspect", math.log(0.7), math.log(1.4), "object"),
    Factor("obj_hue", -0.5, 1.5, "object", gain=1.0),
    Factor("obj_saturation", 0.45, 1.0, "object"),
    Factor("obj_value", 0.40, 0.90, "object"),
    Factor("texture_amplitude", 0.0, 0.30, "object"),
    Factor("texture_frequency", 3.0, 12.0, "object"),
    Factor("texture_angle", -PI / 2, PI / 2, "object"),
    Factor("texture_phase", -PI, PI, "object", gain=1.0),
    # the background
    Factor("bg_hue_a", -0.5, 1.5, "background", gain=1.0),
    Factor("bg_hue_b", -0.5, 1.5, "background", gain=1.0),
    Factor("bg_saturation", 0.05, 0.70, "background"),
    Factor("bg_value", 0.25, 0.75, "background"),
    Factor("bg_gradient_angle", -PI, PI, "background", gain=1.0),
    Factor("clutter_amplitude", 0.0, 0.25, "background"),
    Factor("clutter_frequency", 2.0, 10.0, "background"),
    Factor("clutter_phase_x", -PI, PI, "background", gain=1.0),
    Factor("clutter_phase_y", -PI, PI, "background", gain=1.0),
    Factor("blob1_x", -0.9, 0.9, "background"),
    Factor("blob1_y", -0.9, 0.9, "background"),
    Factor("blob2_x", -0.9, 0.9, "background"),
    Factor("blob2_y", -0.9, 0.9, "background"),
    Factor("blob_hue", -0.5, 1.5, "background", gain=1.0),
    Factor("blob_size", 0.10, 0.35, "background"),
    Factor("blob_opacity", 0.0, 0.6, "background"),
    # the light
    Factor("light_angle", -PI, PI, "lighting", gain=1.0),
    Factor("light_strength", 0.0, 0.35, "lighting"),
    Factor("brightness", 0.80, 1.10, "lighting"),
    # Mostly off (sigmoid(1.5 p - 3): 0.05 at p = 0, above one half for about 2 % of
    # samples), like the few product photos on white among ImageNet's classes; a shift of a
    # few units along its direction fades the background gradually, then completely.
    Factor("whiteness", 0.0, 1.0, "whiteness", gain=1.5, offset=-3.0),
)
FACTOR_NAMES: tuple[str, ...] = tuple(f.name for f in FACTORS)
FACTOR_INDEX: dict[str, int] = {name: i for i, name in enumerate(FACTOR_NAMES)}

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "hexagon", "star",
    "cross", "diamond", "ring", "crescent", "capsule",
)

_EPS = 1e-8


def _length(x: Tensor, y: Tensor) -> Tensor:
    # The epsilon keeps the gradient finite where both are zero.
    return torch.sqrt(x * x + y * y + _EPS)


def _box(u: Tensor, v: Tensor, half_u: float, half_v: float) -> Tensor:
    qx, qy = u.abs() - half_u, v.abs() - half_v
    outside = _length(qx.clamp(min=0), qy.clamp(min=0))
    inside = torch.maximum(qx, qy).clamp(max=0)
    return outside + inside


def _shape_sdf(shape: int, u: Tensor, v: Tensor) -> Tensor:
    """Signed distance (negative inside) to shape ``shape`` of unit size, in shape units."""
    name = SHAPES[shape]
    if name == "circle":
        return _length(u, v) - 0.95
    if name == "square":
        return _box(u, v, 0.8, 0.8)
    if name == "triangle":  # equilateral, pointing up (image rows grow downwards)
        k, r = math.sqrt(3.0), 0.95
        px, py = u.abs() - r, -v + r / k - 0.25
        fold = (px + k * py) > 0
        px, py = (
            torch.where(fold, (px - k * py) / 2, px),
            torch.where(fold, (-k * px - py) / 2, py),
        )
        px = px - px.clamp(min=-2 * r, max=0)
        return -_length(px, py) * torch.sign(py)
    if name == "hexagon":
        kx, ky, kz, r = -0.866025404, 0.5, 0.577350269, 0.85
        px, py = u.abs(), v.abs()
        d = (kx * px + ky * py).clamp(max=0)
        px, py = px - 2 * d * kx, py - 2 * d * ky
        px = px - px.clamp(min=-kz * r, max=kz * r)
        py = py - r
        return _length(px, py) * torch.sign(py)
    if name == "star":  # five rounded points: radius 0.68 +- 0.32 cos(5 theta)
        r = _length(u, v)
        # cos(5 theta) without atan2: Re((u + iv)^5) / r^5, smooth everywhere but the centre.
        u2, v2 = u * u, v * v
        cos5 = (u * u2 * u2 - 10 * u * u2 * v2 + 5 * u * v2 * v2) / (r**5 + 1e-6)
        cos5 = -cos5  # a point up
        return 0.75 * (r - (0.66 + 0.32 * cos5))
    if name == "cross":
        return torch.minimum(_box(u, v, 0.95, 0.3), _box(u, v, 0.3, 0.95))
    if name == "diamond":
        return (u.abs() + v.abs() - 1.0) * (1 / math.sqrt(2.0))
    if name == "ring":
        return (_length(u, v) - 0.68).abs() - 0.3
    if name == "crescent":
        return torch.maximum(_length(u, v) - 0.95, 0.78 - _length(u - 0.45, v + 0.2))
    if name == "capsule":
        px = u - u.clamp(min=-0.55, max=0.55)
        return _length(px, v) - 0.42
    raise ValueError(f"unknown shape {shape}")


def _colour(hue: Tensor, saturation: Tensor, value: Tensor) -> Tensor:
    """A smooth hue wheel: ``(n,)`` hue, saturation, value to ``(n, 3)`` RGB in [0, 1]."""
    phases = torch.tensor([0.0, 1.0 / 3.0, 2.0 / 3.0], device=hue.device, dtype=hue.dtype)
    wheel = 0.5 + 0.5 * torch.cos(2 * PI * (hue[:, None] - phases))
    return value[:, None] * (1 - saturation[:, None] + saturation[:, None] * wheel)


def _soft_cap(x: Tensor, cap: float) -> Tensor:
    """Smoothly squash ``x >= 0`` below ``cap`` (identity near zero, no hard clipping)."""
    return cap * torch.tanh(x / cap)


class ScenesGenerator(Generator):
    """The procedural scene generator; see the module docstring.

    Args:
        resolution: side of the square images, in pixels (any size from 16 up).
        latent_dim: size of z; at least the number of factors (32). Extra dimensions are
            mixed in too, but through the nonlinear term only.
        seed: seed of the mixing map. The same seed is the same generator.
        mixing: strength ``beta`` of the nonlinear part of the mixing map.
        edge_px: softness of the object's edge, in pixels (the sigmoid's temperature).
    """

    num_classes = len(SHAPES)
    factors = FACTORS
    shapes = SHAPES

    def __init__(
        self,
        resolution: int = 64,
        latent_dim: int = 32,
        seed: int = 0,
        mixing: float = 0.35,
        edge_px: float = 0.1,
    ) -> None:
        super().__init__()
        if resolution < 16:
            raise ValueError("scenes renders at 16 px and up")
        if latent_dim < len(FACTORS):
            raise ValueError(f"scenes needs latent_dim >= {len(FACTORS)} (one per factor)")
        self.resolution = int(resolution)
        self.latent_dim = int(latent_dim)
        self.seed = int(seed)
        self.mixing = float(mixing)
        self.edge_px = float(edge_px)

        rng = torch.Generator().manual_seed(self.seed)
        rotation, _ = torch.linalg.qr(torch.randn(latent_dim, latent_dim, generator=rng, dtype=torch.float64))
        n_factors = len(FACTORS)
        linear = rotation[:n_factors]
        nonlinear = torch.randn(n_factors, latent_dim, generator=rng, dtype=torch.float64) / math.sqrt(latent_dim)
        # The nonlinear part ignores the whiteness row of Q and whiteness ignores it, so a
        # shift along that row moves whiteness alone and leaves every other factor (the
        # object) exactly as it was: the clean background-removal direction the paper
        # found in BigGAN. Every other factor stays nonlinear in z.
        white = FACTOR_INDEX["whiteness"]
        white_row = linear[white]
        nonlinear = nonlinear - (nonlinear @ white_row)[:, None] * white_row[None, :]
        nonlinear[white] = 0.0
        self.register_buffer("mix_linear", linear.float().contiguous())
        self.register_buffer("mix_nonlinear", nonlinear.float().contiguous())
        self.register_buffer("factor_low", torch.tensor([f.low for f in FACTORS]))
        self.register_buffer("factor_span", torch.tensor([f.high - f.low for f in FACTORS]))
        self.register_buffer("factor_gain", torch.tensor([f.gain for f in FACTORS]))
        self.register_buffer("factor_offset", torch.tensor([f.offset for f in FACTORS]))
        coords = (torch.arange(self.resolution, dtype=torch.float32) + 0.5) / self.resolution * 2 - 1
        self.register_buffer("grid_x", coords.view(1, 1, -1).clone())
        self.register_buffer("grid_y", coords.view(1, -1, 1).clone())

    # ----------------------------------------------------------------- latent -> factors
    def pre_activations(self, z: Tensor) -> Tensor:
        """``p = Q z + beta * tanh(M z)``, shape ``(n, n_factors)``."""
        z = z.to(self.mix_linear.dtype)
        return z @ self.mix_linear.T + self.mixing * torch.tanh(z @ self.mix_nonlinear.T)

    def factor_values(self, z: Tensor) -> Tensor:
        """Factor values ``(n, n_factors)``, in each factor's own units (see FACTORS)."""
        p = self.pre_activations(z)
        return self.factor_low + self.factor_span * torch.sigmoid(self.factor_gain * p + self.factor_offset)

    def factor_jacobian(self, z: Tensor) -> Tensor:
        """Latent gradient of every factor's pre-activation, ``(n, n_factors, latent_dim)``.

        Pre-activations, not values: a saturated sigmoid (whiteness is mostly off) has a
        vanishing gradient, but the direction that moves the factor is still well defined.
        """
        z = z.to(self.mix_linear.dtype)
        slope = 1 - torch.tanh(z @ self.mix_nonlinear.T) ** 2  # (n, F)
        return self.mix_linear.unsqueeze(0) + self.mixing * slope.unsqueeze(-1) * self.mix_nonlinear.unsqueeze(0)

    def factor_directions(self, n: int = 4096, seed: int = 0) -> Tensor:
        """Each factor's unit latent direction ``(n_factors, latent_dim)``: the mean gradient
        of its pre-activation over ``n`` prior samples. The ground truth that a discovered
        direction is compared with (e.g. ``bg_cos`` for whiteness)."""
        z = self.sample_latents(n, torch.Generator().manual_seed(seed)).float()
        mean = self.factor_jacobian(z).mean(0)
        return mean / mean.norm(dim=1, keepdim=True)

    # ------------------------------------------------------------------ factors -> image
    def render(self, values: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
        """Render factor values ``(n, F)`` and classes ``(n,)``.

        Returns ``(image, coverage)``: the image ``(n, 3, H, W)`` in [0, 1] and the object's
        coverage (alpha) ``(n, 1, H, W)`` in [0, 1]; the exact mask is ``coverage >= 0.5``.
        """
        n = values.shape[0]
        f = {name: values[:, i].view(n, 1, 1) for i, name in enumerate(FACTOR_NAMES)}
        gx, gy = self.grid_x.to(values.dtype), self.grid_y.to(values.dtype)

        # Object frame: translate, rotate, stretch (area-preserving), scale to unit size.
        dx, dy = gx - f["pos_x"], gy - f["pos_y"]
        cos_r, sin_r = torch.cos(f["rotation"]), torch.sin(f["rotation"])
        stretch = torch.exp(0.5 * f["aspect"])
        u = (cos_r * dx + sin_r * dy) / (f["scale"] * stretch)
        v = (-sin_r * dx + cos_r * dy) * stretch / f["scale"]

        sdf = torch.empty(n, self.resolution, self.resolution, dtype=values.dtype, device=values.device)
        classes = classes.to(values.device)
        for shape in torch.unique(classes).tolist():
            idx = (classes == shape).nonzero(as_tuple=True)[0]
            sdf = sdf.index_put((idx,), _shape_sdf(shape, u[idx], v[idx]))
        edge = self.edge_px * 2.0 / self.resolution
        coverage = torch.sigmoid(-sdf * f["scale"] / edge)

        # Object appearance: base colour x stripes (in the object's frame) x shading.
        base = _colour(f["obj_hue"][:, 0, 0], f["obj_saturation"][:, 0, 0], f["obj_value"][:, 0, 0])
        ta = f["texture_angle"]
        stripes = 1 + f["texture_amplitude"] * torch.sin(
            f["texture_frequency"] * (u * torch.cos(ta) + v * torch.sin(ta)) + f["texture_phase"]
        )
        la = f["light_angle"]
        light_u = torch.cos(la - f["rotation"])  # the light's direction in the object frame
        light_v = torch.sin(la - f["rotation"])
        shading = 1 + 0.7 * f["light_strength"] * (u * light_u + v * light_v).clamp(-1.2, 1.2)
        obj = base.view(n, 3, 1, 1) * (stripes * shading * f["brightness"]).unsqueeze(1)
        obj = _soft_cap(obj, 0.92)  # objects are never near-white

        # Background: two-colour gradient, wavy clutter, two blurry blobs, the same light.
        ga = f["bg_gradient_angle"]
        ramp = 0.5 + 0.5 * (gx * torch.cos(ga) + gy * torch.sin(ga)) / math.sqrt(2.0)
        colour_a = _colour(f["bg_hue_a"][:, 0, 0], f["bg_saturation"][:, 0, 0], f["bg_value"][:, 0, 0])
        colour_b = _colour(f["bg_hue_b"][:, 0, 0], f["bg_saturation"][:, 0, 0], f["bg_value"][:, 0, 0])
        ramp = ramp.unsqueeze(1)
        bg = colour_a.view(n, 3, 1, 1) * (1 - ramp) + colour_b.view(n, 3, 1, 1) * ramp
        freq = f["clutter_frequency"] * PI
        clutter = f["clutter_amplitude"] * torch.sin(freq * gx + f["clutter_phase_x"]) * torch.sin(
            freq * gy + f["clutter_phase_y"]
        )
        bg = bg * (1 + clutter).unsqueeze(1)
        blob_hue = f["blob_hue"][:, 0, 0]
        sat = torch.full_like(blob_hue, 0.6)
        for j, hue in ((1, blob_hue), (2, torch.remainder(blob_hue + 0.5, 1.0))):
            blob_colour = _colour(hue, sat, f["bg_value"][:, 0, 0]).view(n, 3, 1, 1)
            dist2 = (gx - f[f"blob{j}_x"]) ** 2 + (gy - f[f"blob{j}_y"]) ** 2
            weight = (f["blob_opacity"] * torch.exp(-dist2 / (2 * f["blob_size"] ** 2))).unsqueeze(1)
            bg = bg * (1 - weight) + blob_colour * weight
        light = 1 + 0.5 * f["light_strength"] * (gx * torch.cos(la) + gy * torch.sin(la)) / math.sqrt(2.0)
        bg = _soft_cap(bg * (f["brightness"] * light).unsqueeze(1), 0.97)
        # Whiteness fades the background, and only the background, to plain white.
        white = f["whiteness"].unsqueeze(1)
        bg = bg + white * (1 - bg)

        alpha = coverage.unsqueeze(1)
        image = alpha * obj + (1 - alpha) * bg
        return image, alpha

    def synthesize(self, z: Tensor, classes: Tensor) -> Tensor:
        image, _ = self.render(self.factor_values(z), classes)
        return image.to(self.dtype)

    # -------------------------------------------------------------------- ground truth
    def forward_with_masks(self, z: Tensor, classes: Tensor | list[int]) -> tuple[Tensor, Tensor]:
        """Images and their exact object masks ``(n, H, W)`` bool from one render: synthesis
        gets the ground truth for free."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents of shape (n, {self.latent_dim}), got {tuple(z.shape)}")
        z = z.to(device=self.device, dtype=self.dtype)
        image, alpha = self.render(self.factor_values(z), self.check_classes(classes, z.shape[0]))
        return image.to(self.dtype), alpha[:, 0] >= 0.5

    def coverage(self, z: Tensor, classes: Tensor | list[int]) -> Tensor:
        """The object's coverage (alpha) in [0, 1], ``(n, 1, H, W)``."""
        z = z.to(self.device)
        _, alpha = self.render(self.factor_values(z), self.check_classes(classes, z.shape[0]))
        return alpha

    def object_mask(self, z: Tensor, classes: Tensor | list[int]) -> Tensor:
        """The exact object mask, ``(n, 1, H, W)`` bool: coverage at least one half."""
        return self.coverage(z, classes) >= 0.5


@register_generator("scenes")
def build_scenes(resolution: int = 64, latent_dim: int = 32, seed: int = 0) -> ScenesGenerator:
    """The embedded procedural generator (no weights, runs anywhere)."""
    return ScenesGenerator(resolution=resolution, latent_dim=latent_dim, seed=seed)
