"""`yolonas serve` under load on loopback, against the offline end-to-end throughput of the same file.

Offline: decode the JPEG bytes (the server's own decoder) + the Predictor, at batch 1, 2, 4, 8 (deploy.timing's
interleaved blocks); the best batch is the bar. Online: the real CLI server (`python -m yolonas.cli serve`) with
batching on (--max-batch 8 --max-wait-ms 5) and off (--max-batch 1), each at concurrency 1, 4 and 16 from an
async httpx client posting the same JPEG bytes (raw body); throughput, p50/p99 latency and errors per level, each
level bounded by --requests and --seconds. Then a soak at concurrency 16 (batching on) that reads the server's
resident memory after --rss-at requests (500 and 5,000). Writes benchmarks/results/serve_<tag>.{json,md}.

    python benchmarks/serve.py --weights W [--runtime fastest] [--tag epyc_int8]
    python benchmarks/serve.py --weights W --requests 40 --seconds 20 --concurrency 1,4 --rss-at 20,60 \
        --offline-batches 1,2 --blocks 2 --runs 3 --tag smoke          # a quick check that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from _common import REPO, RESULTS, datasets_root, machine
from yolonas.deploy.open import open_predictor
from yolonas.deploy.timing import percentiles, time_blocks
from yolonas.serve.images import decode_image

BATCHING = {"on": ["--max-batch", "8", "--max-wait-ms", "5"], "off": ["--max-batch", "1"]}
MAX_PIXELS = 40_000_000


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="The model file to serve (e.g. an INT8 .xml).")
    p.add_argument("--runtime", default="fastest")
    p.add_argument("--images", default=None, help="JPEG folder (default: coco128's train images).")
    p.add_argument("--n-images", type=int, default=32)
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, default=1000, help="Requests per (batching, concurrency) level, at most.")
    p.add_argument("--seconds", type=float, default=60, help="Seconds per level, at most.")
    p.add_argument("--rss-at", default="500,5000", help="Request counts of the soak at which RSS is read.")
    p.add_argument("--offline-batches", default="1,2,4,8")
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--port", type=int, default=8799)
    p.add_argument("--tag", default=None)
    p.add_argument("--client", choices=("raw", "httpx"), default="raw",
                   help="The load generator: a minimal keep-alive HTTP/1.1 client (raw) or httpx's AsyncClient.")
    return p.parse_args()


def load_images(folder: str | None, n: int) -> list[bytes]:
    root = Path(folder) if folder else datasets_root() / "coco128" / "images" / "train2017"
    paths = sorted(root.glob("*.jpg"))[:n]
    if not paths:
        sys.exit(f"no .jpg images in {root}")
    return [p.read_bytes() for p in paths]


def offline(weights: str, runtime: str, images: list[bytes], batches: list[int], blocks: int, runs: int) -> dict:
    """End to end from bytes (decode + Predictor) at each batch size: ms per batch and images per second."""
    predictor = open_predictor(weights, runtime=runtime, batch=max(batches))
    state = {"i": 0}

    def step(b: int):
        def run():
            start = state["i"]
            state["i"] += b
            chunk = [images[(start + k) % len(images)] for k in range(b)]
            return predictor.predict_arrays([decode_image(data, MAX_PIXELS) for data in chunk])
        return run

    timings = time_blocks({f"batch {b}": step(b) for b in batches}, blocks=blocks, runs=runs)
    rows = {b: {"ms_per_batch": timings.median(f"batch {b}"),
                "images_per_s": b / timings.median(f"batch {b}") * 1e3} for b in batches}
    best = max(rows, key=lambda b: rows[b]["images_per_s"])
    backend = predictor.backend
    return {"runtime": backend.runtime, "precision": backend.precision, "by_batch": rows, "best_batch": best,
            "best_images_per_s": rows[best]["images_per_s"], "batch1_ms": rows[batches[0]]["ms_per_batch"],
            "timing": timings.to_dict()}


class Server:
    """`yolonas serve` in a child process on loopback, until `stop`."""

    def __init__(self, weights: str, runtime: str, port: int, flags: list[str]):
        cmd = [sys.executable, "-m", "yolonas.cli", "serve", "--weights", weights, "--runtime", runtime,
               "--port", str(port), "--max-queue", "1024", *flags]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(cmd, env=env)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"the server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        sys.exit("the server was not ready within 600 s")

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class RawClient:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for the load test only: it posts a raw body and
    reads a Content-Length answer. It costs the shared CPU a fraction of httpx's time per request (both measured:
    the client's cores in the report), so the figures are the server's, not the load generator's."""

    def __init__(self, url: str):
        self.host, port = url.removeprefix("http://").split(":")
        self.port = int(port)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes, content_type: str) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length")
        await reader.readexactly(length)
        return int(lines[0].split()[1])

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()


async def _post(client, path: str, body: bytes) -> int | str:
    """The status code, or the name of the transport error."""
    try:
        if isinstance(client, RawClient):
            return await client.post(path, body, "image/jpeg")
        answer = await client.post(path, content=body, headers={"Content-Type": "image/jpeg"})
        return answer.status_code
    except (httpx.HTTPError, OSError, asyncio.IncompleteReadError) as e:
        if isinstance(client, RawClient):
            await client.close()
            client.streams = None
        return type(e).__name__


async def load(url: str, images: list[bytes], concurrency: int, requests: int, seconds: float,
               client: str = "raw") -> dict:
    """`concurrency` clients posting images back to back until `requests` are sent or `seconds` pass."""
    latencies, errors, sent = [], {}, {"n": 0}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as shared:
        async def worker():
            own = RawClient(url) if client == "raw" else shared
            while sent["n"] < requests and time.monotonic() < deadline:
                data = images[sent["n"] % len(images)]
                sent["n"] += 1
                t0 = time.perf_counter()
                code = await _post(own, "/v1/detect", data)
                if code == 200:
                    latencies.append((time.perf_counter() - t0) * 1e3)
                else:
                    errors[str(code)] = errors.get(str(code), 0) + 1
            if own is not shared:
                await own.close()

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    # The client shares the CPU with the server here: its cores used are part of the story.
    return {"concurrency": concurrency, "requests": sent["n"], "ok": len(latencies), "errors": errors,
            "seconds": wall, "images_per_s": len(latencies) / wall, "client_cores": cpu / wall,
            "latency_ms": percentiles(latencies) if latencies else {}}


def online(args, images: list[bytes], levels: list[int], rss_at: list[int]) -> dict:
    """Each batching mode at each concurrency; the soak (RSS after each of `rss_at` requests) with batching on."""
    out = {}
    for mode, flags in BATCHING.items():
        server = Server(args.weights, args.runtime, args.port, flags)
        try:
            asyncio.run(load(server.url, images, 4, 20, 60, args.client))  # warm-up
            out[mode] = [asyncio.run(load(server.url, images, c, args.requests, args.seconds, args.client))
                         for c in levels]
            if mode == "on":
                out["soak"] = soak(server, images, rss_at, args.client)
        finally:
            server.stop()
    return out


def soak(server: Server, images: list[bytes], rss_at: list[int], client: str) -> dict:
    """Resident memory of the server after each count of `rss_at` requests (concurrency 16, no time bound)."""
    done, rss, errors = 0, {}, 0
    start_rss = server.rss_mb()
    for target in rss_at:
        result = asyncio.run(load(server.url, images, 16, target - done, float("inf"), client))
        done, errors = target, errors + sum(result["errors"].values())
        rss[str(target)] = server.rss_mb()
    first, last = rss[str(rss_at[0])], rss[str(rss_at[-1])]
    return {"rss_mb_at_start": start_rss, "rss_mb": rss, "errors": errors, "growth": last / first - 1}


def summary(off: dict, on: dict) -> dict:
    """The acceptance figures: the server at its top concurrency against the offline best batch, the added p50 at
    concurrency 1, what batching gains, the memory growth."""
    top_on, top_off = on["on"][-1], on["off"][-1]
    one = on["on"][0]
    return {"server_vs_offline": top_on["images_per_s"] / off["best_images_per_s"],
            "concurrency": top_on["concurrency"],
            "c1_p50_added_ms": one["latency_ms"].get("p50", float("nan")) - off["batch1_ms"],
            "batching_gain": top_on["images_per_s"] / top_off["images_per_s"],
            "rss_growth": on["soak"]["growth"]}


def markdown(result: dict) -> str:
    off, s = result["offline"], result["summary"]
    lines = [f"# yolonas serve under load: {Path(result['weights']).name} ({off['runtime']} {off['precision']})", "",
             f"CPU: {result['machine']['cpu']}; loopback, {result.get('client', 'httpx')} async client (its CPU use "
             f"in the last column: it shares this CPU), raw JPEG bodies; "
             f"{result['images']} coco128 images.", "",
             "| offline batch | ms / batch | images / s |", "|---:|---:|---:|"]
    lines += [f"| {b} | {r['ms_per_batch']:.1f} | {r['images_per_s']:.1f} |" for b, r in off["by_batch"].items()]
    lines += ["", "| batching | concurrency | requests | images / s | p50 ms | p99 ms | errors | client's cores |",
              "|---|---:|---:|---:|---:|---:|---|---:|"]
    for mode in BATCHING:
        for r in result["online"][mode]:
            lat = r["latency_ms"]
            lines.append(f"| {mode} | {r['concurrency']} | {r['requests']} | {r['images_per_s']:.1f} | "
                         f"{lat.get('p50', float('nan')):.1f} | {lat.get('p99', float('nan')):.1f} | "
                         f"{r['errors'] or 0} | {r.get('client_cores', float('nan')):.2f} |")
    soak_rss = result["online"]["soak"]["rss_mb"]
    lines += ["", f"- server at concurrency {s['concurrency']} / offline best batch ({off['best_batch']}): "
              f"{s['server_vs_offline']:.2f}x",
              f"- p50 added at concurrency 1 over offline batch 1: {s['c1_p50_added_ms']:+.1f} ms",
              f"- batching on / off at concurrency {s['concurrency']}: {s['batching_gain']:.2f}x",
              "- resident memory: " + ", ".join(f"{v:.0f} MB after {k}" for k, v in soak_rss.items()) +
              f" ({s['rss_growth']:+.1%})", ""]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    images = load_images(args.images, args.n_images)
    levels = [int(c) for c in args.concurrency.split(",")]
    rss_at = sorted(int(n) for n in args.rss_at.split(","))
    batches = [int(b) for b in args.offline_batches.split(",")]
    off = offline(args.weights, args.runtime, images, batches, args.blocks, args.runs)
    print(f"offline: best batch {off['best_batch']}, {off['best_images_per_s']:.1f} images/s", file=sys.stderr)
    on = online(args, images, levels, rss_at)
    result = {"weights": args.weights, "runtime_asked": args.runtime, "images": len(images), "machine": machine(),
              "client": args.client, "offline": off, "online": on, "summary": summary(off, on),
              "settings": {k: v for k, v in vars(args).items() if k != "weights"}}
    tag = args.tag or f"{Path(args.weights).stem}_{off['runtime']}_{off['precision']}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"serve_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"serve_{tag}.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {RESULTS / f'serve_{tag}.json'} and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
