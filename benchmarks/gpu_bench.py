"""The GPU path against the CPU path on one machine: detection and embedding throughput and
latency, and the parity of their outputs. Short and prepared, to fit a few minutes of device time.

    python benchmarks/gpu_bench.py [--providers CUDAExecutionProvider,CPUExecutionProvider]
        [--baseline CPUExecutionProvider] [--batches 1,8,64] [--clients 1,8,32] [--calls 20]
        [--images 4] [--json results.json]

Embedding: the dlib ResNet on ONNX Runtime, `descriptors` of LFW chips in one run of 1/8/64 chips;
then 1/8/32 concurrent clients, each embedding one face as the API does (the chip and its mirror
image), which on CUDA go through the batching across requests (GPU_BATCH_WAIT_MS). Detection:
MTCNN on group photos letterboxed to 1280x720, one image a call, from 1/8/32 concurrent clients.
Clients are threads calling the models in this process, as the API's worker threads do (the HTTP
path is benchmarks/load_test.py). Every measurement runs on `--providers`, then on `--baseline`
for the ratio; parity: the cosine similarity of the two runtimes' embeddings and the largest
difference of their detections' boxes. Prints a table; `--json` also writes the figures.

Smoke test without a GPU: `--providers CPUExecutionProvider --baseline none --batches 1,2
--clients 1,2 --calls 2 --images 1`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime

from detect_bench import FACES, letterboxed
from embed_bench import lfw_chips
from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.embedding.dlib_resnet import DlibOnnxEmbedder
from facegate.faces import Face
from facegate.imaging import load_image_file
from facegate.runtime import RuntimeOptions

FRAME = (1280, 720)
Row = dict[str, object]


def group_frames(count: int) -> list[np.ndarray]:
    paths = sorted((FACES / "groups").glob("*.jpg"))[:count]
    return [letterboxed(load_image_file(path), FRAME) for path in paths]


def latency_row(stage: str, mode: str, size: int, seconds: list[float], items: int, wall: float) -> Row:
    """Median and 95th-percentile milliseconds a call, and items a second over the whole `wall`."""
    return {
        "stage": stage,
        mode: size,
        "median_ms": round(1000 * statistics.median(seconds), 2),
        "p95_ms": round(1000 * float(np.percentile(seconds, 95)), 2),
        "per_s": round(items / wall, 1),
    }


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def batches(embedder: DlibOnnxEmbedder, chips: np.ndarray, sizes: list[int], calls: int) -> list[Row]:
    rows = []
    for size in sizes:
        batch = np.resize(chips, (size, *chips.shape[1:]))  # repeats chips when size > their count
        embedder.descriptors(batch)  # warm-up: allocations, and CUDA's kernels for this shape
        start = time.perf_counter()
        seconds = [timed(partial(embedder.descriptors, batch)) for _ in range(calls)]
        rows.append(latency_row("embed", "batch", size, seconds, size * calls, time.perf_counter() - start))
    return rows


def concurrent(stage: str, work: Sequence[Callable[[], object]], clients: list[int], calls: int) -> list[Row]:
    """`calls` calls per client, the clients at once; `work[i]` is one call's work (round robin)."""
    rows = []
    for count in clients:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda item: item(), work[:count]))  # warm-up, one call per client
            start = time.perf_counter()
            jobs = [work[(client + call) % len(work)] for client in range(count) for call in range(calls)]
            seconds = list(pool.map(timed, jobs))
            wall = time.perf_counter() - start
        rows.append(latency_row(stage, "clients", count, seconds, len(jobs), wall))
    return rows


def measure(
    providers: tuple[str, ...], chips: np.ndarray, frames: list[np.ndarray], args: argparse.Namespace
) -> dict:
    # The batch wait the service would use (GPU_BATCH_WAIT_MS); a CPU session ignores it.
    runtime = RuntimeOptions(providers, 0, Settings(_env_file=None).runtime().batch_wait)
    with tempfile.TemporaryDirectory() as cache, MTCNN(runtime) as detector:
        embedder = DlibOnnxEmbedder(Path(cache), runtime=runtime)
        one_face = [partial(embedder.descriptors, np.stack([chip, chip[:, ::-1]])) for chip in chips]
        detect_calls = [partial(detector.detect, frame) for frame in frames]
        rows = batches(embedder, chips, args.batches, args.calls)
        rows += concurrent("embed", one_face, args.clients, args.calls)
        rows += concurrent("detect", detect_calls, args.clients, args.calls)
        return {
            "providers": {"detector": list(detector.providers), "embedder": list(embedder.providers)},
            "rows": rows,
            "descriptors": embedder.descriptors(chips),
            "faces": [detector.detect(frame) for frame in frames],
        }


def parity(first: dict, second: dict) -> dict[str, float]:
    """The least cosine similarity of the two runs' descriptors and the largest box difference (px)
    between their detections (inf when they found different numbers of faces)."""
    a, b = first["descriptors"], second["descriptors"]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    largest = 0.0
    for ours, theirs in zip(first["faces"], second["faces"], strict=True):
        if len(ours) != len(theirs):
            return {"min_cosine": float(cosine.min()), "max_box_px": float("inf")}
        largest = max([largest, *(box_difference(x, y) for x, y in zip(ours, theirs, strict=True))])
    return {"min_cosine": float(cosine.min()), "max_box_px": largest}


def box_difference(a: Face, b: Face) -> float:
    return float(np.abs(np.subtract(a.box, b.box)).max())


def table(results: dict[str, dict]) -> str:
    """One row per measurement, one column per run; the first run's throughput also as a ratio."""
    names = list(results)
    header = " | ".join(f"{name}: median ms, p95 ms, per s" for name in names)
    lines = [f"| stage | batch / clients | {header} |", "| --- | --- |" + " --- |" * len(names)]
    for index, row in enumerate(results[names[0]]["rows"]):
        size = f"batch {row['batch']}" if "batch" in row else f"{row['clients']} clients"
        runs = [results[name]["rows"][index] for name in names]
        cells = [f"{run['median_ms']}, {run['p95_ms']}, {run['per_s']}" for run in runs]
        if len(runs) == 2:
            cells[0] += f" ({runs[0]['per_s'] / max(runs[1]['per_s'], 1e-9):.1f}x)"
        lines.append(f"| {row['stage']} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", default="CUDAExecutionProvider,CPUExecutionProvider")
    parser.add_argument("--baseline", default="CPUExecutionProvider", help="'none' = no second run")
    parser.add_argument("--batches", default="1,8,64")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--calls", type=int, default=20, help="timed calls per batch size / per client")
    parser.add_argument("--images", type=int, default=4, help="group photos for detection")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.batches = [int(n) for n in args.batches.split(",")]
    args.clients = [int(n) for n in args.clients.split(",")]
    chips, frames = lfw_chips(max(args.clients)), group_frames(args.images)
    runs = {"tested": args.providers} | ({} if args.baseline == "none" else {"baseline": args.baseline})
    results = {label: measure(tuple(run.split(",")), chips, frames, args) for label, run in runs.items()}
    device = onnxruntime.get_device()
    machine = platform.processor() or platform.machine()
    print(f"onnxruntime {onnxruntime.__version__} ({device} build), {machine}, {os.cpu_count()} cores")
    for label, result in results.items():
        print(f"{label}: {result['providers']}")
    print(table(results))
    report: dict[str, object] = {
        label: {"providers": result["providers"], "rows": result["rows"]} for label, result in results.items()
    }
    if len(results) == 2:
        report["parity"] = parity(results["tested"], results["baseline"])
        print("parity:", report["parity"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
