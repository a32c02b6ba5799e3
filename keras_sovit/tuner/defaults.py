"""The paper's sweeps and grid optimum scaled down to a target compute.

`default_plan` gives the paper's procedure its default sweeps;
`paper_prior` centres the first design of the IsoFLOP search.
"""

import math

from keras_sovit._validation import image_hw
from keras_sovit.scaling.paper import plan as plan_lib
from keras_sovit.shapes import SCALED_DIMS
from keras_sovit.shapes import ShapeSpec
from keras_sovit.shapes import check_rounding
from keras_sovit.shapes import round_to_multiple

# SoViT-400m/14 was trained for 9T GFLOPs on 256-token images (SPEC §3.1).
_PAPER_TARGET_GFLOPS = 9e12
_PAPER_TOKENS = 256
_STAR_BUDGET_FRACTIONS = (1 / 256, 1 / 128, 1 / 64)
_GRID_BUDGET_FRACTION = 1 / 1000
# The paper's grid optimum x0 was trained for 9.3e9 GFLOPs (SPEC §3.3).


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


def paper_prior(target_compute, image_size=224):
    """The paper's grid optimum and exponents, scaled to a target.

    x⁽⁰⁾ = 608/10/928 at t⁽⁰⁾ = 9.3e9 GFLOPs with the path exponents
    s_k / 3 of its published rule (s = 0.22, 0.45, 0.6), moved to the
    target as `default_plan` moves the paper's sweeps: shapes scaled by λ
    (see `default_plan`), t⁽⁰⁾ by the target's ratio to the paper's 9e12.
    The IsoFLOP search uses it only to centre its first design.

    Returns:
        `((width, depth, mlp_dim), t0, exponents)` as floats, the `prior`
        of `keras_sovit.scaling.isoflop.search.IsoFlopSettings`.

    Example:

    ```python
    shape, t0, s = keras_sovit.tuner.defaults.paper_prior(8.8e12)
    # shape ≈ (605.7, 9.96, 924.6), t0 ≈ 9.09e9, s = (0.0733, 0.15, 0.2)
    ```
    """
    shape, t0, exponents = plan_lib.PAPER_PRIOR
    scale = _scale(target_compute, image_size)
    shape = tuple(float(v) * scale for v in shape)
    t0 = t0 * target_compute / _PAPER_TARGET_GFLOPS
    return shape, float(t0), tuple(exponents)


def _scale(target_compute, image_size):
    """λ of `default_plan`: parameters grow as √compute per token."""
    height, width = image_hw(image_size)
    patch = _patch_for_side(min(height, width))
    tokens = (height // patch) * (width // patch)
    return (target_compute * _PAPER_TOKENS
            / (tokens * _PAPER_TARGET_GFLOPS)) ** (1 / 6)


def _scaled_paper_center(target_compute, image_size, rounding):
    """The paper's star centre scaled to the target (see `default_plan`)."""
    height, width = image_hw(image_size)
    patch = _patch_for_side(min(height, width))
    scale = _scale(target_compute, image_size)
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
