import math

import keras
import numpy as np
import pytest

from keras_sovit.training import RsqrtSchedule


def reference_lr(s, base_lr, warmup, timescale, cooldown, total):
    """Plain-Python transcription of the paper's formula."""
    warm = 1.0 if warmup == 0 else min(1.0, s / warmup)
    r = 1.0 if s < warmup else 1.0 / math.sqrt(1.0 + (s - warmup) / timescale)
    cool = 1.0 if cooldown == 0 else min(1.0, (total - s) / cooldown)
    return base_lr * warm * r * cool


CASES = [
    (8e-4, 10_000, 10_000, 50_000, 1_000_000),
    (1e-3, 7, 3, 11, 40),
    (0.5, 0, 5, 0, 30),  # no warmup, no cooldown
    (2e-3, 20, 1, 20, 20),  # cooldown spans the whole run
]


@pytest.mark.parametrize("base_lr,warmup,timescale,cooldown,total", CASES)
def test_matches_reference_formula(base_lr, warmup, timescale, cooldown, total):
    schedule = RsqrtSchedule(base_lr, warmup, timescale, cooldown, total)
    steps = np.unique(np.linspace(0, total, 97).astype(int))
    got = [float(schedule(int(s))) for s in steps]
    want = [
        reference_lr(int(s), base_lr, warmup, timescale, cooldown, total)
        for s in steps
    ]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)


def test_known_values_of_paper_schedule():
    schedule = RsqrtSchedule(8e-4, 10_000, 10_000, 50_000, 1_000_000)
    assert float(schedule(5_000)) == pytest.approx(4e-4, rel=1e-6)
    assert float(schedule(10_000)) == pytest.approx(8e-4, rel=1e-6)
    # Three timescales after warmup: 1 / sqrt(4) = 1/2.
    assert float(schedule(40_000)) == pytest.approx(4e-4, rel=1e-6)
    assert float(schedule(1_000_000)) == 0.0


def test_works_inside_compiled_function():
    schedule = RsqrtSchedule(1e-3, 7, 3, 11, 40)
    steps = keras.ops.arange(0, 41)
    if keras.backend.backend() == "jax":
        import jax

        got = jax.jit(jax.vmap(schedule))(steps)
    elif keras.backend.backend() == "torch":
        import torch

        # A functional transform traces the schedule like jax.vmap does
        # (torch.compile works too, at 12 s of code generation).
        got = torch.func.vmap(schedule)(steps).numpy()
    else:
        import tensorflow as tf

        got = tf.function(jit_compile=True)(
            lambda s: tf.map_fn(schedule, s, fn_output_signature="float32")
        )(steps)
    want = [reference_lr(s, 1e-3, 7, 3, 11, 40) for s in range(41)]
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-12)


def test_serialization_round_trip():
    schedule = RsqrtSchedule(1e-3, 7, 3, 11, 40)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert isinstance(restored, RsqrtSchedule)
    assert restored.get_config() == schedule.get_config()
    optimizer = keras.optimizers.AdamW(learning_rate=schedule)
    optimizer2 = keras.optimizers.AdamW.from_config(optimizer.get_config())
    assert float(optimizer2.learning_rate) == 0.0  # step 0 of the warmup


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(base_lr=-1.0), "base_lr"),
        (dict(base_lr="x"), "base_lr"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(warmup_steps=1.5), "warmup_steps"),
        (dict(timescale=0), "timescale"),
        (dict(cooldown_steps=-3), "cooldown_steps"),
        (dict(total_steps=5), "total_steps"),
    ],
)
def test_bad_arguments(kwargs, name):
    args = dict(
        base_lr=1e-3,
        warmup_steps=10,
        timescale=10,
        cooldown_steps=10,
        total_steps=100,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        RsqrtSchedule(**args)
