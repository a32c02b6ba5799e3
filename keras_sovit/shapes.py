"""Transformer shapes, the variant table, and exact size and compute counts.

Pure Python: importing this module never imports keras or a backend, so the
scaling-law code can use it without a framework.
"""

import dataclasses
import math
import numbers
import re

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

_VARIANT_PATTERN = re.compile(r"^(?P<name>[A-Za-z0-9-]+)/(?P<patch>\d+)$")


def check_positive_int(name, value):
    """Returns `value` as a Python int, or raises a `ValueError` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    if value <= 0:
        raise ValueError(
            f"`{name}` must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def check_non_negative_int(name, value):
    """Returns `value` as a Python int >= 0, or raises a `ValueError`."""
    if isinstance(value, bool) or not isinstance(
        value, numbers.Integral
    ) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_positive_number(name, value, allow_zero=False):
    """Returns `value` as a finite float > 0 (>= 0 with `allow_zero`).

    Raises a `ValueError` naming `name` for anything else, bools included.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(
            f"`{name}` must be a {kind} finite number. "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_choice(name, value, choices):
    """Raises a `ValueError` naming `name` unless `value` is in `choices`."""
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def image_hw(image_size, name="image_size"):
    """Normalises an int or `(height, width)` image size to a tuple."""
    if isinstance(image_size, (tuple, list)):
        if len(image_size) != 2:
            raise ValueError(
                f"`{name}` must be an int or a (height, width) pair. "
                f"Received: {name}={image_size!r}"
            )
        return tuple(check_positive_int(name, v) for v in image_size)
    size = check_positive_int(name, image_size)
    return size, size


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
        channels = check_positive_int("channels", channels)
        num_classes = check_non_negative_int("num_classes", num_classes)
        d, m, p = self.width, self.mlp_dim, self.patch_size
        n_patches = self.num_patches(image_size, strict)
        total = p * p * channels * d + d
        if posemb == "learn":
            total += n_patches * d
        if pool_type == "tok":
            total += d
        total += self.depth * _block_params(d, m) + 2 * d
        if pool_type == "map":
            total += d + _block_params(d, m) - 2 * d
        features = d
        if rep_size:
            rep_size = check_positive_int("rep_size", rep_size)
            total += d * rep_size + rep_size
            features = rep_size
        if num_classes:
            total += features * num_classes + num_classes
        return total

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
        channels = check_positive_int("channels", channels)
        num_classes = check_non_negative_int("num_classes", num_classes)
        d, m, p = self.width, self.mlp_dim, self.patch_size
        n_patches = self.num_patches(image_size, strict)
        n = n_patches + (1 if pool_type == "tok" else 0)
        macs = n_patches * p * p * channels * d
        macs += self.depth * (4 * n * d * d + 2 * n * d * m + 2 * n * n * d)
        if pool_type == "map":
            macs += 2 * n * d * d + 2 * d * d + 2 * n * d + 2 * d * m
        features = d
        if rep_size:
            features = check_positive_int("rep_size", rep_size)
            macs += d * features
        macs += features * num_classes
        return 2.0 * macs / 1e9

    def __str__(self):
        return (
            f"ShapeSpec(width={self.width}, depth={self.depth}, "
            f"mlp_dim={self.mlp_dim}, num_heads={self.num_heads}, "
            f"patch_size={self.patch_size})"
        )


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


def check_shape_spec(name, value, allow_dict=False):
    """Returns `value` as a `ShapeSpec`, or raises a `ValueError` naming it.

    With `allow_dict=True` a dict of the five shape fields is accepted too.
    """
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
