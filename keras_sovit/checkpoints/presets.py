"""Building SoViT models from the preset table (no download)."""

import os
import warnings

from keras_sovit.checkpoints._arrays import read_state_dict
from keras_sovit.checkpoints.big_vision_format import load_big_vision
from keras_sovit.checkpoints.timm_format import load_timm
from keras_sovit.checkpoints.transformers_format import load_transformers
from keras_sovit.models.sovit_presets import SOVIT_PRESETS
from keras_sovit.shapes import ShapeSpec

FORMATS = ("big_vision", "timm", "transformers")


def detect_format(checkpoint):
    """The format of a checkpoint path: `(format, state)`.

    `.npz` files are big_vision's, directories HF `save_pretrained`
    output; other files are read once and told apart by their keys
    (`patch_embed.proj.weight` is timm, `embeddings.patch_embedding.weight`
    HF transformers). `state` is the dict read, or the path itself.
    """
    path = os.fspath(checkpoint)
    if path.endswith(".npz"):
        return "big_vision", path
    if os.path.isdir(path):
        return "transformers", path
    state = read_state_dict(path, "checkpoint")
    if "patch_embed.proj.weight" in state:
        return "timm", state
    if any(k.endswith("embeddings.patch_embedding.weight") for k in state):
        return "transformers", state
    raise ValueError(
        "Cannot tell the format of `checkpoint` (big_vision .npz, timm or "
        f"HF transformers weights). Received: checkpoint={checkpoint!r}"
    )


def get_preset(name):
    if name not in SOVIT_PRESETS:
        raise ValueError(
            f"`preset` must be one of {sorted(SOVIT_PRESETS)}. "
            f"Received: preset={name!r}"
        )
    preset = SOVIT_PRESETS[name]
    if preset.get("unsupported"):
        raise ValueError(
            f"Preset {name!r} cannot be loaded: a SoViT cannot represent "
            f"{preset['unsupported']}."
        )
    return preset


def load_preset(
    name,
    checkpoint=None,
    load_weights=True,
    image_shape=None,
    num_classes=None,
    dtype=None,
    approximate_gelu=None,
):
    """A model of preset `name`, with the weights of `checkpoint`."""
    preset = get_preset(name)
    if image_shape is None:
        size = preset["image_size"]
        image_shape = (size, size, 3)
    if not load_weights:
        return _random_model(preset, image_shape, num_classes, dtype,
                             approximate_gelu)
    fmt, source = _checked_checkpoint(name, preset, checkpoint)
    if approximate_gelu is None:
        approximate_gelu = preset["approximate_gelu"][fmt]
    model = _load(fmt, source, preset, image_shape, num_classes, dtype,
                  approximate_gelu)
    backbone = getattr(model, "backbone", model)
    spec = ShapeSpec.from_dict(preset["shape"])
    if backbone.shape_spec != spec or backbone.pool_type != preset["pool_type"]:
        raise ValueError(
            f"`checkpoint` holds a {backbone.shape_spec} with pool_type="
            f"{backbone.pool_type!r}, not preset {name!r} ({spec}, "
            f"pool_type={preset['pool_type']!r}). Received: "
            f"checkpoint={checkpoint!r}"
        )
    return model


def _random_model(preset, image_shape, num_classes, dtype, approximate_gelu):
    """The preset's architecture with random weights."""
    from keras_sovit.models import SoViTBackbone
    from keras_sovit.models import SoViTClassifier

    if approximate_gelu is None:
        approximate_gelu = next(iter(preset["approximate_gelu"].values()))
    backbone = SoViTBackbone(
        ShapeSpec.from_dict(preset["shape"]),
        image_shape=image_shape,
        pool_type=preset["pool_type"],
        approximate_gelu=approximate_gelu,
        dtype=dtype,
    )
    classes = preset["num_classes"] if num_classes is None else num_classes
    if not classes:
        return backbone
    return SoViTClassifier(backbone, classes, dtype=dtype)


def _checked_checkpoint(name, preset, checkpoint):
    """`(format, source)` of `checkpoint`, refused when the preset is not
    published in that format; a warning when the file name differs."""
    if checkpoint is None:
        files = "\n".join(f"  {f}: {u}" for f, u in preset["files"].items())
        raise ValueError(
            f"`checkpoint` is needed: keras_sovit never downloads. Fetch "
            f"one of the files of preset {name!r}:\n{files}\nand pass its "
            "path (or load_weights=False for random weights). Received: "
            "checkpoint=None"
        )
    fmt, source = detect_format(checkpoint)
    if fmt not in preset["files"]:
        raise ValueError(
            f"Preset {name!r} is published as {sorted(preset['files'])}, "
            f"but `checkpoint` is a {fmt} file. Received: "
            f"checkpoint={checkpoint!r}"
        )
    expected = os.path.basename(preset["files"][fmt])
    path = os.fspath(checkpoint)
    if not os.path.isdir(path) and os.path.basename(path) != expected:
        warnings.warn(
            f"Preset {name!r} expects a {fmt} file named {expected!r}; "
            f"loading {path!r}.",
            stacklevel=4,
        )
    return fmt, source


def _load(fmt, source, preset, image_shape, num_classes, dtype,
          approximate_gelu):
    """The checkpoint's model through the loader of its format."""
    num_heads = ShapeSpec.from_dict(preset["shape"]).num_heads
    common = {"image_shape": image_shape, "dtype": dtype}
    if fmt == "big_vision":
        return load_big_vision(source, num_classes=num_classes,
                               approximate_gelu=approximate_gelu, **common)
    if fmt == "timm":
        return load_timm(source, num_heads=num_heads, num_classes=num_classes,
                         approximate_gelu=approximate_gelu, **common)
    model = load_transformers(source, num_heads=num_heads,
                              pool_type=preset["pool_type"], **common)
    if num_classes is not None:
        model = _with_head(model, num_classes)
    if approximate_gelu != model.approximate_gelu:
        raise ValueError(
            f"The transformers config sets approximate_gelu="
            f"{model.approximate_gelu}. Received: approximate_gelu="
            f"{approximate_gelu!r}"
        )
    return model


def _with_head(model, num_classes):
    """`model` with a fresh zero head of `num_classes` (0: no head)."""
    from keras_sovit.models import SoViTClassifier

    backbone = getattr(model, "backbone", model)
    if isinstance(model, SoViTClassifier) and model.num_classes == num_classes:
        return model
    if not num_classes:
        return backbone
    return SoViTClassifier(backbone, num_classes, dtype=backbone.dtype_policy)
