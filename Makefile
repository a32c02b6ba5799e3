# keras_sovit developer entry points. Each target creates .venv on demand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-part1 test-part2 test-tf test-tf-search test-tf-core \
	test-jax test-torch bench install clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

# The main job: search the compute-optimal shape on the bundled dataset.
demo: $(STAMP)
	$(PY) examples/shape_search.py

# The whole suite on TensorFlow plus the backend-sensitive part on JAX and
# on torch, as two balanced processes for the CI machine's two cores (each
# pass is mostly single-threaded Python and small kernels); each part's
# output is printed when it ends. `make test-tf` alone is the whole TF suite.
test: $(STAMP)
	$(MAKE) -j2 --output-sync=target test-part1 test-part2

test-part1: $(STAMP)
	$(MAKE) test-tf-search
	$(MAKE) test-torch

test-part2: $(STAMP)
	$(MAKE) test-tf-core
	$(MAKE) test-jax

test-tf-search: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q tests/tuner tests/guides \
		tests/scaling

test-tf-core: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q tests \
		--ignore=tests/tuner --ignore=tests/guides --ignore=tests/scaling

test-tf: $(STAMP)
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q tests

test-jax: $(STAMP)
	KERAS_BACKEND=jax $(PY) -m pytest -q -m "not tf_only and not backend_free" \
		tests/layers tests/models tests/data tests/training tests/evaluation \
		tests/tuner

# torch trains eagerly in these tests (jit_compile=True would be
# torch.compile, minutes per model on a CPU).
test-torch: $(STAMP)
	KERAS_BACKEND=torch $(PY) -m pytest -q -m "not tf_only and not backend_free" \
		tests/layers tests/models tests/training tests/evaluation \
		tests/checkpoints tests/tuner

bench: $(STAMP)
	$(PY) -m pip install -q keras-hub==0.32.0
	$(PY) benchmarks/throughput.py
	KERAS_BACKEND=jax $(PY) benchmarks/accelerator_throughput.py --tiny
	$(PY) benchmarks/block_ceiling.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/fit_accuracy.py
	$(PY) benchmarks/search_efficiency.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
