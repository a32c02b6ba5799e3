"""`default_plan`: the paper's sweeps scaled down to a target compute."""

import math

from keras_sovit._validation import image_hw
from keras_sovit.scaling import plan as plan_lib
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_rounding
from keras_sovit.shapes import round_to_multiple

# SoViT-400m/14 was trained for 9T GFLOPs on 256-token images (SPEC §3.1).
_PAPER_TARGET_GFLOPS = 9e12
_PAPER_TOKENS = 256
_STAR_BUDGET_FRACTIONS = (1 / 256, 1 / 128, 1 / 64)
_GRID_BUDGET_FRACTION = 1 / 1000


def default_plan(
    target_compute, image_size=224, rounding=None, star_center=None
):
    """The default sweeps for a target compute: the paper's, scaled down.

    The paper (SPEC §2) targets 9e12 GFLOPs with 256-token images. For a
    target `T` with `n` tokens per image, every default shape is the
    paper's shape with width and MLP scaled by `λ = (T · 256 / (n ·
    9e12)) ** (1 / 6)` (parameters grow as the square root of compute, as
    in Chinchilla), depth by `λ` with the centre at least 6 blocks deep,
    then rounded (widths and MLP sizes to multiples of 16) and spread so
    that grid values stay distinct. Heads are 16 as in the paper for a
    centre at least 1024 wide, else 4. The patch size gives 16 patches per
    side (the paper's 224 / 14), or the nearest divisor of the image side.
    Star budgets are `T / 256`, `T / 128`, `T / 64` and the grid budget is
    `T / 1000` (the paper's 600M-example grid at 1/1000 of its target);
    a full default search costs about half of `T` before the final run.

    Args:
        target_compute: float. GFLOPs of the final run.
        image_size: int or `(height, width)`.
        rounding: `keras_sovit.scaling.Rounding` or `None`.
        star_center: `ShapeSpec` or `None`. Given, the grids are placed
            relative to it instead of the scaled paper centre.

    Returns:
        dict with `star_center`, `star_grids`, `star_budgets`, `grid` and
        `grid_budget`.
    """
    rounding = check_rounding(rounding)
    if star_center is None:
        star_center = _scaled_paper_center(target_compute, image_size,
                                           rounding)
    center = {d: getattr(star_center, d) for d in SCALED_DIMS}
    heads = star_center.num_heads
    width_step = math.gcd(math.lcm(rounding.width_multiple, heads),
                          center["width"])
    steps = {"width": width_step, "depth": 1,
             "mlp_dim": math.gcd(rounding.mlp_multiple, center["mlp_dim"])}
    star_grids, grid = {}, {}
    for dim in SCALED_DIMS:
        ratio = center[dim] / getattr(plan_lib.PAPER_STAR_CENTER, dim)
        star = _spread(
            [v * ratio for v in plan_lib.PAPER_STAR_GRIDS[dim]], steps[dim]
        )
        star_grids[dim] = [v for v in star if v < center[dim]]
        grid[dim] = _spread(
            [v * ratio for v in plan_lib.PAPER_GRID_SWEEP[dim]], steps[dim]
        )
    return {
        "star_center": star_center,
        "star_grids": star_grids,
        "star_budgets": [target_compute * f for f in _STAR_BUDGET_FRACTIONS],
        "grid": grid,
        "grid_budget": target_compute * _GRID_BUDGET_FRACTION,
    }


def _scaled_paper_center(target_compute, image_size, rounding):
    """The paper's star centre scaled to the target (see `default_plan`)."""
    height, width = image_hw(image_size)
    patch = _patch_for_side(min(height, width))
    tokens = (height // patch) * (width // patch)
    scale = (target_compute * _PAPER_TOKENS
             / (tokens * _PAPER_TARGET_GFLOPS)) ** (1 / 6)
    paper = plan_lib.PAPER_STAR_CENTER

    def snapped(value, step):
        return max(4 * step, round_to_multiple(value * scale, step))

    heads = rounding.num_heads or (
        16 if snapped(paper.width, rounding.width_multiple) >= 1024 else 4
    )
    return ShapeSpec(
        snapped(paper.width, math.lcm(rounding.width_multiple, heads)),
        max(6, round_to_multiple(paper.depth * scale, 1)),
        snapped(paper.mlp_dim, rounding.mlp_multiple),
        heads, patch,
    )


def _patch_for_side(side):
    divisors = [p for p in range(1, side + 1) if side % p == 0]
    return min(divisors, key=lambda p: (abs(side / p - 16), -p))


def _spread(values, step):
    """Snaps values to multiples of `step`, strictly increasing."""
    out = []
    for value in values:
        snapped = max(step, round_to_multiple(value, step))
        if out and snapped <= out[-1]:
            snapped = out[-1] + step
        out.append(int(snapped))
    return out
