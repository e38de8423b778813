# Two commands for a fresh clone: `make train` (default model, data included) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
CONFIG ?= configs/default.py

.PHONY: venv tensorboard data train test test-all benchmark clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	extra="$$(bash scripts/accelerator.sh)"; if [ -n "$$extra" ]; then \
	  echo "accelerator found: installing $$extra"; $(PY) -m pip install -q "$$extra"; fi
	$(PY) -m pip install -q -e . --no-deps
	touch $@

venv: $(VENV)/.installed

# Optional: TensorBoard, to view runs and sweeps (the version of requirements.txt's comment).
tensorboard: venv
	$(PY) -m pip install -q "$$(sed -n 's/^#   tensorboard==/tensorboard==/p' requirements.txt)"

# Fashion-MNIST: local files if present, else Debian's package where apt works, else TFDS.
data: venv
	bash scripts/get_data.sh $(PY)

train: venv data
	$(PY) train.py --config $(CONFIG) --workdir $(WORKDIR)

test: venv
	$(PY) -m pytest -q tests

# Adds the long statistical tests (marked `slow`).
test-all: venv
	$(PY) -m pytest -q tests --run-slow

benchmark: venv data
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) .pytest_cache
