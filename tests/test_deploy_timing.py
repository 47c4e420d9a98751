"""deploy.timing: the CPU's instruction sets, sessions under one policy, block timing, and that it is the only one."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from yolonas.deploy import timing
from yolonas.deploy.timing import CpuInfo, Timings, ort_runner, ort_session, parse_cpuinfo, time_blocks
from yolonas.errors import InputError

REPO = Path(__file__).resolve().parents[1]
XEON = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu avx2 avx512f avx512_vnni "
        "avx512_bf16 amx_bf16 amx_tile amx_int8\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")


def test_cpuinfo_names_the_matrix_units_and_what_is_missing():
    name, flags = parse_cpuinfo(XEON)
    xeon = CpuInfo(name, 2, flags)
    assert name == "Intel(R) Xeon(R) Platinum 8480+"  # the first processor's, not the last
    assert (xeon.int8_units, xeon.bf16_units) == ("AMX-INT8", "AMX-BF16")
    assert xeon.missing == []
    epyc = CpuInfo("AMD EPYC", 2, frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}))
    assert (epyc.int8_units, epyc.bf16_units) == ("AVX-512 VNNI", "AVX-512 BF16")
    assert epyc.describe() == "AMD EPYC, 2 cores: AVX-512 VNNI, AVX-512 BF16, AVX-512, AVX2; no AMX-INT8, AMX-BF16"
    old = CpuInfo("old", 4, frozenset({"avx2"}))
    assert old.int8_units is None and old.bf16_units is None
    assert "AVX-VNNI" in old.missing and "AVX-512 VNNI" in old.missing
    assert "unknown" in CpuInfo("M2", 8).describe()


def test_time_blocks_takes_turns_by_whole_blocks_with_an_untimed_run_first():
    calls: list[str] = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    peer_runs: list[int] = []

    def peer(runs: int) -> list[float]:
        peer_runs.append(runs)
        calls.append("peer")
        return [5.0] * runs

    t = time_blocks(fns, blocks=2, runs=3, warmup=1, turns={"peer": peer})
    # warm-up once each, then per block: a's untimed run + 3 timed, b's likewise, then the peer's turn
    assert calls == ["a", "b"] + (["a"] * 4 + ["b"] * 4 + ["peer"]) * 2
    assert peer_runs == [3, 3]
    assert [len(s) for s in t.samples["a"]] == [3, 3] and t.median("peer") == 5.0
    with pytest.raises(InputError):
        time_blocks(fns, blocks=0)


def test_timings_medians_and_ratios_are_over_block_medians():
    t = Timings({"x": [[1, 2, 9], [3, 4, 5]], "y": [[1, 1, 1], [2, 2, 2]]}, runs=3, blocks=2)
    assert t.block_medians("x") == [2, 4] and t.median("x") == 3
    assert t.ratio("x", "y") == 2.0  # both blocks: x is twice y
    assert t.to_dict()["timing_version"] == timing.TIMING_VERSION


def _tiny_onnx(path: Path) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    torch.onnx.export(net, (torch.rand(1, 3, 16, 16),), str(path), input_names=["x"], dynamo=False)
    return path


def test_ort_session_follows_the_thread_policy(tmp_path):
    session = ort_session(_tiny_onnx(tmp_path / "m.onnx"), threads=1)
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    out = ort_runner(session, np.zeros((1, 3, 16, 16), np.float32))()
    assert out[0].shape == (1, 4, 14, 14)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(InputError, match="bad.onnx: not a readable ONNX file"):
        ort_session(bad)


def test_openvino_precision_is_explicit_and_bf16_falls_back_in_one_line(tmp_path, monkeypatch, caplog):
    pytest.importorskip("openvino")
    path = _tiny_onnx(tmp_path / "m.onnx")
    compiled = timing.openvino_compiled(path, threads=1, precision="f32")
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) in ("<Type: 'float32'>", "f32")
    monkeypatch.setattr(timing, "cpu_info", lambda: CpuInfo("old", 2, frozenset({"avx2"})))
    with caplog.at_level(logging.WARNING, logger="yolonas.deploy.timing"):
        assert timing.openvino_precision("bf16") == "f32"
        assert not timing.warn_if_slow_int8()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "no native bf16" in messages[0] and "no VNNI or AMX" in messages[1]
    with pytest.raises(InputError, match="precision 'int4'"):
        timing.openvino_precision("int4")


def test_sessions_are_made_and_latency_timed_only_in_deploy_timing():
    """The one way to time: no other module of the package or the benchmarks builds a runtime session or times
    runs in a loop of its own (the Ultralytics peers run in their own venv and are left out)."""
    sources = [p for p in (REPO / "src" / "yolonas").rglob("*.py") if p.name != "timing.py"]
    sources += [p for p in (REPO / "benchmarks").glob("*.py")]
    offenders = []
    for path in sources:
        text = path.read_text()
        for pattern in (r"InferenceSession\(", r"\.compile_model\(", r"SessionOptions\(", r"allow_spinning"):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(REPO)}: {pattern}")
    assert offenders == []
