"""Shared checks for layer tests (no TensorFlow import).

`run_layer_test` gives a public layer the standard treatment: config
round-trip (every constructor argument present), serialization, a symbolic
call, an eager call, one `fit` step with XLA, and a `.keras` save/load with
identical outputs.
"""

import inspect
import os

import keras
import numpy as np


def jit_compile():
    """`jit_compile` for test models: XLA on TensorFlow and JAX.

    On torch, Keras' `jit_compile=True` means `torch.compile`, whose C++
    code generation takes minutes per model on a CPU; the torch pass runs
    eagerly instead (one classifier test compiles with `--run_large`).
    """
    return keras.backend.backend() != "torch"


def check_config_round_trip(layer_cls, init_kwargs):
    """Every constructor argument is in `get_config`; round-trips exactly."""
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    params = inspect.signature(layer_cls.__init__).parameters
    ctor_args = [
        name
        for name, p in params.items()
        if name != "self" and p.kind is not p.VAR_KEYWORD
    ]
    missing = [name for name in ctor_args if name not in config]
    assert not missing, f"get_config lacks constructor args {missing}"
    for key, value in init_kwargs.items():
        assert _plain(config[key]) == _plain(value), key
    restored = layer_cls.from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls
    assert revived.get_config() == config


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    tmp_path,
    expected_num_trainable_weights=None,
):
    """Config, symbolic, eager, fit (jit but on torch) and `.keras` checks."""
    check_config_round_trip(layer_cls, init_kwargs)

    # Symbolic call and compute_output_shape.
    layer = layer_cls(**init_kwargs)
    symbolic_in = keras.Input(shape=input_data.shape[1:], batch_size=None)
    symbolic_out = layer(symbolic_in)
    expected_symbolic = (None,) + tuple(expected_output_shape[1:])
    assert tuple(symbolic_out.shape) == expected_symbolic
    assert tuple(layer.compute_output_shape(symbolic_in.shape)) == (
        expected_symbolic
    )
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights

    # Eager call.
    eager_layer = layer_cls(**init_kwargs)
    output = keras.ops.convert_to_numpy(eager_layer(input_data))
    assert output.shape == tuple(expected_output_shape)
    assert np.all(np.isfinite(output))

    # One training step of a wrapper model, XLA-compiled.
    inputs = keras.Input(shape=input_data.shape[1:])
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_compile())
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    target = np.random.default_rng(0).normal(size=output.shape)
    history = model.fit(input_data, target, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert all(b.shape == a.shape for b, a in zip(before, after))
    if before:
        assert any(not np.array_equal(b, a) for b, a in zip(before, after))

    # `.keras` save and load: identical outputs.
    path = os.path.join(str(tmp_path), f"{layer_cls.__name__}.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(
        model.predict(input_data, verbose=0),
        restored.predict(input_data, verbose=0),
    )
    return model


def randomize_weights(layer, seed=0, scale=0.5):
    """Sets every weight to random normal values (non-trivial numerics)."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        value = rng.normal(scale=scale, size=weight.shape)
        weight.assign(value.astype(weight.dtype))


# Independent NumPy reference of big_vision's ViT pieces (float64).


def np_layer_norm(x, gamma, beta, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def np_gelu_tanh(x):
    c = np.sqrt(2.0 / np.pi)
    return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x**3)))


def np_gelu_erf(x):
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def np_softmax(x):
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def np_attention(query, value, w):
    """Multi-head attention with per-head loops; `w` holds the arrays."""
    heads = w["query_kernel"].shape[1]
    out = np.zeros(query.shape[:2] + (heads, w["query_kernel"].shape[2]))
    for h in range(heads):
        q = query @ w["query_kernel"][:, h] + w["query_bias"][h]
        k = value @ w["key_kernel"][:, h] + w["key_bias"][h]
        v = value @ w["value_kernel"][:, h] + w["value_bias"][h]
        scores = q @ np.swapaxes(k, 1, 2) / np.sqrt(q.shape[-1])
        out[:, :, h] = np_softmax(scores) @ v
    return np.einsum("bqhk,hkd->bqd", out, w["out_kernel"]) + w["out_bias"]


def np_mlp(x, w0, b0, w1, b1, approximate=True):
    gelu = np_gelu_tanh if approximate else np_gelu_erf
    return gelu(x @ w0 + b0) @ w1 + b1


def value_and_gradients(model, x, training=True):
    """`sum(model(x) ** 2) / 2` and its gradients w.r.t. the trainable
    weights, on the current backend (numpy arrays)."""
    backend = keras.backend.backend()
    weights = model.trainable_variables
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = 0.5 * tf.reduce_sum(model(x, training=training) ** 2)
        grads = tape.gradient(loss, weights)
    elif backend == "jax":
        import jax

        def loss_fn(trainable):
            y, _ = model.stateless_call(
                trainable,
                [v.value for v in model.non_trainable_variables],
                x,
                training=training,
            )
            return 0.5 * jax.numpy.sum(y**2)

        loss, grads = jax.value_and_grad(loss_fn)(
            [v.value for v in weights]
        )
    else:
        loss = 0.5 * (model(x, training=training) ** 2).sum()
        loss.backward()
        grads = [v.value.grad for v in weights]
    to_np = keras.ops.convert_to_numpy
    return float(to_np(loss)), [to_np(g) for g in grads]
