"""dlib ResNet per-face cost: dlib-bin vs our ONNX conversion on ONNX Runtime, on real face chips.

Chips: the central MTCNN face of LFW images (pairs order), aligned as both embedders do it.
Prints one table (ms per face at batch 1 and in batches of 8); writes nothing into the repository.

    python benchmarks/embed_bench.py [--faces 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime

from facegate.detection import MTCNN
from facegate.embedding.alignment import face_chips
from facegate.embedding.dlib_resnet import DlibEmbedder, DlibOnnxEmbedder, DlibResNetEmbedder
from facegate.imaging import load_image_file
from facegate.runtime import RuntimeOptions

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "lfw"


def lfw_chips(count: int) -> np.ndarray:
    """Chips of the first `count` images (in pairs order) that have a detection."""
    detector, chips, seen = MTCNN(), [], set()
    for line in (LFW / "pairs_folds1-2.txt").read_text().splitlines()[1:]:
        name, number = line.split()[:2]
        key = f"{name}/{name}_{int(number):04d}.jpg"
        if key in seen:
            continue
        seen.add(key)
        image = load_image_file(LFW / "lfw-deepfunneled" / key)
        faces = detector.detect(image)
        if faces:
            chips.append(face_chips(image, faces[:1])[0])
        if len(chips) == count:
            break
    return np.stack(chips)


def ms_per_face(
    embedder: DlibResNetEmbedder, chips: np.ndarray, batch: int, repeats: int
) -> tuple[float, float]:
    """Median wall and CPU milliseconds per face over `repeats` runs, `chips` fed in batches of `batch`.

    CPU time is reported too because on a shared machine it is far steadier than wall time; for
    single-threaded engines it is what the wall time would be on an idle machine.
    """
    embedder.descriptors(chips[:batch])  # warm-up (ONNX Runtime allocates on the first run)
    wall, cpu = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        for start in range(0, len(chips), batch):
            embedder.descriptors(chips[start : start + batch])
        wall.append((time.perf_counter() - started) / len(chips) * 1000)
        cpu.append((time.process_time() - started_cpu) / len(chips) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    chips = lfw_chips(args.faces)
    cache = Path(tempfile.gettempdir()) / "facegate-bench-models"
    engines: dict[str, Callable[[], DlibResNetEmbedder]] = {
        "dlib-bin (dlib's runtime)": DlibEmbedder,
        "ONNX Runtime, default threads": lambda: DlibOnnxEmbedder(
            cache, runtime=RuntimeOptions(("CPUExecutionProvider",))
        ),
        "ONNX Runtime, 1 thread": lambda: DlibOnnxEmbedder(
            cache, runtime=RuntimeOptions(("CPUExecutionProvider",), threads=1)
        ),
    }
    print(
        f"{len(chips)} LFW chips 150×150; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__}, load average before: "
        + " ".join(f"{value:.2f}" for value in os.getloadavg())
    )
    print(
        "\n| engine | batch 1: wall ms/face (CPU ms) | batch 8: wall ms/face (CPU ms) "
        "| wall speed-up vs dlib, 1 / 8 |"
    )
    print("|---|---|---|---|")
    reference: tuple[float, float] | None = None
    for label, make in engines.items():
        embedder = make()
        (single, single_cpu), (eight, eight_cpu) = (
            ms_per_face(embedder, chips, b, args.repeats) for b in (1, 8)
        )
        reference = reference or (single, eight)
        print(
            f"| {label} | {single:.1f} ({single_cpu:.1f}) | {eight:.1f} ({eight_cpu:.1f}) "
            f"| {reference[0] / single:.1f}× / {reference[1] / eight:.1f}× |"
        )
    print("\nload average after: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))
    print("With mirror averaging (the default) each face costs two chips, run in the same batch.")


if __name__ == "__main__":
    main()
