"""What runs the network: the `Backend` protocol every runtime meets, and `TorchBackend`, a YoloNAS module as one.

The exported-file runtimes (ONNX Runtime, OpenVINO, TensorRT) are in `yolonas.deploy.backends`; the Predictor
takes any of them through this protocol, and reads nothing of a backend that the protocol does not declare.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from yolonas.errors import InputError
from yolonas.infer.postprocess import NMSConfig
from yolonas.preprocess import Preprocessing


@runtime_checkable
class Backend(Protocol):
    """A detector's network on some runtime.

    Input: a letterboxed batch [B, 3, H, W] in [0, 1] of `input_dtype`, laid out as `memory_format`, on `device`,
    H x W = `preprocessing.image_size`. A raw backend (`has_nms` False) maps it to (boxes [B, N, 4] xyxy in input
    pixels, scores [B, N, C] in 0..1) by `__call__`; NMS is then the Predictor's. A backend with NMS in its graph
    (`has_nms` True) runs `detect(x, nms)` instead: per image an [n, 6] tensor (x1, y1, x2, y2, score, class) in
    input pixels, with the score and IoU thresholds of `nms` applied; `export_nms` holds what was fixed at export
    (top-k, max detections) and the file's default thresholds.
    """

    class_names: list[str]
    preprocessing: Preprocessing
    device: torch.device
    input_dtype: torch.dtype
    memory_format: torch.memory_format
    precision: str  # what the network computes in: fp32, fp16, bf16, int8
    runtime: str  # what runs it: torch, onnxruntime, openvino, tensorrt
    has_nms: bool
    export_nms: NMSConfig | None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def detect(self, x: torch.Tensor, nms: NMSConfig) -> list[torch.Tensor]: ...


def checked_device(device: torch.device | str) -> torch.device:
    """`device` as a torch.device, or an InputError in one line when it is not a device this machine has."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"--device {device}: not a device name ({e}); use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA GPU here (torch.cuda.is_available() is False); "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps"):
        raise InputError(f"--device {device}: use cpu, cuda or cuda:N")
    return dev


class TorchBackend:
    """A YoloNAS module as a `Backend`: forward, then decode, in eval mode.

    On CUDA, `half=True` runs an fp16 copy of the model (weights cast once, not per call as autocast would);
    on CPU it autocasts. `bf16=True` does the same in bfloat16: a bf16 copy on CUDA, autocast on the CPU (where
    oneDNN uses AVX-512 BF16 or AMX if the CPU has them). Boxes and scores come back as float32 either way.
    `compile` wraps forward + decode in `torch.compile` (True, or a mode such as "max-autotune");
    `cuda_graphs` captures forward + decode once per input shape and replays it, which removes the
    per-kernel launch cost that dominates small batches. Both trade a one-off start-up cost (seconds to a
    minute) for speed, so they are off by default.
    """

    has_nms = False
    export_nms = None
    input_dtype = torch.float32
    runtime = "torch"

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", half: bool = False,
                 channels_last: bool = True, compile: bool | str = False, cuda_graphs: bool = False,
                 bf16: bool = False):
        self.device = checked_device(device)
        if cuda_graphs and self.device.type != "cuda":
            raise InputError(f"CUDA graphs need a CUDA device, not {self.device}")
        if half and bf16:
            raise InputError("half (fp16) and bf16 exclude each other: choose one")
        # Channels-last lets oneDNN (CPU) and cuDNN (GPU) pick faster conv kernels: ~20% on this CPU for S.
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.compute_dtype = torch.float16 if half else torch.bfloat16 if bf16 else torch.float32
        self.precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(self.compute_dtype, "fp32")
        self.class_names = list(model.class_names)
        self.preprocessing = model.preprocessing
        self.cast_copy = self.compute_dtype != torch.float32 and self.device.type == "cuda"
        # The fp16/bf16 copy is an inference snapshot: later changes to the model's weights do not reach it.
        self._net = copy.deepcopy(self.model).eval().to(self.compute_dtype) if self.cast_copy else self.model
        self._step = self._forward_decode
        if compile:
            self._step = torch.compile(self._forward_decode, mode=None if compile is True else compile)
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple]] = {}

    def _forward_decode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cast_copy:
            boxes, scores = self._net.decode(self._net(x.to(self.compute_dtype)))
        else:
            # Autocast rather than a cast copy on CPU: the user's model keeps its float weights.
            with torch.autocast(self.device.type, dtype=self.compute_dtype,
                                enabled=self.compute_dtype != torch.float32):
                boxes, scores = self._net.decode(self._net(x))
        return boxes.float(), scores.float()

    def _replay(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(x.shape)
        if key not in self._graphs:
            static_x = x.clone()
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN picks its kernels here
                for _ in range(3):
                    self._step(static_x)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._step(static_x)
            self._graphs[key] = (graph, static_x, static_out)
        graph, static_x, static_out = self._graphs[key]
        static_x.copy_(x)
        graph.replay()
        return tuple(t.clone() for t in static_out)  # the next replay overwrites the static outputs

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = self.model.training
        if was_training:  # predict() in the middle of training must not leave the model in eval mode
            self.model.eval()
        try:
            x = x.to(self.device).contiguous(memory_format=self.memory_format)  # a Predictor may letterbox on CPU
            with torch.inference_mode():
                return self._replay(x) if self.cuda_graphs else self._step(x)
        finally:
            if was_training:
                self.model.train()

    def detect(self, x: torch.Tensor, nms: NMSConfig) -> list[torch.Tensor]:
        """Not a backend with NMS inside: the Predictor runs `postprocess` on what `__call__` returns."""
        raise InputError("a PyTorch model has raw outputs: call it and run postprocess() on them")


@dataclass
class FunctionBackend:
    """A function from a letterboxed batch to (boxes [B, N, 4] in input pixels, scores [B, N, C]) as a raw
    `Backend`: a runtime of your own, or a stand-in in a test."""

    fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    class_names: list[str]
    preprocessing: Preprocessing
    memory_format: torch.memory_format = torch.contiguous_format
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    runtime: str = "custom"
    input_dtype: ClassVar[torch.dtype] = torch.float32
    has_nms: ClassVar[bool] = False
    export_nms: ClassVar[NMSConfig | None] = None

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fn(x)

    def detect(self, x: torch.Tensor, nms: NMSConfig) -> list[torch.Tensor]:
        """Not a backend with NMS inside: the Predictor runs `postprocess` on what `__call__` returns."""
        raise InputError("a FunctionBackend has raw outputs: call it and run postprocess() on them")
