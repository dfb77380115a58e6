"""Diagnostics for one lifting run (bench only): with LIFT_PROBE=DIR and this folder on PYTHONPATH, every
call of the pipeline's connectivity cut saves its inputs and outputs (bit-packed, grid size) to
DIR/cut_NN.npz: the labelled surface, the carried prompt labels, the far side, what the cut kept.

With LIFT_DETACH_HEADS=1 (an A/B, not a product setting): the heads (the occupancy head) are rendered with
the NeuS weights detached, so their losses train the head's values but cannot move the scene's geometry."""
import os

def _importable() -> bool:
    try:
        import systems.nto3d  # noqa: F401  (absent: pip, or a process outside the repository)
        return True
    except ImportError:
        return False


if os.environ.get("LIFT_PROBE") and _importable():
    import itertools
    from pathlib import Path

    import numpy as np

    import systems.nto3d as nto3d
    from sam_utils.connectivity import far_side, sample_spacing

    _out = Path(os.environ["LIFT_PROBE"]) / str(os.getpid())
    _out.mkdir(parents=True, exist_ok=True)
    _count = itertools.count()
    _cut, _carry = nto3d.keep_connected, nto3d.carried_labels
    _last = {}

    def carried_labels(*a, **k):
        _last["carried"] = c = _carry(*a, **k)
        return c

    def keep_connected(points, valid, depth, prob, seeds, threshold, voxel, bridge, edge):
        kept = _cut(points, valid, depth, prob, seeds, threshold, voxel, bridge, edge)
        far = far_side(depth, valid, edge * sample_spacing(points, valid))
        pack = lambda a: np.packbits(np.asarray(a, bool))
        np.savez_compressed(_out / f"cut_{next(_count):02d}.npz", shape=np.array(valid.shape), seeds=seeds,
                            valid=pack(valid), sel=pack(valid & (prob >= threshold)), far=pack(far),
                            kept=pack(valid & (kept >= threshold)), carried=pack(_last.get("carried", valid & False)),
                            depth0=depth[0].astype(np.float32))
        return kept

    nto3d.keep_connected, nto3d.carried_labels = keep_connected, carried_labels


if os.environ.get("LIFT_DETACH_HEADS") == "1" and _importable():
    from models.renderer import NeuSRenderer

    _render = NeuSRenderer.render

    def render(self, *args, heads=(), **kwargs):
        out = _render(self, *args, heads=heads, **kwargs)
        for name in heads:
            out[name] = (out["weights"].detach()[..., None] * out[name + "_raw"]).sum(1)
        return out

    NeuSRenderer.render = render
