"""MTCNN detection latency: ours (ONNX Runtime) against the reference (ipazc/mtcnn on TensorFlow),
and where our time goes.

    python benchmarks/detect_bench.py [--repeat 20] [--threads 0] [--photos]

Per-image latency, warm, one image at a time, at 640x480, 1280x720 and 1920x1080 (group photos
letterboxed to those sizes) and, with --photos, over the shared photo set (portraits, groups,
no-face images) at their own sizes. The reference runs on the same images in the same process
when the optional extra `reference` (mtcnn[tensorflow]) is installed; without it, the photo set
is compared with the reference's recorded wall times in mtcnn_tf.json (measured on another
2-core machine, so the ratio is indicative only).

Then the split, on the three benchmark photos (a group at 1280x886, a 512x512 portrait, the
320x240 small-face portrait; the issues' held-out sizes): one lane's CPU time per detection
divided among the pyramid, each network, NMS, RNet's and ONet's crops, and the overhead (the
rest: proposals, box arithmetic, Python), with the reference's time and ratio when it is
installed. Prints tables; writes nothing.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import platform
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

from facegate.detection import MTCNN, cascade
from facegate.imaging import load_image_file
from facegate.runtime import RuntimeOptions

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FACES = SHARED / "faces"
REFERENCE_JSON = SHARED / "reference" / "mtcnn_tf.json"
SIZES = ((640, 480), (1280, 720), (1920, 1080))

Detect = Callable[[np.ndarray], object]
NETWORKS = ("pnet", "rnet", "onet")
SPLIT = ("pyramid", "pnet", "rnet", "onet", "nms", "crops")


def letterboxed(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo scaled to fit `size` and centred on black bars, as a camera frame would be."""
    return np.asarray(ImageOps.pad(Image.fromarray(image), size, Image.Resampling.BILINEAR, color=0))


def photo_set() -> list[str]:
    with (FACES / "MANIFEST.csv").open(newline="") as manifest:
        return [
            row["path"] for row in csv.DictReader(manifest) if row["kind"] in ("portrait", "group", "noface")
        ]


def timings(detect: Detect, images: list[np.ndarray], repeat: int) -> list[float]:
    """Seconds per call, `repeat` rounds over the images after one warm-up call each."""
    for image in images:
        detect(image)
    result = []
    for _ in range(repeat):
        for image in images:
            start = time.perf_counter()
            detect(image)
            result.append(time.perf_counter() - start)
    return result


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def photos() -> dict[str, np.ndarray]:
    """The three benchmark photos, shared photos at the sizes of the issues' held-out set."""
    group = Image.fromarray(load_image_file(FACES / "groups/deepface_couple.jpg"))
    portrait = Image.fromarray(load_image_file(FACES / "portraits/Angelina_Jolie/deepface_img2.jpg"))
    return {
        "group 1280x886": np.asarray(group.resize((1280, 886), Image.Resampling.BILINEAR)),
        "portrait 512x512": np.asarray(ImageOps.fit(portrait, (512, 512), Image.Resampling.BILINEAR)),
        "small face 320x240": load_image_file(FACES / "portraits/Barack_Obama/fr_obama_small.jpg"),
    }


def cpu_line() -> str:
    """The CPU model, its vector extensions that matter to ONNX Runtime, and onnxruntime's version."""
    flags: set[str] = set()
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    features = ", ".join(
        f"{flag} {'yes' if flag in flags else 'no'}"
        for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni")
    )
    return f"{model}; {os.cpu_count()} cpus; {features}; onnxruntime {ort.__version__}"


class _TimedSession:
    """A session stand-in that runs the real one and adds its thread CPU time to a stage."""

    def __init__(self, session: Any, stage: str, seconds: Counter[str]) -> None:
        self._session, self._stage, self._seconds = session, stage, seconds

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        start = time.thread_time()
        try:
            return self._session.run(outputs, feeds)
        finally:
            self._seconds[self._stage] += time.thread_time() - start


@contextmanager
def stage_clock(detector: MTCNN) -> Iterator[Counter[str]]:
    """Thread CPU seconds per stage (SPLIT) of the detections run inside, by the networks'
    sessions and the cascade's pyramid, NMS and crops patched with timers (restored on exit).
    Thread time, not wall: steadier on a shared machine, and exact for a one-lane detector."""
    seconds: Counter[str] = Counter()
    lock = threading.Lock()

    def timed(stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                with lock:
                    seconds[stage] += time.thread_time() - start

        return run

    patched: list[tuple[object, str, Any]] = [
        (cascade.AreaPyramid, "__init__", timed("pyramid", cascade.AreaPyramid.__init__)),
        (cascade.AreaPyramid, "level", timed("pyramid", cascade.AreaPyramid.level)),
        (cascade, "nms", timed("nms", cascade.nms)),
        (cascade, "crop_patches", timed("crops", cascade.crop_patches)),
    ]
    patched += [
        (detector, f"_{name}", _TimedSession(getattr(detector, f"_{name}"), name, seconds))
        for name in NETWORKS
    ]
    originals = [(target, name, getattr(target, name)) for target, name, _ in patched]
    for target, name, replacement in patched:
        setattr(target, name, replacement)
    try:
        yield seconds
    finally:
        for target, name, original in originals:
            setattr(target, name, original)


def print_split(images: dict[str, np.ndarray], repeat: int, reference: Detect | None) -> None:
    """One lane's CPU ms per detection of each image, split by stage, and the reference's time."""
    detector = MTCNN(RuntimeOptions(threads=1))
    print("\nsplit (one lane, CPU ms per detection, median of the rounds; share of the total):")
    print(f"| photo | total | {' | '.join(SPLIT)} | overhead | ref p50 ms | ratio (wall p50) |")
    print(f"|---|---|{'---|' * len(SPLIT)}---|---|---|")
    for label, image in images.items():
        detector.detect(image)
        rounds: list[dict[str, float]] = []
        with stage_clock(detector) as seconds:
            for _ in range(repeat):
                seconds.clear()
                start = time.thread_time()
                detector.detect(image)
                rounds.append({"total": time.thread_time() - start, **seconds})
        ms = {key: statistics.median(r.get(key, 0.0) for r in rounds) * 1000 for key in ("total", *SPLIT)}
        overhead = ms["total"] - sum(ms[stage] for stage in SPLIT)
        cells = " | ".join(
            f"{value:.1f} ({value / ms['total']:.0%})" for value in [*(ms[s] for s in SPLIT), overhead]
        )
        if reference is None:
            ref = "n/a | n/a"
        else:
            ours = percentile(timings(detector.detect, [image], repeat), 50)
            theirs = percentile(timings(reference, [image], max(3, repeat // 4)), 50)
            ref = f"{theirs * 1000:.0f} | {theirs / ours:.1f}x"
        print(f"| {label} | {ms['total']:.1f} | {cells} | {ref} |")


def reference_detector() -> Detect | None:
    """The TensorFlow reference when the `reference` extra is installed, else None."""
    if importlib.util.find_spec("tensorflow") is None:
        return None
    from mtcnn import MTCNN as ReferenceMTCNN  # imports TensorFlow

    reference = ReferenceMTCNN()
    return lambda image: reference.detect_faces(image)


def recorded_reference_seconds() -> dict[str, float]:
    data = json.loads(REFERENCE_JSON.read_text())
    return {
        entry["path"]: entry["seconds"]["default"]
        for entry in data["images"]
        if "default" in entry["seconds"]
    }


def row(name: str, ours: list[float], reference: list[float] | None, note: str = "") -> str:
    ours_p50, ours_p95 = percentile(ours, 50) * 1000, percentile(ours, 95) * 1000
    if reference is None:
        ref_p50, ratio = "n/a", "n/a"
    else:
        ref_p50_ms = percentile(reference, 50) * 1000
        ref_p50, ratio = f"{ref_p50_ms:.0f}", f"{ref_p50_ms / ours_p50:.1f}x"
    cells = f"{len(ours):>5} | {ours_p50:>8.1f} | {ours_p95:>8.1f} | {ref_p50:>8} | {ratio:>7}"
    return f"| {name:<22} | {cells} | {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="rounds over the images at fixed sizes")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    parser.add_argument("--photos", action="store_true", help="also time the shared photo set (slower)")
    args = parser.parse_args()

    detector = MTCNN(RuntimeOptions(threads=args.threads))
    reference = reference_detector()
    groups = [load_image_file(path) for path in sorted((FACES / "groups").iterdir())]

    print(cpu_line())
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if reference is None:
        print("reference: mtcnn[tensorflow] not installed (pip install -e '.[reference]'); live ratio n/a")
    print("| images                 |     n | p50 (ms) | p95 (ms) | ref p50  |   ratio | note")
    print("|------------------------|-------|----------|----------|----------|---------|-----")
    for size in SIZES:
        frames = [letterboxed(image, size) for image in groups]
        ours = timings(detector.detect, frames, args.repeat)
        live = timings(reference, frames, 1) if reference else None
        print(row(f"{size[0]}x{size[1]} groups", ours, live))

    if args.photos:
        paths = photo_set()
        shared = [load_image_file(FACES / path) for path in paths]
        ours = timings(detector.detect, shared, 1)
        if reference is not None:
            print(row("photo set (own sizes)", ours, timings(reference, shared, 1), "live reference"))
        else:
            recorded = recorded_reference_seconds()
            pairs = [(t, recorded[p]) for t, p in zip(ours, paths, strict=True) if p in recorded]
            ratios = [ref / mine for mine, ref in pairs]
            note = (
                f"recorded reference (other machine); per-image ratio median {statistics.median(ratios):.1f}x"
            )
            print(row("photo set (own sizes)", [m for m, _ in pairs], [r for _, r in pairs], note))
    print_split(photos(), args.repeat, reference)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
