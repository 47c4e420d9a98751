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

TORCH := "torch>=2.4,<=2.14.1" "torchvision>=0.19,<=0.29.1"
# PyTorch's CPU-only wheels: about 0.2 GB of torch instead of the 2.5 GB of CUDA libraries the default index gives Linux.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Is there an NVIDIA GPU? (nvidia-smi, or the driver's /proc entry); on Linux without one, the CPU build is wanted.
NO_GPU := $(shell [ "$$(uname -s)" = Linux ] && ! command -v nvidia-smi >/dev/null 2>&1 && \
                  [ ! -e /proc/driver/nvidia/version ] && echo 1)

# torch/torchvision first, pinned to the releases this project supports: without a GPU from the CPU index when it
# answers within 5 s (else, as offline or behind a PyPI-only proxy, the default index at once); then the package with
# its extras; then OpenCV (see below).
$(STAMP): pyproject.toml | $(PYTHON)
	@if [ -n "$(NO_GPU)" ] && $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" \
	        >/dev/null 2>&1; then \
	    echo "install: no NVIDIA GPU: torch's CPU build from $(TORCH_CPU_INDEX)"; \
	    $(PIP) install -q --timeout 15 --retries 0 --index-url $(TORCH_CPU_INDEX) $(TORCH) || $(PIP) install -q $(TORCH); \
	else \
	    [ -z "$(NO_GPU)" ] || echo "install: no NVIDIA GPU, but $(TORCH_CPU_INDEX) does not answer: the default \
	index's torch (with CUDA libraries; README, Install, says how to get the CPU build)"; \
	    $(PIP) install -q $(TORCH); \
	fi
	$(PIP) install -q -e ".[dev,serve,supervision,sahi]"
	@# SAHI requires opencv-python, the GUI build, which shares the cv2 folder with our headless build: both at one
	@# version, the headless one written last, so that cv2 is the headless build and `pip check` finds no conflict.
	@cv=$$($(PYTHON) -c "from importlib.metadata import version; print(version('opencv-python-headless'))") && \
	    $(PIP) install -q --no-deps "opencv-python==$$cv" && \
	    $(PIP) install -q --no-deps --force-reinstall "opencv-python-headless==$$cv"
	$(PIP) check
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PYTHON) scripts/demo.py

test: install
	$(PYTHON) -m pytest tests -p no:cacheprovider --durations=15 -n 2 --dist loadfile

lint: install
	$(PYTHON) -m ruff check src tests benchmarks

bench: install
	$(PYTHON) benchmarks/latency.py

clean:
	rm -rf $(STAMP) runs build *.egg-info src/*.egg-info

distclean: clean
	rm -rf $(VENV)
