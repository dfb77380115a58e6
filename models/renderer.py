"""NeuS volume rendering of an SDF: coarse samples, hierarchical up-sampling, SDF -> alpha.

All rays are clipped to the unit sphere (near/far given by the caller); what the rays do not hit
takes the background colour, so no separate background model is needed for masked/target scenes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.fields import ColorNetwork, SDFNetwork, SingleVarianceNetwork

ALPHA_EPS = 1e-5      # NeuS: keeps alpha finite where the CDF is ~0
TRANSMIT_EPS = 1e-7   # keeps transmittance products from collapsing to exactly 0
BASE_INV_S = 64.0     # NeuS: sharpness of the first up-sampling step, doubled each step
RELAX_RADIUS = 1.2    # eikonal applies to samples within this radius


@dataclass
class RenderSettings:
    n_samples: int          # coarse samples per ray
    n_importance: int       # extra samples from hierarchical up-sampling (0: coarse only)
    up_sample_steps: int
    perturb: bool


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n: int, det: bool) -> torch.Tensor:
    """Inverse-CDF sampling. bins (B,S), weights (B,S-1) -> samples (B,n), detached."""
    pdf = (weights + ALPHA_EPS) / (weights + ALPHA_EPS).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # (B,S)
    if det:
        u = torch.linspace(0.5 / n, 1.0 - 0.5 / n, n, device=bins.device, dtype=bins.dtype).expand(cdf.shape[0], n)
    else:
        u = torch.rand(cdf.shape[0], n, device=bins.device, dtype=bins.dtype)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True)
    below = (idx - 1).clamp(min=0)
    above = idx.clamp(max=cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, below), cdf.gather(-1, above)
    bin_lo, bin_hi = bins.gather(-1, below), bins.gather(-1, above)
    denom = torch.where(cdf_hi - cdf_lo < ALPHA_EPS, torch.ones_like(cdf_hi), cdf_hi - cdf_lo)
    return (bin_lo + (u - cdf_lo) / denom * (bin_hi - bin_lo)).detach()


def neus_alpha(sdf: torch.Tensor, half: torch.Tensor, inv_s) -> torch.Tensor:
    """NeuS's discrete opacity of a section from its mid SDF and half its SDF change (same shapes):
    (Phi(sdf - half) - Phi(sdf + half)) / Phi(sdf - half), Phi = sigmoid(inv_s * .)."""
    prev_cdf = torch.sigmoid((sdf - half) * inv_s)
    next_cdf = torch.sigmoid((sdf + half) * inv_s)
    return (prev_cdf - next_cdf + ALPHA_EPS) / (prev_cdf + ALPHA_EPS)


def alpha_weights(alpha: torch.Tensor) -> torch.Tensor:
    """Volume-rendering weights alpha_i * prod_{j<i} (1 - alpha_j): alpha (B,S) -> (B,S)."""
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha + TRANSMIT_EPS], -1), -1)
    return alpha * trans[:, :-1]


def _upsample_weights(rays_o, rays_d, z, sdf, inv_s: float) -> torch.Tensor:
    """NeuS's weights for up-sampling from a coarse SDF profile. z, sdf (B,S) -> (B,S-1)."""
    pts = rays_o[:, None] + rays_d[:, None] * z[..., None]
    radius = pts.norm(dim=-1)
    inside = ((radius[:, :-1] < 1.0) | (radius[:, 1:] < 1.0)).to(z.dtype)
    prev_sdf, next_sdf = sdf[:, :-1], sdf[:, 1:]
    dist = z[:, 1:] - z[:, :-1]
    mid_sdf = 0.5 * (prev_sdf + next_sdf)
    cos = (next_sdf - prev_sdf) / (dist + ALPHA_EPS)
    prev_cos = torch.cat([torch.zeros_like(cos[:, :1]), cos[:, :-1]], -1)
    cos = torch.minimum(prev_cos, cos).clamp(-1e3, 0.0) * inside
    return alpha_weights(neus_alpha(mid_sdf, cos * dist * 0.5, inv_s))


class NeuSRenderer:
    """Renders colour, opacity, depth, normals and any SDF-network heads along rays."""

    def __init__(self, sdf: SDFNetwork, color: ColorNetwork, variance: SingleVarianceNetwork, settings: RenderSettings):
        self.sdf_net, self.color_net, self.variance = sdf, color, variance
        self.s = settings

    def _z_vals(self, rays_o, rays_d, near, far, perturb: bool) -> torch.Tensor:
        n = self.s.n_samples
        t = torch.linspace(0.0, 1.0, n, device=rays_o.device, dtype=rays_o.dtype)
        z = near + (far - near) * t[None]  # (B,n)
        if perturb:
            z = z + (torch.rand_like(z) - 0.5) * (far - near) / n
        if self.s.n_importance > 0:
            z = self._up_sample(rays_o, rays_d, z)
        return z

    @torch.no_grad()
    def _up_sample(self, rays_o, rays_d, z) -> torch.Tensor:
        b, n = z.shape
        sdf = self.sdf_net.sdf((rays_o[:, None] + rays_d[:, None] * z[..., None]).reshape(-1, 3)).view(b, n)
        per_step = self.s.n_importance // self.s.up_sample_steps
        for i in range(self.s.up_sample_steps):
            w = _upsample_weights(rays_o, rays_d, z, sdf, BASE_INV_S * 2 ** i)
            new_z = sample_pdf(z, w, per_step, det=True)
            z, order = torch.sort(torch.cat([z, new_z], -1), -1)
            if i + 1 < self.s.up_sample_steps:
                pts = rays_o[:, None] + rays_d[:, None] * new_z[..., None]
                new_sdf = self.sdf_net.sdf(pts.reshape(-1, 3)).view(b, per_step)
                sdf = torch.cat([sdf, new_sdf], -1).gather(-1, order)
        return z

    def render(self, rays_o, rays_d, near, far, background, cos_anneal_ratio: float = 1.0,
               heads: tuple[str, ...] = (), perturb: bool | None = None) -> dict[str, torch.Tensor]:
        """rays_o, rays_d (B,3); near, far (B,1); background (3,) or (B,3). Returns per-ray values."""
        perturb = self.s.perturb if perturb is None else perturb
        z = self._z_vals(rays_o, rays_d, near, far, perturb)  # (B,S)
        b, s = z.shape
        dists = torch.cat([z[:, 1:] - z[:, :-1], (far - near) / self.s.n_samples], -1)  # (B,S)
        mid_z = z + 0.5 * dists
        pts = (rays_o[:, None] + rays_d[:, None] * mid_z[..., None]).reshape(-1, 3)
        dirs = rays_d[:, None].expand(b, s, 3).reshape(-1, 3)

        out = self.sdf_net.sdf_and_gradient(pts, heads)
        sdf, grad = out["sdf"], out["gradient"]
        normals = F.normalize(grad, dim=-1, eps=1e-8)
        rgb = self.color_net(pts, dirs, normals, out["feature"]).view(b, s, 3)

        inv_s = self.variance.inv_s()
        true_cos = (dirs * grad).sum(-1, keepdim=True)
        iter_cos = -(F.relu(-true_cos * 0.5 + 0.5) * (1.0 - cos_anneal_ratio) + F.relu(-true_cos) * cos_anneal_ratio)
        half = iter_cos * dists.reshape(-1, 1) * 0.5
        alpha = neus_alpha(sdf, half, inv_s).view(b, s).clamp(0.0, 1.0)
        weights = alpha_weights(alpha)  # (B,S)
        opacity = weights.sum(-1, keepdim=True)

        relax = (pts.norm(dim=-1) < RELAX_RADIUS).to(grad.dtype)
        grad_err = ((grad.norm(dim=-1) - 1.0) ** 2 * relax).sum() / relax.sum().clamp(min=1.0)
        result = {
            "color": (weights[..., None] * rgb).sum(1) + (1.0 - opacity) * background,
            "opacity": opacity,
            "depth": (weights * mid_z).sum(-1, keepdim=True),
            "normal": (weights[..., None] * normals.view(b, s, 3)).sum(1),
            "eikonal": grad_err,
            "weights": weights,
            "inv_s": inv_s.detach(),
        }
        for name in heads:
            val = out[name].view(b, s, -1)
            result[name + "_raw"] = val
            result[name] = (weights[..., None] * val).sum(1)
        return result

    @torch.no_grad()
    def render_heads(self, rays_o, rays_d, near, far, heads: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Cheap no-grad rendering of heads, opacity and depth (expected distance along the ray, given
        that it hits) for projections: weights from the SDF profile along the samples (as in
        up-sampling, at the learned sharpness), no normals or colour."""
        z = self._z_vals(rays_o, rays_d, near, far, perturb=False)  # (B,S)
        b, s = z.shape
        pts = (rays_o[:, None] + rays_d[:, None] * z[..., None]).reshape(-1, 3)
        out = self.sdf_net(pts, heads)
        w = _upsample_weights(rays_o, rays_d, z, out["sdf"].view(b, s), float(self.variance.inv_s()))  # (B,S-1)
        opacity = w.sum(-1, keepdim=True)
        mid = 0.5 * (z[:, 1:] + z[:, :-1])                                       # (B,S-1)
        result = {"opacity": opacity, "depth": (w * mid).sum(-1, keepdim=True) / opacity.clamp(min=1e-6)}
        for name in heads:
            val = out[name].view(b, s, -1)
            result[name] = (w[..., None] * 0.5 * (val[:, 1:] + val[:, :-1])).sum(1)
        return result
