"""Distributed shape search: one chief oracle, several KerasTuner workers.

KerasTuner's chief/worker mode runs one `keras_sovit.tuner.ShapeOracle` in
a chief process (a gRPC server) and trials in worker processes, which reach
the oracle only through KerasTuner's client. Every process runs this same
script; the environment tells it its role:

    KERASTUNER_TUNER_ID      "chief" for the oracle, "tuner0", "tuner1", ...
    KERASTUNER_ORACLE_IP     address of the chief (e.g. 127.0.0.1)
    KERASTUNER_ORACLE_PORT   port of the chief

On one machine, `--launch-local N` starts a chief and N workers on loopback
itself and prints the result:

    python examples/distributed_tuning.py --launch-local 2

On a cluster, start the script once per host with the variables above
(all pointing at the chief) and a shared `--output-dir` (a network file
system, or `gs://...` on the TensorFlow backend; under TPUs the tuner
directory must be on GCS). A worker that dies mid-trial keeps its trial
assigned to its `KERASTUNER_TUNER_ID`: restart a worker with the same id and
the chief hands it that trial again. A trial that raises inside a live
worker is retried (`max_retries_per_trial`). Each worker may also use a
`tf.distribute` strategy inside its trials (`--mirrored`).

The search here is small: the paper's exponents (0.22, 0.45, 0.6) are
given, so the star sweep is skipped; a 2 x 2 grid sweep finds the small
compute-optimal shape, and the proposal for `--target-compute` and a
standard ViT of equal compute are trained, spread over the workers.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ENV_VARS = (
    "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--launch-local", type=int, default=0, metavar="N",
        help="Start a chief and N workers on loopback and wait for them.",
    )
    parser.add_argument("--output-dir", default="distributed_tuning_output")
    parser.add_argument("--project-name", default="distributed_search")
    parser.add_argument("--overwrite", action="store_true",
                        help="Chief only: start a new search.")
    parser.add_argument(
        "--backend", choices=("tensorflow", "jax"),
        default=os.environ.get("KERAS_BACKEND", "tensorflow"),
    )
    parser.add_argument("--dataset", default="animal_mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--grid-budget", type=float, default=4.0)
    parser.add_argument("--target-compute", type=float, default=24.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--mirrored", action="store_true",
        help="TensorFlow: train each trial with a MirroredStrategy.",
    )
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="--launch-local: seconds before giving up.")
    return parser.parse_args(argv)


def make_oracle(args):
    import keras_tuner

    import keras_sovit as ks

    return ks.tuner.ShapeOracle(
        objective=keras_tuner.Objective("fewshot_10shot_error", "min"),
        target_compute=args.target_compute,
        exponents={"width": 0.22, "depth": 0.45, "mlp_dim": 0.6},
        star_center=ks.ShapeSpec(64, 4, 256, 4, args.patch_size),
        grid={"width": [32, 48], "depth": [1, 2], "mlp_dim": [128]},
        grid_budget=args.grid_budget,
        final_trials=("proposal", "control"),
        image_size=args.image_size,
        max_retries_per_trial=1,
        seed=0,
    )


def run_process(args):
    """Runs this process's role: the chief serves, a worker trains."""
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import shape_search

    import keras_sovit as ks

    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
    chief = "chief" in tuner_id
    search_args = shape_search.parse_args([
        "--dataset", args.dataset,
        "--image-size", str(args.image_size),
        "--patch-size", str(args.patch_size),
        "--batch-size", str(args.batch_size),
        "--backend", args.backend,
    ] + (["--data-dir", args.data_dir] if args.data_dir else []))
    data = shape_search._load_data(search_args)
    strategy = None
    if args.mirrored and not chief:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    hypermodel = ks.tuner.SoViTHyperModel(
        num_classes=data["num_classes"],
        image_shape=(args.image_size, args.image_size, 3),
        fewshot_train=data["fewshot_train"],
        fewshot_test=data["fewshot_test"],
        batch_size=args.batch_size,
        checkpoints=(0.5, 1.0),
        compile_kwargs={"base_lr": 3e-3},
        fewshot_kwargs={"batch_size": 1024},
    )
    plan = {"grid": (4, 4 * args.grid_budget),
            "final": (2, 2 * args.target_compute)}
    tuner = shape_search._tuner_class()(
        plan,
        data["test"],
        oracle=make_oracle(args),
        hypermodel=hypermodel,
        directory=args.output_dir,
        project_name=args.project_name,
        overwrite=args.overwrite and chief,
        distribution_strategy=strategy,
    )
    print(f"[{tuner_id}] ready (pid {os.getpid()})", flush=True)
    tuner.search(data["train"], verbose=0)
    print(f"[{tuner_id}] done", flush=True)
    if chief:
        report = os.path.join(tuner.project_dir, "shape_report.json")
        print(f"[chief] proposal: {tuner.oracle.proposal}")
        print(f"[chief] report: {report}")


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_local(args, argv):
    """Starts a chief and `args.launch_local` workers; waits; cleans up."""
    if args.launch_local < 1:
        raise ValueError(
            "`--launch-local` needs at least one worker. Received: "
            f"--launch-local={args.launch_local}"
        )
    port = _free_port()
    child_argv = [a for a in argv if not a.startswith("--launch-local")]
    if "--launch-local" in argv:  # The "--launch-local N" form.
        index = argv.index("--launch-local")
        child_argv = argv[:index] + argv[index + 2:]
    command = [sys.executable, os.path.abspath(__file__), *child_argv]
    ids = ["chief"] + [f"tuner{i}" for i in range(args.launch_local)]
    processes = {}
    try:
        for tuner_id in ids:
            env = dict(os.environ, KERASTUNER_TUNER_ID=tuner_id,
                       KERASTUNER_ORACLE_IP="127.0.0.1",
                       KERASTUNER_ORACLE_PORT=str(port))
            processes[tuner_id] = subprocess.Popen(command, env=env)
            if tuner_id == "chief":
                time.sleep(2.0)  # Let the chief create the project first.
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            if all(p.poll() is not None for p in processes.values()):
                break
            time.sleep(1.0)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    codes = {k: p.returncode for k, p in processes.items()}
    print(f"[launch-local] exit codes: {codes}")
    report = os.path.join(args.output_dir, args.project_name,
                          "shape_report.json")
    if os.path.exists(report):
        with open(report) as f:
            summary = json.load(f)
        print(f"[launch-local] proposal for {args.target_compute:g} GFLOPs: "
              f"{summary['proposal']}")
        for trial_id, final in sorted(summary["final_results"].items()):
            print(f"[launch-local] final trial {trial_id}: {final['shape']} "
                  f"10-shot error {final['score']:.3f}")
    return all(code == 0 for code in codes.values())


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.launch_local:
        return launch_local(args, argv)
    missing = [v for v in ENV_VARS if v not in os.environ]
    if missing:
        print(f"Not in a cluster ({', '.join(missing)} unset): running the "
              "search in this process. Use --launch-local N for a local "
              "chief and N workers.")
    run_process(args)
    return True


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
