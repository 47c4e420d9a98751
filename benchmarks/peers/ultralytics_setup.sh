#!/usr/bin/env bash
# Creates .venv-ultralytics/ in the repo root: Ultralytics as a benchmark peer, reusing the system torch.
# Idempotent. Usage: bash benchmarks/peers/ultralytics_setup.sh
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO/.venv-ultralytics"
ULTRALYTICS_SPEC="${ULTRALYTICS_SPEC:-ultralytics}"
# Ultralytics' small dependencies that the system python lacks and that export/predict/info use (thop counts
# FLOPs). torch, torchvision, numpy, opencv, matplotlib, scipy, requests, onnx, onnxruntime, onnxslim, openvino
# and nncf (the --serve OpenVINO and INT8 paths) come from the system site-packages. Left out on purpose, unused
# on this path: polars (results CSV/plots), ultralytics-platform (hub upload), nvidia-ml-py (GPU stats).
SMALL_DEPS=(psutil ultralytics-thop)
# keep Ultralytics' settings file inside the venv, not in ~/.config
export YOLO_CONFIG_DIR="$VENV/work/config" YOLO_OFFLINE=1 YOLO_AUTOINSTALL=0 YOLO_VERBOSE=0

mkdir -p "$REPO/.venv-ultralytics/work/config"
if [[ -x "$VENV/bin/python" ]]; then
    echo "venv exists: $VENV"
else
    # --system-site-packages: reuse the installed torch/torchvision instead of pulling another torch
    python3 -m venv --system-site-packages "$VENV"
    echo "created venv: $VENV"
fi
PY="$VENV/bin/python"
# The project's own .venv (made by `make`) holds torch and the rest: the peer sees its packages through a .pth file
# (after its own), as it sees the system's where the project was installed there.
if [[ -x "$REPO/.venv/bin/python" ]]; then
    base_site="$("$REPO/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    peer_site="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$base_site" > "$peer_site/_yolonas_base_venv.pth"
    echo "peer sees the packages of $REPO/.venv"
fi

if "$PY" -c "import ultralytics" 2>/dev/null; then
    echo "ultralytics already installed: $("$PY" -c 'import ultralytics; print(ultralytics.__version__)')"
else
    # --no-deps everywhere: ultralytics asks for opencv-python and torch, which must not be replaced
    "$PY" -m pip install --quiet --no-deps "$ULTRALYTICS_SPEC"
    echo "installed ultralytics $("$PY" -c 'import ultralytics; print(ultralytics.__version__)')"
fi

missing=()
for dep in "${SMALL_DEPS[@]}"; do
    "$PY" -m pip show --quiet "$dep" >/dev/null 2>&1 || missing+=("$dep")
done
if ((${#missing[@]})); then
    "$PY" -m pip install --quiet --no-deps "${missing[@]}"
    echo "installed small deps: ${missing[*]}"
else
    echo "small deps already present: ${SMALL_DEPS[*]}"
fi

echo "torch in venv: $("$PY" -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__)')"
# Expected in pip check: opencv-python (cv2 comes from opencv-python-headless) and the deps left out above.
echo "pip check (opencv-python, polars, ultralytics-platform, nvidia-ml-py are left out on purpose):"
"$PY" -m pip check 2>/dev/null | sed 's/^/  /' || true
"$PY" -c "import cv2, onnxruntime, onnx, ultralytics; from ultralytics import YOLO" \
    && echo "import check ok: ultralytics $("$PY" -c 'import ultralytics; print(ultralytics.__version__)')"
