# Two commands do everything on a fresh machine: `make demo` and `make test`. Both make the project's own virtual
# environment (.venv, in this folder) first; every other target uses it. BASE_PYTHON makes it.
BASE_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip
STAMP := $(VENV)/.install.stamp

.PHONY: install demo test lint bench bench-quick clean

$(PYTHON):
	$(BASE_PYTHON) -m venv $(VENV)

# torch/torchvision first, pinned to the releases this project supports (pip takes them from the local wheel
# cache where there is one), then the package with its test extras and the server (serve), then SAHI (see below).
$(STAMP): pyproject.toml | $(PYTHON)
	$(PIP) install -q "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
	$(PIP) install -q -e ".[dev,serve]"
	# SAHI for the adapter's tests, without the GUI OpenCV it asks for (it would shadow the headless cv2).
	$(PIP) install -q --no-deps "sahi>=0.12,<0.13" && $(PIP) install -q "shapely>=2"
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PYTHON) scripts/demo.py

test: install
	$(PYTHON) -m pytest tests -p no:cacheprovider --durations=15

lint: install
	$(PYTHON) -m ruff check src tests benchmarks

bench: install
	$(PYTHON) benchmarks/latency.py

clean:
	rm -rf $(STAMP) runs build *.egg-info src/*.egg-info

distclean: clean
	rm -rf $(VENV)
