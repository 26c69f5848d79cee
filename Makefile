# Quick start: `make run` (train + evaluate on the embedded synthetic data), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
CONFIG ?= configs/default.py
WORKDIR ?= runs/default

.PHONY: venv run data test test-fast bench clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt pytest pytest-xdist
	# MovieLens-100K ships inside this wheel; its other dependencies (torch...) are not needed.
	$(PY) -m pip install -q --no-deps recbole==1.2.1
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

data: venv
	$(PY) -m cierec_jax.data --config=$(CONFIG)

# Prepares the synthetic data, trains CIERec(MF), evaluates and prints the Table II row.
run: venv
	$(PY) -m cierec_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

# worksteal: an idle worker takes queued tests from the other, so the two end closer
# together (20 s apart against 47 s with the default load balancing; suite 968 against 980 s).
test: venv
	$(PY) -m pytest -q -n 2 --dist worksteal tests

# The inner loop: everything but the tests marked slow, end-to-end runs and whole-model
# compiles (CI runs those too).
test-fast: venv
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow" tests

bench: venv
	$(PY) -m experiments.bench_data
	$(PY) -m experiments.bench_model
	$(PY) -m experiments.bench_train
	$(PY) -m experiments.bench_sparse_update

clean:
	rm -rf $(VENV) runs
