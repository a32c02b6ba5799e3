"""One process of a tiny distributed shape search (chief or worker).

Run by `tests/tuner/test_distributed.py` as a subprocess, with KerasTuner's
environment variables set: `KERASTUNER_TUNER_ID` (`chief` for the oracle
server, `tuner0`, `tuner1`, ... for workers), `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`. The chief and the workers build the same
`ShapeOracle` and `SoViTHyperModel`; the workers see the chief's oracle only
through KerasTuner's gRPC client.

The search has three trials: the paper's exponents are given (no star
sweep), the grid sweep is one shape (trial `0000`), and the final trials
(`0001`, `0002`) are the proposal and the standard-shaped control at a tiny
`target_compute`. Workers wait IDLE while the chief moves from the grid
phase to the final phase.

Progress is recorded as empty marker files in `--markers` so the test can
follow (and kill) the processes:
`ready-<tuner_id>-<pid>` once the tuner is built, `start-<trial_id>-
<tuner_id>-<pid>` when a trial begins, `end-<trial_id>-<tuner_id>-<pid>-
<status>` when it has been reported to the oracle, and `done-<tuner_id>-
<pid>` when `search` returns.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
sys.path.insert(0, os.path.abspath(ROOT))

IMAGE_SIZE = 16
NUM_CLASSES = 4
BATCH_SIZE = 8
OBJECTIVE = "fewshot_2shot_error"
TEMPLATE = {"width": 32, "depth": 2, "mlp_dim": 64, "num_heads": 2,
            "patch_size": 4}
GRID = {"width": [16], "depth": [1], "mlp_dim": [32]}
GRID_BUDGET = 0.02
TARGET_COMPUTE = 0.05
EXPONENTS = {"width": 0.22, "depth": 0.45, "mlp_dim": 0.6}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--directory", required=True)
    parser.add_argument("--project", default="distributed")
    parser.add_argument("--markers", required=True)
    parser.add_argument(
        "--peers", type=int, default=0,
        help="After starting a final trial, wait until this many workers "
        "have.",
    )
    parser.add_argument("--peer-timeout", type=float, default=120.0)
    return parser.parse_args(argv)


def make_data():
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(64) % NUM_CLASSES
    images = rng.uniform(-1, 1, (64, IMAGE_SIZE, IMAGE_SIZE, 3))
    images[..., 0] += 0.5 * labels[:, None, None] - 0.75  # Learnable signal.
    return images.astype("float32"), labels


def make_oracle():
    import keras_tuner

    import keras_sovit as ks

    return ks.tuner.ShapeOracle(
        objective=keras_tuner.Objective(OBJECTIVE, "min"),
        target_compute=TARGET_COMPUTE,
        exponents=EXPONENTS,
        star_center=ks.ShapeSpec.from_dict(TEMPLATE),
        grid=GRID,
        grid_budget=GRID_BUDGET,
        final_trials=("proposal", "control"),
        image_size=IMAGE_SIZE,
        max_retries_per_trial=1,
        seed=0,
    )


def make_hypermodel(images, labels):
    import keras_sovit as ks

    return ks.tuner.SoViTHyperModel(
        num_classes=NUM_CLASSES,
        image_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        fewshot_train=(images[:32], labels[:32]),
        fewshot_test=(images[32:], labels[32:]),
        shots=(2,),
        batch_size=BATCH_SIZE,
        checkpoints=(0.5, 1.0),
    )


def touch(directory, name):
    with open(os.path.join(directory, name), "w"):
        pass


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras_tuner
    import tensorflow as tf

    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    pid = os.getpid()

    class MarkedTuner(keras_tuner.Tuner):
        """Writes progress markers; backs off while the oracle is IDLE."""

        idle_polls = 0

        def pre_create_trial(self):
            # KerasTuner re-asks at once after an IDLE answer; sleep a little
            # so that waiting workers do not spin on the shared CPU.
            if self.idle_polls:
                time.sleep(min(0.05 * self.idle_polls, 0.5))
            self.idle_polls += 1

        def on_trial_begin(self, trial):
            self.idle_polls = 0
            touch(args.markers, f"start-{trial.trial_id}-{tuner_id}-{pid}")
            if trial.hyperparameters.values["phase"] == "final":
                wait_for_peers(args)
            super().on_trial_begin(trial)

        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            touch(
                args.markers,
                f"end-{trial.trial_id}-{tuner_id}-{pid}-{trial.status}",
            )

    images, labels = make_data()
    train = (
        tf.data.Dataset.from_tensor_slices(
            (images, tf.one_hot(labels, NUM_CLASSES))
        )
        .repeat()
        .batch(BATCH_SIZE, drop_remainder=True)
    )
    tuner = MarkedTuner(
        oracle=make_oracle(),
        hypermodel=make_hypermodel(images, labels),
        directory=args.directory,
        project_name=args.project,
        overwrite=False,
    )
    touch(args.markers, f"ready-{tuner_id}-{pid}")
    tuner.search(train, verbose=0)
    touch(args.markers, f"done-{tuner_id}-{pid}")


def wait_for_peers(args):
    """Waits until `--peers` workers have started the final trials."""
    deadline = time.monotonic() + args.peer_timeout
    while time.monotonic() < deadline:
        started = {
            n.split("-")[2] for n in os.listdir(args.markers)
            if n.startswith("start-") and not n.startswith("start-0000-")
        }
        if len(started) >= args.peers:
            return
        time.sleep(0.1)


if __name__ == "__main__":
    main()
