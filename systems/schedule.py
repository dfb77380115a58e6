"""Learning-rate schedule: linear warm-up then cosine decay to a floor."""
import math


def lr_factor(iteration: int, warmup_iters: int, max_iters: int, min_ratio: float) -> float:
    if warmup_iters > 0 and iteration < warmup_iters:
        return (iteration + 1) / warmup_iters
    span = max(1, max_iters - warmup_iters)
    progress = min(1.0, (iteration - warmup_iters) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cos_anneal_ratio(iteration: int, anneal_iters: int) -> float:
    """NeuS's ramp from 0 to 1 that moves the SDF->alpha estimate from 'half-cos' to exact."""
    return 1.0 if anneal_iters <= 0 else min(1.0, iteration / anneal_iters)
