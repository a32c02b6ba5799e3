import keras
import numpy as np
import pytest

from keras_sovit.layers import EncoderBlock
from tests.testing import check_config_round_trip
from tests.testing import np_attention
from tests.testing import np_layer_norm
from tests.testing import np_mlp
from tests.testing import randomize_weights
from tests.testing import run_layer_test
from tests.testing import value_and_gradients


def _inputs(seed=0, shape=(2, 16, 32)):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _attention_weights(attention):
    names = ("query", "key", "value", "out")
    weights = {}
    for name in names:
        for part in ("kernel", "bias"):
            key = f"{name}_{part}"
            weights[key] = keras.ops.convert_to_numpy(
                getattr(attention, key)
            ).astype("float64")
    return weights


def _np(variable):
    return keras.ops.convert_to_numpy(variable).astype("float64")


def test_layer_basics(tmp_path):
    run_layer_test(
        EncoderBlock,
        {
            "num_heads": 4,
            "mlp_dim": 64,
            "dropout_rate": 0.1,
            "stochastic_depth_rate": 0.1,
            "layer_norm_epsilon": 1e-6,
            "approximate_gelu": False,
        },
        _inputs(),
        (2, 16, 32),
        tmp_path,
        # 2 LNs x 2, q/k/v/out kernels and biases, 2 MLP denses x 2.
        expected_num_trainable_weights=16,
    )


@pytest.mark.parametrize("approximate_gelu", [True, False])
def test_matches_independent_numpy_block(approximate_gelu):
    x = _inputs(1)
    block = EncoderBlock(
        num_heads=4, mlp_dim=48, approximate_gelu=approximate_gelu
    )
    block.build(x.shape)
    randomize_weights(block, seed=2, scale=0.3)
    out = keras.ops.convert_to_numpy(block(x))

    xd = x.astype("float64")
    ln0, ln1 = block.layer_norm_0, block.layer_norm_1
    y = np_layer_norm(xd, _np(ln0.gamma), _np(ln0.beta))
    h = xd + np_attention(y, y, _attention_weights(block.attention))
    y = np_layer_norm(h, _np(ln1.gamma), _np(ln1.beta))
    d0, d1 = block.mlp.dense_0, block.mlp.dense_1
    weights = _np(d0.kernel), _np(d0.bias), _np(d1.kernel), _np(d1.bias)
    expected = h + np_mlp(y, *weights, approximate=approximate_gelu)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-5)
    # The other GELU form is measurably different at these scales.
    other = h + np_mlp(y, *weights, approximate=not approximate_gelu)
    assert np.max(np.abs(other - expected)) > 1e-3


def test_big_vision_weight_layout_and_init():
    width, heads, mlp = 64, 4, 96
    block = EncoderBlock(num_heads=heads, mlp_dim=mlp)
    block.build((None, 50, width))
    shapes = {w.path.split("/", 1)[1]: tuple(w.shape) for w in block.weights}
    prefix = "MultiHeadDotProductAttention_0/"
    assert shapes[prefix + "query_kernel"] == (width, heads, width // heads)
    assert shapes[prefix + "value_bias"] == (heads, width // heads)
    assert shapes[prefix + "out_kernel"] == (heads, width // heads, width)
    assert shapes[prefix + "out_bias"] == (width,)
    assert shapes["MlpBlock_0/Dense_0/kernel"] == (width, mlp)
    assert shapes["MlpBlock_0/Dense_1/kernel"] == (mlp, width)
    assert block.layer_norm_0.epsilon == 1e-6
    # Xavier-uniform over the flat (D, D) matrix, as flax initialises it.
    q = _np(block.attention.query_kernel)
    limit = np.sqrt(6.0 / (2 * width))
    assert np.abs(q).max() <= limit
    assert np.abs(q).max() > 0.9 * limit
    # MLP biases ~ normal(1e-6).
    bias = _np(block.mlp.dense_0.bias)
    assert 0 < np.abs(bias).max() < 1e-5


def test_dropout_and_stochastic_depth_only_in_training():
    x = _inputs(3)
    block = EncoderBlock(
        num_heads=4, mlp_dim=64, dropout_rate=0.5, stochastic_depth_rate=0.5
    )
    infer_a = keras.ops.convert_to_numpy(block(x, training=False))
    infer_b = keras.ops.convert_to_numpy(block(x, training=False))
    train = keras.ops.convert_to_numpy(block(x, training=True))
    np.testing.assert_array_equal(infer_a, infer_b)
    assert not np.allclose(train, infer_a)


def test_stochastic_depth_drops_whole_examples():
    x = _inputs(4, shape=(64, 4, 8))
    block = EncoderBlock(num_heads=2, mlp_dim=8, stochastic_depth_rate=0.5)
    out = keras.ops.convert_to_numpy(block(x, training=True))
    # An example whose two branches were both dropped is returned as is.
    unchanged = np.all(np.isclose(out, x), axis=(1, 2))
    assert 4 <= unchanged.sum() <= 30  # about 64 / 4 expected


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_heads": 0, "mlp_dim": 8}, "num_heads"),
        ({"num_heads": 2.5, "mlp_dim": 8}, "num_heads"),
        ({"num_heads": 2, "mlp_dim": -1}, "mlp_dim"),
        ({"num_heads": 2, "mlp_dim": 8, "dropout_rate": 1.0}, "dropout_rate"),
        (
            {"num_heads": 2, "mlp_dim": 8, "approximate_gelu": None},
            "approximate_gelu",
        ),
        (
            {"num_heads": 2, "mlp_dim": 8, "stochastic_depth_rate": -0.1},
            "stochastic_depth_rate",
        ),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        EncoderBlock(**kwargs)


def test_width_not_divisible_by_heads():
    with pytest.raises(ValueError, match="num_heads"):
        EncoderBlock(num_heads=3, mlp_dim=8)(np.zeros((1, 4, 8), "float32"))


def _twin_blocks(**kwargs):
    """A plain block and a rematerialised one with equal weights and
    equal seed-generator states."""
    x = _inputs(4, shape=(3, 16, 32))
    blocks = []
    for remat in (False, True):
        keras.utils.set_random_seed(7)
        block = EncoderBlock(num_heads=4, mlp_dim=48, remat=remat, **kwargs)
        block.build(x.shape)
        blocks.append(block)
    randomize_weights(blocks[0], seed=5, scale=0.3)
    blocks[1].set_weights(blocks[0].get_weights())
    return x, blocks


@pytest.mark.parametrize("training", [True, False])
def test_remat_block_has_the_plain_blocks_outputs_and_gradients(training):
    x, (plain, remat) = _twin_blocks(
        dropout_rate=0.2, stochastic_depth_rate=0.3
    )
    # Keras' torch dropout draws from torch's global generator (not the
    # layer's seed state) for unseeded layers: reseed before each run.
    keras.utils.set_random_seed(11)
    loss, grads = value_and_gradients(plain, x, training=training)
    keras.utils.set_random_seed(11)
    remat_loss, remat_grads = value_and_gradients(remat, x, training=training)
    np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
    assert len(grads) == len(remat_grads) == 16
    for g, h in zip(grads, remat_grads):
        np.testing.assert_allclose(h, g, rtol=1e-5, atol=1e-6)
    # The masks are drawn (or not) as the mode says: training with dropout
    # gives another loss than inference.
    _, (eval_block, _) = _twin_blocks(
        dropout_rate=0.2, stochastic_depth_rate=0.3
    )
    eval_loss, _ = value_and_gradients(eval_block, x, training=False)
    assert (abs(loss - eval_loss) > 1e-3 * abs(eval_loss)) == training


def test_block_dropout_masks_follow_keras_dropout():
    # With stochastic depth off and the attention branch zeroed, the
    # block's training output is x + Dropout(MLP with inner dropout):
    # recomputed here with the block's own Keras Dropout layers drawn from
    # the same seed states.
    keras.utils.set_random_seed(3)
    block = EncoderBlock(num_heads=4, mlp_dim=48, dropout_rate=0.25)
    x = _inputs(6)
    block.build(x.shape)
    randomize_weights(block, seed=1, scale=0.3)
    state = [keras.ops.copy(v) for v in block.non_trainable_variables]
    keras.utils.set_random_seed(11)  # torch: see the test above
    out = keras.ops.convert_to_numpy(block(x, training=True))
    for v, s in zip(block.non_trainable_variables, state):
        v.assign(s)
    keras.utils.set_random_seed(11)
    attention = keras.ops.convert_to_numpy(
        block.attention(block.layer_norm_0(x))
    )
    # Draw order in the block: attention, hidden (inside the MLP), mlp;
    # each from its own layer's seed generator.
    h = x + keras.ops.convert_to_numpy(
        block.attention_dropout(attention, training=True)
    )
    mlp = block.mlp
    hidden = keras.activations.gelu(
        mlp.dense_0(block.layer_norm_1(h)), approximate=True
    )
    y = mlp.dense_1(mlp.dropout(hidden, training=True))
    expected = h + keras.ops.convert_to_numpy(
        block.mlp_dropout(y, training=True)
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    dropped = np.mean(out == h)  # rows where the MLP branch was dropped
    assert 0.1 < dropped < 0.4


def test_remat_is_in_the_config():
    check_config_round_trip(
        EncoderBlock, {"num_heads": 4, "mlp_dim": 64, "remat": True}
    )
    with pytest.raises(ValueError, match="remat"):
        EncoderBlock(num_heads=4, mlp_dim=64, remat="yes")
