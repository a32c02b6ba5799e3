import keras
import numpy as np
import pytest

from keras_sovit.layers import MAPHead
from tests.layers.test_encoder_block import _attention_weights
from tests.layers.test_encoder_block import _np
from tests.testing import np_attention
from tests.testing import np_layer_norm
from tests.testing import np_mlp
from tests.testing import randomize_weights
from tests.testing import run_layer_test


def _inputs(seed=0, shape=(2, 16, 32)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_layer_basics(tmp_path):
    run_layer_test(
        MAPHead,
        {
            "num_heads": 4,
            "mlp_dim": 64,
            "layer_norm_epsilon": 1e-6,
            "approximate_gelu": True,
        },
        _inputs(),
        (2, 32),
        tmp_path,
        # probe, 8 attention weights, LN x 2, 2 MLP denses x 2.
        expected_num_trainable_weights=15,
    )


@pytest.mark.parametrize("approximate_gelu", [True, False])
def test_matches_independent_numpy_map_head(approximate_gelu):
    x = _inputs(1, shape=(3, 10, 32))
    head = MAPHead(num_heads=4, mlp_dim=40, approximate_gelu=approximate_gelu)
    head.build(x.shape)
    randomize_weights(head, seed=5, scale=0.3)
    out = keras.ops.convert_to_numpy(head(x))

    xd = x.astype("float64")
    probe = np.broadcast_to(_np(head.probe), (3, 1, 32))
    h = np_attention(probe, xd, _attention_weights(head.attention))
    y = np_layer_norm(h, _np(head.layer_norm.gamma), _np(head.layer_norm.beta))
    d0, d1 = head.mlp.dense_0, head.mlp.dense_1
    h = h + np_mlp(
        y,
        _np(d0.kernel),
        _np(d0.bias),
        _np(d1.kernel),
        _np(d1.bias),
        approximate=approximate_gelu,
    )
    np.testing.assert_allclose(out, h[:, 0], rtol=1e-5, atol=2e-5)


def test_probe_is_xavier_uniform():
    head = MAPHead(num_heads=2, mlp_dim=8)
    head.build((None, 5, 256))
    probe = _np(head.probe)
    assert probe.shape == (1, 1, 256)
    limit = np.sqrt(6.0 / (1 + 256))
    assert limit * 0.9 < np.abs(probe).max() <= limit


def test_pooling_is_permutation_invariant():
    x = _inputs(2)
    head = MAPHead(num_heads=4, mlp_dim=16)
    out = keras.ops.convert_to_numpy(head(x))
    shuffled = keras.ops.convert_to_numpy(head(x[:, ::-1]))
    np.testing.assert_allclose(out, shuffled, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_heads": 0, "mlp_dim": 8}, "num_heads"),
        ({"num_heads": 2, "mlp_dim": True}, "mlp_dim"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MAPHead(**kwargs)
