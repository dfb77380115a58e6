"""Empty-space skipping: the grid marks the cells around the surface and rays are cut to them."""
import torch

from models.occupancy import OccupancyGrid

R_SPHERE = 0.5


def sphere_sdf(x):
    return x.norm(dim=-1, keepdim=True) - R_SPHERE


def test_update_marks_a_shell_around_the_surface():
    g = OccupancyGrid(resolution=32, bound=1.0, margin_cells=1.0, update_every=16)
    assert g.occupied.all()                             # before the first update nothing is skipped
    frac = g.update(sphere_sdf, chunk=4096)
    r = g.centres().norm(dim=-1).reshape(g.occupied.shape)
    assert g.occupied[(r - R_SPHERE).abs() < 0.5 * g.cell].all()         # every cell the surface crosses
    assert not g.occupied[(r - R_SPHERE).abs() > 3.0 * g.cell].any()     # nothing far from it
    assert 0.05 < frac < 0.4 and int(g.updates) == 1


def test_ray_bounds_contain_the_hit_and_skip_empty_space():
    g = OccupancyGrid(resolution=64, bound=1.0, margin_cells=1.0, update_every=16)
    g.update(sphere_sdf, chunk=65536)
    gen = torch.Generator().manual_seed(0)
    o = torch.tensor([0.0, 0.0, -3.0]).expand(512, 3)
    target = torch.rand(512, 2, generator=gen) * 1.2 - 0.6                 # some rays hit, some miss
    d = torch.cat([target, torch.full((512, 1), 3.0)], -1)
    d = d / d.norm(dim=-1, keepdim=True)
    b = (o * d).sum(-1, keepdim=True)
    disc = b * b - ((o * o).sum(-1, keepdim=True) - 1.0)
    near, far = -b - disc.sqrt(), -b + disc.sqrt()                         # the unit sphere
    n2, f2 = g.ray_bounds(o, d, near, far)
    bs = b * b - ((o * o).sum(-1, keepdim=True) - R_SPHERE ** 2)
    hits = (bs > 0).squeeze(-1)
    t_hit = (-b - bs.clamp(min=0).sqrt())                                  # first surface crossing
    assert ((n2 <= t_hit) & (t_hit <= f2))[hits].all()
    assert (f2 - n2)[hits].mean() < 0.7 * (far - near)[hits].mean()       # samples concentrate near it
    assert ((near <= n2) & (f2 <= far + 1e-6)).all()
    grazing = (bs.squeeze(-1) < -0.1)                                      # rays well clear of the sphere
    assert ((f2 - n2)[grazing] <= (far - near)[grazing] / 64).all()        # ... keep one empty step
