"""`yolonas serve`: the real CLI on a free port, its API against `yolonas predict`, 200+ bad requests, a full queue,
metrics; and the batcher and settings on their own."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

pytest.importorskip("fastapi")

from serving import KEY, REPO, served, tiny_checkpoint  # noqa: E402
from yolonas.cli import app  # noqa: E402
from yolonas.errors import InputError  # noqa: E402
from yolonas.infer.backend import FunctionBackend  # noqa: E402
from yolonas.infer.postprocess import NMSConfig  # noqa: E402
from yolonas.infer.predictor import Predictor  # noqa: E402
from yolonas.preprocess import Preprocessing  # noqa: E402
from yolonas.serve import ServeConfig, is_loopback  # noqa: E402
from yolonas.serve.batcher import Batcher, QueueFull, RunOptions  # noqa: E402

AUTH = {"X-API-Key": KEY}
CONF = 0.01  # the tiny checkpoint's scores sit just above 0.01


@pytest.fixture(scope="module")
def model(coco128, tmp_path_factory):
    """(checkpoint, its 4 training images, `yolonas predict` entries for the first two at conf 0.01)."""
    folder = tmp_path_factory.mktemp("serve")
    weights, images = tiny_checkpoint(coco128, folder)
    out = folder / "predict.json"
    want = {}
    for image in images[:2]:
        result = CliRunner().invoke(app, ["predict", "--weights", str(weights), "--source", str(image), "--conf",
                                          str(CONF), "--no-save", "--name", str(folder / image.stem), "--json",
                                          str(out)])
        assert result.exit_code == 0, result.output
        want[image] = json.loads(out.read_text())["predictions"][0]
    return weights, images, want


@pytest.fixture(scope="module")
def server(model):
    """The server on a non-loopback bind (every interface), so it requires the API key; small limits."""
    with served(model[0], "--max-mb", "1", "--max-pixels", "2000000", host="0.0.0.0", key=KEY) as url:
        yield url


def _same_boxes(got: dict, want: dict, atol: float = 1e-3, score_atol: float = 1e-5) -> None:
    """The same detections, boxes to `atol` pixels (JSON rounds boxes to 0.01 and scores to 1e-5)."""
    assert (got["width"], got["height"]) == (want["width"], want["height"])
    assert len(got["detections"]) == len(want["detections"]) > 0
    for g, w in zip(got["detections"], want["detections"]):
        assert (g["class_id"], g["class_name"]) == (w["class_id"], w["class_name"])
        np.testing.assert_allclose(g["box"], w["box"], atol=atol)
        assert abs(g["score"] - w["score"]) <= score_atol


def _kept(answer: dict, keep) -> dict:
    """`answer` with only the detections that `keep` accepts."""
    return {**answer, "detections": [d for d in answer["detections"] if keep(d)]}


def _between_scores(answer: dict, k: int) -> float:
    """A threshold between the k-th and the next distinct score of `answer` (scores are rounded to 1e-5 in JSON,
    so one right at a threshold could fall on either side)."""
    scores = sorted({d["score"] for d in answer["detections"]}, reverse=True)
    return (scores[k - 1] + scores[k]) / 2


def _post(url: str, path, headers=AUTH, **params) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(f"{url}/v1/detect", params={"conf": CONF, **params}, headers=headers,
                          files={"file": (path.name, f, "image/jpeg")}, timeout=60)


def test_api_answers_the_boxes_of_yolonas_predict(server, model):
    _, images, want = model
    for image in images[:2]:
        upload = _post(server, image)
        assert upload.status_code == 200, upload.text
        got = upload.json()
        _same_boxes(got, want[image])
        assert got["file"] == image.name and got["batch_size"] >= 1 and got["time_ms"]["total"] > 0
        assert "inference;dur=" in upload.headers["server-timing"]
        raw = httpx.post(f"{server}/v1/detect", params={"conf": CONF}, content=image.read_bytes(),
                         headers={**AUTH, "Content-Type": "image/jpeg"}, timeout=60)
        _same_boxes(raw.json(), want[image])

    image = images[0]
    top = want[image]["detections"][0]
    only = _post(server, image, classes=f"{top['class_name']},{top['class_id']}").json()
    _same_boxes(only, _kept(want[image], lambda d: d["class_id"] == top["class_id"]))
    conf = _between_scores(want[image], 3)
    strict = _post(server, image, conf=conf, max_det=2).json()["detections"]
    assert len(strict) == 2 and all(d["score"] > conf for d in strict)

    coco = _post(server, image, format="coco", image_id=7).json()
    assert len(coco) == len(want[image]["detections"])
    x1, y1, x2, y2 = top["box"]
    assert coco[0]["image_id"] == 7 and coco[0]["category_id"] == top["class_id"] + 1
    np.testing.assert_allclose(coco[0]["bbox"], [x1, y1, x2 - x1, y2 - y1], atol=2e-2)


def test_model_health_page_and_key(server, model):
    checkpoint = torch.load(model[0], map_location="cpu", weights_only=False)
    described = httpx.get(f"{server}/v1/model", headers=AUTH).json()
    assert described["classes"] == checkpoint["class_names"] and described["input_size"] == {"height": 128,
                                                                                              "width": 128}
    assert described["runtime"] == "torch" and described["precision"] == "fp32" and described["cpu"]
    assert described["weights"] == "best.pt"  # the file's name, never the server's folders
    bearer = httpx.get(f"{server}/v1/model", headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    for path in ("/healthz", "/readyz"):  # the health checks need no key
        assert httpx.get(server + path).status_code == 200
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"] and "/static/app.js" in page.text
    assert httpx.get(server + "/static/app.js").status_code == 200
    assert httpx.get(server + "/openapi.json").json()["paths"]["/v1/detect"]["post"]["requestBody"]


def _png_declaring(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def _encoded(fmt: str, size=(40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, fmt)
    return out.getvalue()


def _bad_requests(jpeg: bytes) -> list[tuple[str, dict, set[int]]]:
    """(what, httpx.request kwargs, the codes it may get): 200+ requests, each wrong in one way."""
    rng = np.random.default_rng(0)
    raw = {**AUTH, "Content-Type": "image/jpeg"}
    cases = []
    for _ in range(40):
        noise = rng.integers(0, 256, int(rng.integers(1, 4000)), dtype=np.uint8).tobytes()
        cases.append(("random bytes", {"content": noise, "headers": raw}, {400}))
    for _ in range(5):
        cases.append(("zero bytes", {"content": b"", "headers": raw}, {400}))
        cases.append(("empty file part", {"files": {"file": ("a.jpg", b"", "image/jpeg")}, "headers": AUTH}, {400}))
    for cut in np.linspace(0.05, 0.995, 20):
        cases.append(("truncated JPEG", {"content": jpeg[:int(len(jpeg) * cut)], "headers": raw}, {400}))
    for side in (50_000, 20_000, 3_000):  # PIL's own limit, then ours (--max-pixels 2,000,000)
        for _ in range(3):
            cases.append((f"PNG declaring {side}x{side}", {"content": _png_declaring(side, side), "headers": raw},
                          {413}))
    for fmt in ("GIF", "ICO", "PPM"):
        cases.append((f"{fmt} image", {"content": _encoded(fmt), "headers": raw}, {415}))
    for kind in ("text/plain", "application/json", "application/xml", "text/html", "application/x-www-form-"
                 "urlencoded"):
        for _ in range(2):
            cases.append((f"Content-Type {kind}", {"content": jpeg, "headers": {**AUTH, "Content-Type": kind}},
                          {415}))
    for _ in range(5):
        cases.append(("multipart without a file", {"data": {"conf": "0.5"}, "files": {"x": (None, "y")},
                                                   "headers": AUTH}, {400}))
        cases.append(("malformed multipart", {"content": b"--nope\r\n\r\n", "headers": {
            **AUTH, "Content-Type": "multipart/form-data; boundary=zzz"}}, {400}))
    big = jpeg * (2 * 1024 * 1024 // len(jpeg) + 1)
    for _ in range(5):
        cases.append(("body over the limit", {"content": big, "headers": raw}, {413}))
        cases.append(("chunked body over the limit", {"content": iter([big[:700_000], big[700_000:1_400_000]]),
                                                      "headers": raw}, {413}))
    queries = [{"conf": -1}, {"conf": 2}, {"conf": "abc"}, {"iou": 0}, {"iou": 1.5}, {"max_det": 0},
               {"max_det": 100000}, {"max_det": "x"}, {"tile": 33}, {"tile": -32}, {"tile": 100000},
               {"overlap": 1}, {"overlap": -0.1}, {"format": "xml"}, {"classes": "999"}, {"classes": "not_a_class"},
               {"classes": "-1"}, {"image_id": -1}, {"tile": 32, "overlap": 0.9}, {"conf": "nan"}]
    for params in queries * 2:
        cases.append((f"query {params}", {"params": params, "content": jpeg, "headers": raw}, {422}))
    for _ in range(10):
        for path, method in (("/v1/detect", "POST"), ("/v1/model", "GET"), ("/metrics", "GET")):
            body = {"content": jpeg, "headers": {"Content-Type": "image/jpeg"}} if method == "POST" else {}
            cases.append((f"{method} {path} without the key", {"method": method, "path": path, **body}, {401}))
            wrong = {"headers": {**body.get("headers", {}), "X-API-Key": "wrong"}}
            cases.append((f"{method} {path} with a wrong key", {"method": method, "path": path, **body, **wrong},
                          {401}))
    cases += [("GET /v1/detect", {"method": "GET", "headers": AUTH}, {405}),
              ("unknown path", {"method": "GET", "path": "/v1/nothing", "headers": AUTH}, {404}),
              ("a path as the image", {"content": b"/etc/passwd", "headers": raw}, {400}),
              ("a URL as the image", {"content": b"http://example.com/a.jpg", "headers": raw}, {400})]
    return cases


def test_every_bad_request_gets_its_json_4xx_and_the_server_keeps_serving(server, model):
    _, images, want = model
    jpeg = images[0].read_bytes()
    cases = _bad_requests(jpeg)
    assert len(cases) >= 200
    with httpx.Client(base_url=server, timeout=60) as client:
        for what, kwargs, codes in cases:
            method, path = kwargs.pop("method", "POST"), kwargs.pop("path", "/v1/detect")
            answer = client.request(method, path, **kwargs)
            assert answer.status_code in codes, (what, answer.status_code, answer.text)
            detail = answer.json()["detail"]
            assert isinstance(detail, str) and detail and "\n" not in detail and "Traceback" not in detail, what
            if answer.status_code == 401:
                assert answer.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{server}/healthz").status_code == 200
    _same_boxes(_post(server, images[0]).json(), want[images[0]])


def _metrics(url: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", headers=AUTH).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_errors_batches_and_queue(server, model):
    image = model[1][0]
    before = _metrics(server)
    assert _post(server, image).status_code == 200
    assert httpx.post(f"{server}/v1/detect", content=b"x", headers={**AUTH, "Content-Type": "text/plain"}
                      ).status_code == 415
    after = _metrics(server)

    def grew(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("yolonas_http_requests_total", route="/v1/detect", code="200") == 1
    assert grew("yolonas_http_requests_total", route="/v1/detect", code="415") == 1
    assert grew("yolonas_http_errors_total", route="/v1/detect", code="415") == 1
    assert grew("yolonas_http_errors_total", route="/v1/detect", code="200") == 0
    assert grew("yolonas_http_request_duration_seconds_count", route="/v1/detect") == 2
    assert grew("yolonas_batch_size_count") == 1 and grew("yolonas_batch_size_sum") == 1
    assert grew("yolonas_inference_duration_seconds_count") == 1
    assert after[("yolonas_queue_depth", ())] == 0


def test_concurrent_requests_with_mixed_options_each_get_their_own_answer(server, model):
    _, images, want = model
    strict = _between_scores(want[images[0]], 10)
    jobs = [(images[i % 2], CONF) for i in range(8)] + [(images[0], strict)] * 4
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda job: _post(server, job[0], conf=job[1]).json(), jobs))
    for (image, conf), got in zip(jobs, answers):
        # In a batch with other images, the last float digits may differ from a lone image's: one rounding step.
        _same_boxes(got, _kept(want[image], lambda d, conf=conf: d["score"] > conf), atol=0.011,
                    score_atol=2e-5)


def test_a_full_queue_answers_503_with_retry_after(model):
    weights, images, _ = model
    with served(weights, "--max-queue", "1", "--max-batch", "1") as url:
        def slow(_):  # 35 tiles of 96 px, each a forward pass at batch 1: long enough for the others to pile up
            with open(images[0], "rb") as f:
                return httpx.post(f"{url}/v1/detect", params={"tile": 96, "overlap": 0}, timeout=120,
                                  files={"file": ("a.jpg", f, "image/jpeg")})
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(slow, range(8)))
        codes = sorted(a.status_code for a in answers)
        assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
        for busy in (a for a in answers if a.status_code == 503):
            assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]
        assert _post(url, images[0], headers={}).status_code == 200  # and it serves again


def test_a_non_loopback_host_needs_a_key(tmp_path):
    """Refused in one line, before the model is even opened (the weights file does not exist)."""
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "yolonas.cli", "serve", "--weights", str(tmp_path / "w.pt"), "--host", "0.0.0.0"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "--api-key" in done.stderr


def test_settings_are_checked():
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("example.com")
    ServeConfig("w.pt", host="0.0.0.0", api_key="k").check()
    ServeConfig("w.pt", host="0.0.0.0", insecure=True).check()
    for bad in (dict(host="0.0.0.0"), dict(max_batch=0), dict(max_queue=0), dict(max_pixels=10**12),
                dict(api_key=" "), dict(timeout_s=0)):
        with pytest.raises(InputError):
            ServeConfig("w.pt", **bad).check()


# ---------------------------------------------------------------------------------------------- the batcher


def _gated_predictor(gate: threading.Event, calls: list[int]) -> Predictor:
    """A Predictor whose network waits at `gate` on its first call and records each batch size."""
    def network(x: torch.Tensor):
        calls.append(len(x))
        if len(calls) == 1:
            gate.wait(30)
        n = len(x)
        boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0]]).expand(n, 1, 4)
        return boxes, torch.tensor([0.9, 0.05]).expand(n, 1, 2)
    return Predictor(FunctionBackend(network, ["a", "b"], Preprocessing(image_size=(32, 32))), batch_size=8)


def test_the_worker_batches_what_waits_one_option_set_per_batch():
    gate, calls, batches = threading.Event(), [], []
    batcher = Batcher(lambda: _gated_predictor(gate, calls), max_batch=8, max_wait_ms=0, max_queue=6,
                      on_batch=lambda n, s: batches.append(n))
    batcher.start()
    try:
        image = np.zeros((32, 32, 3), np.uint8)
        loose, strict = RunOptions(NMSConfig(score_threshold=0.1)), RunOptions(NMSConfig(score_threshold=0.95))
        first = batcher.submit(image, loose, 30)
        while batcher.depth:  # the worker has taken the first image and waits at the gate
            time.sleep(0.01)
        futures = [batcher.submit(image, loose if i % 2 else strict, 30) for i in range(6)]
        with pytest.raises(QueueFull):
            batcher.submit(image, loose, 30)
        gate.set()
        done = [f.result(30) for f in [first, *futures]]
    finally:
        batcher.stop()
    assert batches == [1, 3, 3] and calls == [1, 3, 3]  # six waiting images, two option sets: two batches
    assert [len(d.detections) for d in done] == [1] + [0 if i % 2 == 0 else 1 for i in range(6)]
    assert done[1].batch_size == 3 and done[0].detections.class_names == ["a", "b"]


def test_a_lone_image_is_not_held_back_waiting_for_itself():
    gate, calls = threading.Event(), []
    gate.set()
    batcher = Batcher(lambda: _gated_predictor(gate, calls), max_batch=8, max_wait_ms=60_000, max_queue=6)
    batcher.start()
    try:
        image = np.zeros((32, 32, 3), np.uint8)
        with batcher.incoming() as ticket:  # as a handler does: decode, then submit inside the context
            future = batcher.submit(image, RunOptions(NMSConfig()), 30, ticket=ticket)
            done = future.result(20)  # with the handler still inside: waiting for "incoming" images would hang
        with batcher.incoming() as other, batcher.incoming() as ticket:  # another image still being decoded
            future = batcher.submit(image, RunOptions(NMSConfig()), 30, ticket=ticket)
            time.sleep(0.2)
            assert not future.done()  # the worker waits for the image on its way (max_wait 60 s)
        assert not other.submitted and future.result(20).batch_size == 1  # that one was dropped: no wait left
    finally:
        batcher.stop()
    assert done.batch_size == 1 and calls == [1, 1]


def test_a_model_that_fails_to_open_fails_start():
    def broken() -> Predictor:
        raise InputError("w.pt: no such file")
    with pytest.raises(InputError, match="no such file"):
        Batcher(broken).start()
