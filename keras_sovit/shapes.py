"""Transformer shapes, the variant table, and exact size and compute counts.

Pure Python: importing this module never imports keras or a backend, so the
scaling-law code can use it without a framework.
"""

import dataclasses
import math
import re

from keras_sovit._validation import check_choice
from keras_sovit._validation import check_non_negative_int
from keras_sovit._validation import check_positive_int
from keras_sovit._validation import check_positive_number
from keras_sovit._validation import image_hw

# Variant table of big_vision's `decode_variant` (name -> width, depth,
# mlp_dim, num_heads), plus the paper's SoViT-150m, which big_vision lacks.
VARIANTS = {
    "mu": (32, 1, 128, 2),
    "Ti": (192, 12, 768, 3),
    "S": (384, 12, 1536, 6),
    "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12),
    "L": (1024, 24, 4096, 16),
    "So150m": (880, 18, 2320, 16),
    "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16),
    "g": (1408, 40, 6144, 16),
    "g-opt": (1536, 40, 6144, 16),
    "G": (1664, 48, 8192, 16),
    "G-opt": (1536, 48, 8192, 16),
    "e": (1792, 56, 15360, 16),
}

POOL_TYPES = ("map", "gap", "0", "tok", "none")
POSEMB_TYPES = ("learn", "sincos2d")
SHAPE_FIELDS = ("width", "depth", "mlp_dim", "num_heads", "patch_size")
# The dimensions the paper scales (the others stay fixed in a search).
SCALED_DIMS = ("width", "depth", "mlp_dim")

_VARIANT_PATTERN = re.compile(r"^(?P<name>[A-Za-z0-9-]+)/(?P<patch>\d+)$")


@dataclasses.dataclass(frozen=True)
class ShapeSpec:
    """The shape of a Vision Transformer: the dimensions the paper scales.

    A `ShapeSpec` is immutable and hashable. It knows its exact parameter
    count and its forward compute, so budgets in GFLOPs can be turned into
    training examples without building a model.

    Compute convention (the paper's, "FLOPs according to XLA"): one
    multiply-add counts as 2 FLOPs. The forward count includes the patch
    stem, the Q, K, V and output projections, the attention score and
    value products (the n² terms), the MLPs, the MAP head (when
    `pool_type="map"`) and the classifier head. LayerNorm, softmax, GELU
    and bias additions are left out (well under 1%). A training budget in
    the paper's sense is examples seen × forward GFLOPs per example, with
    no factor 3 for the backward pass.

    Args:
        width: int. Size of the token representation.
        depth: int. Number of encoder blocks.
        mlp_dim: int. Hidden size of every MLP block.
        num_heads: int. Attention heads; must divide `width`.
        patch_size: int. Side of the square patches. Defaults to `16`.

    Example:

    ```python
    shape = keras_sovit.ShapeSpec.from_variant("So400m/14")
    shape.num_params(image_size=224)  # 427_680_704
    round(shape.gflops(image_size=224), 1)  # 220.4
    smaller = shape.replace(depth=12)
    ```

    Reference:
    - [Alabdulmohsin et al., 2023](https://arxiv.org/abs/2305.13035)
    """

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    patch_size: int = 16

    def __post_init__(self):
        for field in SHAPE_FIELDS:
            value = check_positive_int(field, getattr(self, field))
            object.__setattr__(self, field, value)
        if self.width % self.num_heads:
            raise ValueError(
                "`width` must be divisible by `num_heads`. Received: "
                f"width={self.width}, num_heads={self.num_heads}"
            )

    @classmethod
    def from_variant(cls, variant):
        """Parses a big_vision variant name such as `"So400m/14"`."""
        match = _VARIANT_PATTERN.match(str(variant))
        if match is None or match["name"] not in VARIANTS:
            raise ValueError(
                "`variant` must be '<name>/<patch>' with a name from "
                f"{sorted(VARIANTS)}. Received: variant={variant!r}"
            )
        width, depth, mlp_dim, num_heads = VARIANTS[match["name"]]
        return cls(width, depth, mlp_dim, num_heads, int(match["patch"]))

    @classmethod
    def from_dict(cls, values):
        """Builds a shape from a mapping holding the five shape fields."""
        missing = [f for f in SHAPE_FIELDS if f not in values]
        if missing:
            raise ValueError(
                f"`values` is missing shape fields {missing}. "
                f"Received: values={dict(values)!r}"
            )
        return cls(**{f: values[f] for f in SHAPE_FIELDS})

    def to_dict(self):
        """Returns the five shape fields as plain Python ints."""
        return {f: getattr(self, f) for f in SHAPE_FIELDS}

    def replace(self, **changes):
        """Returns a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def head_dim(self):
        return self.width // self.num_heads

    def num_patches(self, image_size=224, strict=False):
        """Number of patch tokens for an image, ⌊H/p⌋ × ⌊W/p⌋.

        Leftover pixels are dropped, as big_vision's VALID patchify does
        (the paper's 384 px at patch 14 gives 27 × 27 = 729 tokens, like
        378 px), so the count matches a `SoViTBackbone` built at that
        size. With `strict=True` an image side that is not a multiple of
        the patch size raises a `ValueError`; a side smaller than one patch
        always does.
        """
        height, width = image_hw(image_size)
        for side in (height, width):
            if side < self.patch_size or (strict and side % self.patch_size):
                raise ValueError(
                    "`image_size` must be at least `patch_size`, and a "
                    "multiple of it with strict=True. Received: "
                    f"image_size={image_size!r}, "
                    f"patch_size={self.patch_size}, strict={strict}"
                )
        return (height // self.patch_size) * (width // self.patch_size)

    def num_params(
        self,
        image_size=224,
        num_classes=0,
        pool_type="map",
        posemb="learn",
        channels=3,
        rep_size=None,
        strict=False,
    ):
        """Exact number of weights of the matching `SoViTClassifier`.

        With `num_classes=0` this is the backbone alone. `rep_size` counts
        the optional pre-logits layer of the classifier. `strict` is as in
        `num_patches`.
        """
        check_choice("pool_type", pool_type, POOL_TYPES)
        _check_posemb(posemb, self.width)
        if rep_size is not None:
            check_positive_int("rep_size", rep_size)
        return param_count(
            self.width, self.depth, self.mlp_dim,
            self.num_patches(image_size, strict), self.patch_size,
            channels=check_positive_int("channels", channels),
            pool_type=pool_type, posemb=posemb,
            num_classes=check_non_negative_int("num_classes", num_classes),
            rep_size=rep_size,
        )

    def gflops(
        self,
        image_size=224,
        num_classes=0,
        pool_type="map",
        channels=3,
        rep_size=None,
        strict=False,
    ):
        """Forward GFLOPs per image, 1 multiply-add = 2 FLOPs (XLA).

        See the class docstring for what is counted. For a training step
        use `3 * gflops(...)`; for the paper's compute budget use
        examples seen × `gflops(...)`. `strict` is as in `num_patches`.
        """
        check_choice("pool_type", pool_type, POOL_TYPES)
        if rep_size is not None:
            check_positive_int("rep_size", rep_size)
        return forward_gflops(
            self.width, self.depth, self.mlp_dim,
            self.num_patches(image_size, strict), self.patch_size,
            channels=check_positive_int("channels", channels),
            pool_type=pool_type,
            num_classes=check_non_negative_int("num_classes", num_classes),
            rep_size=rep_size,
        )

    def __str__(self):
        return (
            f"ShapeSpec(width={self.width}, depth={self.depth}, "
            f"mlp_dim={self.mlp_dim}, num_heads={self.num_heads}, "
            f"patch_size={self.patch_size})"
        )


def forward_gflops(
    width, depth, mlp_dim, num_patches, patch_size, channels=3,
    pool_type="map", num_classes=0, rep_size=None,
):
    """Forward GFLOPs per image: the one copy of the FLOP count.

    `ShapeSpec.gflops` calls it with Python ints; vectorised searches call
    it with numpy float arrays of widths, depths and MLP sizes (any mix
    broadcasts). What is counted is listed in the `ShapeSpec` docstring.
    """
    d, m = width, mlp_dim
    n = num_patches + (1 if pool_type == "tok" else 0)
    macs = num_patches * patch_size * patch_size * channels * d
    macs = macs + depth * (4 * n * d * d + 2 * n * d * m + 2 * n * n * d)
    if pool_type == "map":
        macs = macs + 2 * n * d * d + 2 * d * d + 2 * n * d + 2 * d * m
    features = d
    if rep_size:
        macs = macs + d * rep_size
        features = rep_size
    macs = macs + features * num_classes
    return 2.0 * macs / 1e9


def param_count(
    width, depth, mlp_dim, num_patches, patch_size, channels=3,
    pool_type="map", posemb="learn", num_classes=0, rep_size=None,
):
    """Exact weight count: the one copy behind `ShapeSpec.num_params`.

    Vectorises like `forward_gflops`.
    """
    d = width
    total = patch_size * patch_size * channels * d + d
    if posemb == "learn":
        total = total + num_patches * d
    if pool_type == "tok":
        total = total + d
    total = total + depth * _block_params(d, mlp_dim) + 2 * d
    if pool_type == "map":
        total = total + d + _block_params(d, mlp_dim) - 2 * d
    features = d
    if rep_size:
        total = total + d * rep_size + rep_size
        features = rep_size
    if num_classes:
        total = total + features * num_classes + num_classes
    return total


def _block_params(width, mlp_dim):
    """Weights of one pre-LN encoder block (2 LNs, attention, MLP)."""
    layer_norms = 2 * 2 * width
    attention = 4 * (width * width + width)
    mlp = 2 * width * mlp_dim + mlp_dim + width
    return layer_norms + attention + mlp


def _check_posemb(posemb, width):
    check_choice("posemb", posemb, POSEMB_TYPES)
    if posemb == "sincos2d" and width % 4:
        raise ValueError(
            "`posemb='sincos2d'` needs `width` divisible by 4. "
            f"Received: width={width}"
        )


def round_to_multiple(value, multiple):
    """The nearest positive multiple of `multiple`; halves round up.

    The one rounding rule of the library: `Rounding`, the oracle's grids
    and the default plans all snap with it.
    """
    return int(max(1, math.floor(value / multiple + 0.5)) * multiple)


@dataclasses.dataclass(frozen=True)
class Rounding:
    """Snaps scaled shapes to hardware-friendly sizes and picks heads.

    The paper does not state how its scaled shapes were rounded (SPEC
    §2.3); SoViT-400m has width 1152 = 16 × 72, MLP 4304 = 16 × 269 and 16
    heads. `Rounding` rounds width and MLP to the nearest multiple, depth to
    the nearest `depth_multiple`, and chooses the number of heads:

    - `num_heads` given: the head count is fixed and width is snapped to a
      multiple of lcm(`width_multiple`, `num_heads`).
    - `head_dim` given: heads = max(1, round(width / head_dim)), then width
      is snapped to a multiple of lcm(`width_multiple`, heads).
    - neither: the head count of the shape being scaled is kept.

    Args:
        width_multiple: int. Width is a multiple of this. Defaults to `16`.
        mlp_multiple: int. MLP size is a multiple of this. Defaults to `16`.
        depth_multiple: int. Depth is a multiple of this. Defaults to `1`.
        num_heads: int or None. Fixed head count. Defaults to `None`.
        head_dim: int or None. Target head size. Defaults to `None`.

    Example:

    ```python
    rounding = keras_sovit.scaling.Rounding(head_dim=64)
    shape = rounding.snap(1000.0, 20.4, 3000.0, patch_size=14)
    # ShapeSpec(width=1008, depth=20, mlp_dim=3008, num_heads=16, ...)
    ```
    """

    width_multiple: int = 16
    mlp_multiple: int = 16
    depth_multiple: int = 1
    num_heads: int = None
    head_dim: int = None

    def __post_init__(self):
        for name in ("width_multiple", "mlp_multiple", "depth_multiple"):
            check_positive_int(name, getattr(self, name))
        for name in ("num_heads", "head_dim"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        if self.num_heads is not None and self.head_dim is not None:
            raise ValueError(
                "Pass at most one of `num_heads` and `head_dim`. Received: "
                f"num_heads={self.num_heads}, head_dim={self.head_dim}"
            )

    def heads_for(self, width, default_heads=None):
        """Head count for a (real-valued) width."""
        if self.num_heads is not None:
            return self.num_heads
        if self.head_dim is not None:
            return max(1, math.floor(width / self.head_dim + 0.5))
        if default_heads is None:
            raise ValueError(
                "`Rounding` without `num_heads` or `head_dim` needs the head "
                "count of a template shape. Received: default_heads=None"
            )
        return check_positive_int("default_heads", default_heads)

    def snap(self, width, depth, mlp_dim, patch_size=16, default_heads=None):
        """Rounds real-valued dimensions to a valid `ShapeSpec`."""
        for name, value in (
            ("width", width), ("depth", depth), ("mlp_dim", mlp_dim)
        ):
            check_positive_number(name, value)
        heads = self.heads_for(width, default_heads)
        return ShapeSpec(
            width=round_to_multiple(width, self.width_step(width, heads)),
            depth=round_to_multiple(depth, self.depth_multiple),
            mlp_dim=round_to_multiple(mlp_dim, self.mlp_multiple),
            num_heads=heads,
            patch_size=patch_size,
        )

    def width_step(self, width, default_heads=None):
        """Granularity of width for a given width (for searches)."""
        return math.lcm(
            self.width_multiple, self.heads_for(width, default_heads)
        )

    def steps(self, width, default_heads=None):
        """`{dim: step}` of the lattice the snapped shapes lie on."""
        return {
            "width": self.width_step(width, default_heads),
            "depth": self.depth_multiple,
            "mlp_dim": self.mlp_multiple,
        }

    def to_dict(self):
        """Every field, JSON-safe (a search compares it on resume)."""
        return dataclasses.asdict(self)


def check_rounding(rounding):
    """Returns `rounding`, or `Rounding()` for `None`; else a ValueError."""
    if rounding is None:
        return Rounding()
    if not isinstance(rounding, Rounding):
        raise ValueError(
            f"`rounding` must be a Rounding. Received: rounding={rounding!r}"
        )
    return rounding


def check_shape_spec(name, value, allow_dict=False):
    """`value` as a `ShapeSpec` (or built from a dict with `allow_dict`)."""
    if allow_dict and isinstance(value, dict):
        return ShapeSpec.from_dict(value)
    if not isinstance(value, ShapeSpec):
        what = "a ShapeSpec or a dict of its fields" if allow_dict else (
            "a ShapeSpec"
        )
        raise ValueError(
            f"`{name}` must be {what}. Received: {name}={value!r}"
        )
    return value
