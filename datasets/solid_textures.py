"""Procedural solid textures: albedo as a 3D function of the world point (mm).

Solid textures are multi-view consistent by construction (the colour belongs to the point, not to a
view), and rich enough for SAM and photometric losses. All noise is integer-hash value noise, so the
same inputs give bit-identical colours on a given device.
"""
from __future__ import annotations

import math

import numpy as np
import torch

# Integer hashing constants (large odd primes / a 32-bit avalanche multiplier).
_HASH_PRIMES = (73856093, 19349663, 83492791)
_SEED_PRIME = 2654435761
_AVALANCHE = 0x45D9F3B
_MASK32 = 0xFFFFFFFF
_UNIT_BITS = 24  # hash bits turned into a uniform value in [0, 1)

FBM_OCTAVES = 3          # octaves of fractal noise used for warping
FBM_GAIN = 0.5           # amplitude ratio between octaves
FBM_LACUNARITY = 2.03    # frequency ratio between octaves (non-integer avoids lattice alignment)
GRAIN_CELL_MM = 1.5      # cell size of the fine multiplicative grain (about a pixel at 800x600)
GRAIN_AMOUNT = 0.25      # +-12.5% brightness grain: high-frequency detail for photometric losses
ACCENT_CELL_MM = 25.0    # cell size of the blotches that mix in the third palette colour
ACCENT_AMOUNT = 0.45     # maximum weight of the third palette colour
STRIPE_SHARPNESS = 4.0   # how hard the stripe/marble edges are (1 = pure sinusoid)
WARP_FREQ = 0.5          # warp-noise frequency relative to the pattern frequency
CHECKER_WARP = 0.3       # how much the warp noise wobbles checker edges
SPOT_CONTRAST = 6.0      # gain on centred noise before thresholding into spots
# Offsets added to a texture's seed so its noise layers are decorrelated.
SEED_WARP, SEED_SPOTS, SEED_ACCENT, SEED_GRAIN = 0, 17, 101, 211
PATTERNS = ("marble", "stripes", "checker", "spots")


def _hash01(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform pseudo-random value in [0, 1) per integer lattice point (int64 tensors, same shape)."""
    h = (ix * _HASH_PRIMES[0]) ^ (iy * _HASH_PRIMES[1]) ^ (iz * _HASH_PRIMES[2]) ^ ((seed * _SEED_PRIME) & _MASK32)
    h = h & _MASK32
    h = ((h ^ (h >> 16)) * _AVALANCHE) & _MASK32
    h = ((h ^ (h >> 16)) * _AVALANCHE) & _MASK32
    h = h ^ (h >> 16)
    return (h & ((1 << _UNIT_BITS) - 1)).to(torch.float32) / float(1 << _UNIT_BITS)


def value_noise(p: torch.Tensor, seed: int) -> torch.Tensor:
    """Smoothly interpolated lattice noise in [0, 1) with unit cells. p (N,3) -> (N,)."""
    cell = torch.floor(p)
    f = p - cell
    u = f * f * (3.0 - 2.0 * f)  # (N,3) smoothstep weights
    i = cell.to(torch.int64)
    out = torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
    for dx in (0, 1):
        wx = u[:, 0] if dx else 1.0 - u[:, 0]
        for dy in (0, 1):
            wy = u[:, 1] if dy else 1.0 - u[:, 1]
            for dz in (0, 1):
                wz = u[:, 2] if dz else 1.0 - u[:, 2]
                corner = _hash01(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed).to(p.dtype)
                out = out + wx * wy * wz * corner
    return out


def fbm(p: torch.Tensor, seed: int, octaves: int = FBM_OCTAVES) -> torch.Tensor:
    """Fractal sum of value noise, normalised to [0, 1). p (N,3) -> (N,)."""
    total, amp, norm, freq = torch.zeros_like(p[:, 0]), 1.0, 0.0, 1.0
    for o in range(octaves):
        total = total + amp * value_noise(p * freq, seed + o)
        norm += amp
        amp *= FBM_GAIN
        freq *= FBM_LACUNARITY
    return total / norm


def _sharpen(s: torch.Tensor) -> torch.Tensor:
    """Map a sinusoid in [-1, 1] to a mix weight in [0, 1] with steeper transitions."""
    return 0.5 + 0.5 * torch.tanh(STRIPE_SHARPNESS * s) / math.tanh(STRIPE_SHARPNESS)


class SolidTexture:
    """Albedo = mix of a 3-colour palette driven by a pattern, times a fine brightness grain.

    pattern: one of PATTERNS. scale_mm: feature size of the pattern. direction: stripe/marble axis.
    warp: how strongly fractal noise bends the pattern. seed: decorrelates objects and scene seeds.
    """

    def __init__(self, palette, pattern: str, scale_mm: float, seed: int, direction=(1.0, 0.3, 0.6),
                 warp: float = 2.5, phase: float = 0.0):
        self.palette = np.asarray(palette, dtype=np.float64)
        if self.palette.shape != (3, 3) or self.palette.min() < 0 or self.palette.max() > 1:
            raise ValueError(f"palette must be 3 RGB colours in [0, 1] (shape (3, 3)), got {palette!r}")
        if pattern not in PATTERNS:
            raise ValueError(f"unknown texture pattern {pattern!r}; choose one of {PATTERNS}")
        if not scale_mm > 0:
            raise ValueError(f"texture scale_mm must be > 0, got {scale_mm}")
        d = np.asarray(direction, dtype=np.float64)
        self.direction = d / np.linalg.norm(d)
        self.pattern, self.scale, self.seed = pattern, float(scale_mm), int(seed)
        self.warp, self.phase = float(warp), float(phase)

    def _pattern_weight(self, p: torch.Tensor) -> torch.Tensor:  # (N,3) mm -> (N,) in [0, 1]
        q = p / self.scale
        bend = self.warp * (fbm(q * WARP_FREQ, self.seed + SEED_WARP) - 0.5)
        if self.pattern == "marble":
            s = torch.sin(2.0 * math.pi * (q @ torch.as_tensor(self.direction, dtype=p.dtype, device=p.device))
                          + self.phase + 2.0 * math.pi * bend)
            return 0.5 + 0.5 * s
        if self.pattern == "stripes":
            s = torch.sin(2.0 * math.pi * (q @ torch.as_tensor(self.direction, dtype=p.dtype, device=p.device))
                          + self.phase + bend)
            return _sharpen(s)
        if self.pattern == "checker":
            s = torch.sin(math.pi * (q[:, 0] + self.phase)) * torch.sin(math.pi * q[:, 1]) \
                * torch.sin(math.pi * q[:, 2] + 0.5 * math.pi)
            return _sharpen(s + CHECKER_WARP * bend)
        # spots: thresholded noise blobs
        return _sharpen(SPOT_CONTRAST * (value_noise(q + self.phase, self.seed + SEED_SPOTS) - 0.5) + bend)

    def albedo(self, p: torch.Tensor) -> torch.Tensor:
        """RGB albedo in [0, 1] at world points p (N,3) -> (N,3)."""
        pal = torch.as_tensor(self.palette, dtype=p.dtype, device=p.device)  # (3,3)
        w = self._pattern_weight(p)[:, None]  # (N,1)
        base = pal[0] * (1.0 - w) + pal[1] * w
        accent = ACCENT_AMOUNT * fbm(p / ACCENT_CELL_MM, self.seed + SEED_ACCENT)[:, None] ** 2
        colour = base * (1.0 - accent) + pal[2] * accent
        grain = 1.0 + GRAIN_AMOUNT * (value_noise(p / GRAIN_CELL_MM, self.seed + SEED_GRAIN) - 0.5)
        return (colour * grain[:, None]).clamp(0.0, 1.0)


class PartTexture:
    """Albedo of a solid made of parts (sdf_primitives.Parts): each part painted with its own texture.

    part_of: points (N,3) -> (N,) int64 part index; textures: one SolidTexture per part, in that order.
    """

    def __init__(self, part_of, textures: list[SolidTexture]):
        if not textures:
            raise ValueError("PartTexture needs one texture per part")
        self.part_of, self.textures = part_of, list(textures)

    def albedo(self, p: torch.Tensor) -> torch.Tensor:
        """RGB albedo in [0, 1] at world points p (N,3) -> (N,3), from each point's part's texture."""
        part = self.part_of(p)
        out = torch.zeros_like(p)
        for i, tex in enumerate(self.textures):
            sel = torch.nonzero(part == i).squeeze(1)
            if sel.numel():
                out[sel] = tex.albedo(p[sel])
        return out
