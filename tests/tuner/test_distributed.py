"""ShapeOracle + SoViTHyperModel under distribution.

- `tf.distribute.MirroredStrategy` over 2 logical CPUs through the tuner's
  `distribution_strategy` argument (TensorFlow).
- `keras.distribution.DataParallel` over 2 host devices (JAX).
- KerasTuner's chief/worker mode on loopback: a chief and 2 worker
  processes, and a worker killed mid-trial whose trial is run again by a
  replacement worker with the same `KERASTUNER_TUNER_ID`.

Every search is the tiny configuration of `tests/tuner/distributed_worker.py`:
one grid-sweep trial (`0000`), then the two final trials (`0001`, `0002`:
proposal and standard-shaped control).
"""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import keras_tuner
import numpy as np
import pytest

import keras_sovit
from tests.tuner import distributed_worker as config

WORKER_SCRIPT = os.path.abspath(config.__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(WORKER_SCRIPT)))
IMAGE_SHAPE = (config.IMAGE_SIZE, config.IMAGE_SIZE, 3)
PROCESS_TIMEOUT = 240.0


class _Recorder(keras.callbacks.Callback):
    """Records how each trial's model is distributed.

    KerasTuner deep-copies callbacks, so the records live on the class.
    """

    records = []

    def on_train_begin(self, logs=None):
        variable = self.model.trainable_variables[0]
        record = {"name": variable.path}
        if keras.backend.backend() == "tensorflow":
            strategy = self.model.distribute_strategy
            record["replicas"] = strategy.num_replicas_in_sync
            record["copies"] = len(variable.value.values)
        else:
            record["devices"] = len(variable.value.sharding.device_set)
            distribution = keras.distribution.distribution()
            record["mesh"] = (
                None if distribution is None
                else tuple(distribution.device_mesh.shape)
            )
        _Recorder.records.append(record)


def _train_dataset(images, labels):
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices(
            (images, np.eye(config.NUM_CLASSES, dtype="float32")[labels])
        )
        .repeat()
        .batch(config.BATCH_SIZE, drop_remainder=True)
    )


def _expected_usage(shape, budget):
    """Examples and GFLOPs of a run stopped at the budget (by hand)."""
    per_example = shape.gflops(config.IMAGE_SIZE, pool_type="map")
    steps = math.floor(budget / (per_example * config.BATCH_SIZE) + 1e-9)
    examples = steps * config.BATCH_SIZE
    return examples, examples * per_example


GRID_SHAPE = keras_sovit.ShapeSpec(
    config.GRID["width"][0], config.GRID["depth"][0],
    config.GRID["mlp_dim"][0], config.TEMPLATE["num_heads"],
    config.TEMPLATE["patch_size"],
)
PHASES = {"0000": ("grid", config.GRID_BUDGET),
          "0001": ("final", config.TARGET_COMPUTE),
          "0002": ("final", config.TARGET_COMPUTE)}


def _check_final_trials(oracle):
    trials = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
    assert [t.trial_id for t in trials] == sorted(PHASES)
    assert [t.status for t in trials] == ["COMPLETED"] * 3
    shapes = [keras_sovit.ShapeSpec.from_dict(t.hyperparameters.values)
              for t in trials]
    assert oracle.base_shape_ == GRID_SHAPE
    assert shapes == [GRID_SHAPE, oracle.proposal, oracle.control]
    assert oracle.control.mlp_dim == 4 * oracle.control.width
    for trial, shape in zip(trials, shapes):
        values = trial.hyperparameters.values
        phase, budget = PHASES[trial.trial_id]
        assert values["phase"] == phase
        assert values["compute_gflops"] == budget
        examples, gflops = _expected_usage(shape, budget)
        metrics = trial.metrics
        assert metrics.get_last_value("examples_seen") == examples
        np.testing.assert_allclose(
            metrics.get_last_value("compute_gflops"), gflops, rtol=1e-9
        )
        error = metrics.get_last_value(config.OBJECTIVE)
        # A real value of this trial (not a placeholder), scored as such.
        untrained = metrics.get_last_value("untrained_" + config.OBJECTIVE)
        assert math.isfinite(error) and math.isfinite(untrained)
        assert trial.score == error
    assert oracle.phase == "done"


def _search(tmp_path, **tuner_kwargs):
    images, labels = config.make_data()
    hypermodel = tuner_kwargs.pop("hypermodel", None) or (
        config.make_hypermodel(images, labels)
    )
    oracle = config.make_oracle()
    tuner = keras_tuner.Tuner(
        oracle=oracle,
        hypermodel=hypermodel,
        directory=str(tmp_path),
        project_name="search",
        **tuner_kwargs,
    )
    _Recorder.records = []
    tuner.search(
        _train_dataset(images, labels), callbacks=[_Recorder()], verbose=0
    )
    return oracle


@pytest.mark.tf_only
def test_mirrored_strategy_runs_the_search_on_two_replicas(
    tmp_path, mirrored_strategy
):
    oracle = _search(tmp_path, distribution_strategy=mirrored_strategy)
    _check_final_trials(oracle)
    assert len(_Recorder.records) == 3
    for record in _Recorder.records:
        assert record["replicas"] == 2
        assert record["copies"] == 2  # A MirroredVariable on both CPUs.


@pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="keras.distribution is JAX-only"
)
def test_data_parallel_runs_the_search_on_two_devices(tmp_path):
    import jax

    devices = jax.devices("cpu")[:2]
    assert len(devices) == 2  # Root conftest: 2 host devices.
    distribution = keras.distribution.DataParallel(devices=devices)
    assert tuple(distribution.device_mesh.shape) == (2,)
    previous = keras.distribution.distribution()
    try:
        keras.distribution.set_distribution(distribution)
        # Why the hypermodel re-applies it (its `distribution` argument):
        # the tuner clears the session before every build.
        keras.backend.clear_session()
        assert keras.distribution.distribution() is None
        keras.distribution.set_distribution(distribution)

        images, labels = config.make_data()
        hypermodel = keras_sovit.tuner.SoViTHyperModel(
            distribution=distribution,
            num_classes=config.NUM_CLASSES,
            image_shape=IMAGE_SHAPE,
            fewshot_train=(images[:32], labels[:32]),
            fewshot_test=(images[32:], labels[32:]),
            shots=(2,),
            batch_size=config.BATCH_SIZE,
            checkpoints=(0.5, 1.0),
        )
        oracle = _search(tmp_path, hypermodel=hypermodel)
    finally:
        keras.distribution.set_distribution(previous)
    _check_final_trials(oracle)
    assert len(_Recorder.records) == 3
    for record in _Recorder.records:
        assert record["mesh"] == (2,)
        assert record["devices"] == 2  # Replicated over both devices.


# ----------------------------------------------------------------------
# Chief and workers on loopback.


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Cluster:
    """Starts chief/worker processes of one search; kills them on exit."""

    def __init__(self, tmp_path):
        self.directory = tmp_path / "search"
        self.markers = tmp_path / "markers"
        self.logs = tmp_path / "logs"
        for path in (self.directory, self.markers, self.logs):
            path.mkdir()
        self.port = _free_port()
        self.processes = {}
        self.deadline = time.monotonic() + PROCESS_TIMEOUT

    def start(self, tuner_id, peers=0):
        env = dict(os.environ)
        env.update(
            KERAS_BACKEND="tensorflow",
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=str(self.port),
            PYTHONPATH=ROOT,
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        name = f"{tuner_id}-{len(self.processes)}"
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen(
            [sys.executable, WORKER_SCRIPT, "--directory",
             str(self.directory), "--markers", str(self.markers),
             "--peers", str(peers)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes[name] = process
        return process

    def names(self, prefix):
        return sorted(n for n in os.listdir(self.markers)
                      if n.startswith(prefix))

    def wait_for(self, condition, what):
        while time.monotonic() < self.deadline:
            if condition():
                return
            crashed = {n: p.returncode for n, p in self.processes.items()
                       if p.poll() not in (None, 0, -signal.SIGKILL)}
            assert not crashed, f"crashed {crashed}\n{self.log_tails()}"
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n"
                             f"{self.names('')}\n{self.log_tails()}")

    def wait_all(self):
        self.wait_for(
            lambda: all(p.poll() is not None
                        for p in self.processes.values()),
            "every process to exit",
        )

    def kill(self, process):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def close(self):
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=30)

    def log_tails(self):
        out = []
        for path in sorted(self.logs.iterdir()):
            out.append(f"--- {path.name}\n{path.read_text()[-2000:]}")
        return "\n".join(out)

    def project(self):
        return self.directory / "distributed"

    def trial_files(self):
        trials = {}
        for path in sorted(self.project().glob("trial_*/trial.json")):
            trial = json.loads(path.read_text())
            trials[trial["trial_id"]] = trial
        return trials

    def oracle_state(self):
        return json.loads((self.project() / "oracle.json").read_text())


@pytest.fixture
def cluster(tmp_path):
    cluster = _Cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()


def _markers_by_trial(cluster, kind):
    by_trial = {}
    for name in cluster.names(f"{kind}-"):
        parts = name.split("-")
        by_trial.setdefault(parts[1], []).append(parts[2:])
    return by_trial


def _check_finished_project(cluster):
    """Every trial completed, once each, as the chief's files say."""
    trials = cluster.trial_files()
    assert sorted(trials) == sorted(PHASES)
    for trial_id, trial in trials.items():
        assert trial["status"] == "COMPLETED"
        values = trial["hyperparameters"]["values"]
        phase, budget = PHASES[trial_id]
        assert values["phase"] == phase
        assert values["compute_gflops"] == budget
        shape = keras_sovit.ShapeSpec.from_dict(values)
        examples, _ = _expected_usage(shape, budget)
        history = trial["metrics"]["metrics"]["examples_seen"]
        assert history["observations"][-1]["value"] == [examples]
    state = cluster.oracle_state()
    # KerasTuner saves the oracle before it drops the last ended trial from
    # `ongoing_trials`, so a stale entry may remain on disk.
    assert set(state["ongoing_trials"].values()) <= set(trials)
    assert sorted(state["end_order"]) == sorted(trials)
    assert state["run_times"] == {trial_id: 1 for trial_id in trials}
    report = json.loads((cluster.project() / "shape_report.json").read_text())
    assert report["phase"] == "done"
    finals = {tuple(sorted(r["shape"].items()))
              for r in report["final_results"].values()}
    assert finals == {tuple(sorted(report["proposal"].items())),
                      tuple(sorted(report["control"].items()))}
    return trials


@pytest.mark.tf_only
def test_chief_and_two_workers_run_every_trial_once(cluster):
    chief = cluster.start("chief")
    workers = [cluster.start(f"tuner{i}", peers=2) for i in range(2)]
    cluster.wait_all()
    assert chief.returncode == 0, cluster.log_tails()
    assert [w.returncode for w in workers] == [0, 0], cluster.log_tails()

    trials = _check_finished_project(cluster)
    starts = _markers_by_trial(cluster, "start")
    ends = _markers_by_trial(cluster, "end")
    assert sorted(starts) == sorted(ends) == sorted(trials)
    for trial_id in trials:
        assert len(starts[trial_id]) == 1  # Run exactly once.
        assert len(ends[trial_id]) == 1
        assert ends[trial_id][0][-1] == "COMPLETED"
    # Each worker ran one of the two final trials.
    finals = [starts[t][0][0] for t in ("0001", "0002")]
    assert sorted(finals) == ["tuner0", "tuner1"]
    assert len(cluster.names("done-chief")) == 1


@pytest.mark.tf_only
def test_worker_killed_mid_trial_has_its_trial_run_again(cluster):
    cluster.start("chief")
    victim = cluster.start("tuner0", peers=2)
    cluster.start("tuner1", peers=2)
    cluster.wait_for(
        lambda: cluster.names("start-0001-") and cluster.names("start-0002-"),
        "both workers in a final trial",
    )
    victim_start = [n for n in cluster.names("start-000")
                    if "-tuner0-" in n and not n.startswith("start-0000-")]
    assert len(victim_start) == 1
    victim_trial = victim_start[0].split("-")[1]
    assert not cluster.names(f"end-{victim_trial}-")  # Still mid-trial.
    cluster.kill(victim)
    assert victim.returncode == -signal.SIGKILL

    # A replacement with the same KERASTUNER_TUNER_ID gets the dead worker's
    # ongoing trial back from the chief (Oracle.create_trial).
    replacement = cluster.start("tuner0")
    cluster.wait_all()
    assert replacement.returncode == 0, cluster.log_tails()
    for name, process in cluster.processes.items():
        if process is not victim:
            assert process.returncode == 0, (name, cluster.log_tails())

    trials = _check_finished_project(cluster)
    starts = _markers_by_trial(cluster, "start")
    ends = _markers_by_trial(cluster, "end")
    pids = sorted(int(s[1]) for s in starts[victim_trial])
    assert sorted(pids) == sorted([victim.pid, replacement.pid])
    assert ends[victim_trial] == [
        ["tuner0", str(replacement.pid), "COMPLETED"]
    ]
    for trial_id in trials:
        if trial_id != victim_trial:
            assert len(starts[trial_id]) == 1
            assert len(ends[trial_id]) == 1
