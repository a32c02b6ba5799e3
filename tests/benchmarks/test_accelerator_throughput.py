"""benchmarks/accelerator_throughput.py in its tiny CPU mode.

The benchmark runs in a subprocess on the JAX backend with TensorFlow
unimportable (as on an accelerator machine without it), so this test
computes nothing on the test session's own backend.
"""

import json
import os
import subprocess
import sys

import pytest

import keras_sovit

HERE = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))

pytestmark = pytest.mark.backend_free


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("accelerator") / "rows.json"
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "benchmarks",
                                      "accelerator_throughput.py"),
         "--tiny", "--skip", "keras_hub", "--json", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(out.read_text()), result.stdout


def _rows(run, model):
    return {(r["flash"], r["remat"]): r for r in run[0]["rows"]
            if r["model"] == model}  # fmt: skip


def test_every_setting_trains_the_same_model_in_both_frameworks(tiny_run):
    ours, timm = _rows(tiny_run, "keras_sovit"), _rows(tiny_run, "timm")
    settings = {(f, r) for f in ("auto", "off") for r in (False, True)}
    assert set(ours) == set(timm) == settings
    expected = keras_sovit.ShapeSpec(64, 2, 128, 4, 8).num_params(
        32, num_classes=10, pool_type="map"
    )
    for row in list(ours.values()) + list(timm.values()):
        assert row["status"] == "ok", row
        assert row["params"] == expected, row
        # Five AdamW steps on one batch: the loss must fall.
        assert row["last_loss"] < row["first_loss"], row
        assert row["img_s"] == pytest.approx(8 / row["step_s"])


def test_flash_setting_changes_nothing_on_a_cpu(tiny_run):
    # Same seed, same batch: a CPU has no fused kernel, so "auto" and "off"
    # run the same exact attention and follow one trajectory. (remat's
    # equality with the plain model is tested in float32 in
    # tests/models/test_sovit_backbone.py.)
    ours = _rows(tiny_run, "keras_sovit")
    for remat in (False, True):
        auto, off = ours[("auto", remat)], ours[("off", remat)]
        assert auto["first_loss"] == pytest.approx(off["first_loss"], 1e-6)
        assert auto["last_loss"] == pytest.approx(off["last_loss"], 1e-6)


def test_mfu_uses_the_measured_matmul_rate(tiny_run):
    run, stdout = tiny_run
    forward = keras_sovit.ShapeSpec(64, 2, 128, 4, 8).gflops(
        32, num_classes=10, pool_type="map"
    )
    for row in run["rows"]:
        rate = run["rates_tflops"]["timm" if row["model"] == "timm"
                                   else "keras"]  # fmt: skip
        assert row["forward_gflops"] == pytest.approx(forward)
        assert row["mfu"] == pytest.approx(
            3 * forward * row["img_s"] / (rate * 1e3)
        )
    assert "/ timm" in stdout  # the ratio line at equal settings
