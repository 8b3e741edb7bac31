"""Detection's memory: peak RSS per request, ONNX Runtime's arena on/off, RSS under repeated load.

    python benchmarks/memory_bench.py peaks             # one detection per child process
    python benchmarks/memory_bench.py arena [--repeat 12]
    python benchmarks/memory_bench.py load [--requests 60]

`peaks`: each case in a fresh child (under `prlimit --as` 12 GiB, so a runaway case fails alone)
reports its peak RSS (VmHWM) over the warm baseline, RSS after the call and after the release the
API does after each request. `arena`: the same detector with ONNX Runtime's CPU arena on and off,
interleaved, median wall and CPU time per image (CPU time is steadier on a shared machine).
`load`: mixed requests as the API runs them (release after each), RSS every 10 requests; with
`--keep` no release, and MALLOC_ARENA_MAX in the environment is glibc's own. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from facegate.detection import MTCNN, DetectionBudgetError, DetectionParams
from facegate.detection.networks import build_network
from facegate.imaging import load_image_file
from facegate.runtime import release_free_memory

PHOTO = Path(__file__).resolve().parents[2] / "shared/data/faces/groups/fr_two_people.jpg"
CROWD = Path(__file__).resolve().parents[2] / "shared/data/faces/groups/deepface_selfie-many-people.jpg"
ZERO = (0.0, 0.0, 0.0)
DEFAULT = (0.6, 0.7, 0.7)
# (width, height, min_face_size, thresholds)
CASES = {
    "640x480 defaults": (640, 480, 20, DEFAULT),
    "640x480 min_face_size=1": (640, 480, 1, DEFAULT),
    "640x480 min_face_size=2": (640, 480, 2, DEFAULT),
    "2000x2000 thresholds 0": (2000, 2000, 20, ZERO),
    "6000x6000 defaults": (6000, 6000, 20, DEFAULT),
}
MIB = 1 << 20


def resized(path: Path, width: int, height: int) -> np.ndarray:
    source = Image.fromarray(load_image_file(path))
    return np.asarray(source.resize((width, height), Image.Resampling.BILINEAR))


def status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def one_case(name: str) -> None:
    width, height, min_face_size, thresholds = CASES[name]
    image = resized(PHOTO, width, height)
    detector = MTCNN()
    detector.detect(resized(PHOTO, 640, 480))
    Path("/proc/self/clear_refs").write_text("5")
    baseline = status("VmRSS")
    start = time.perf_counter()
    try:
        outcome = f"{len(detector.detect(image, DetectionParams(min_face_size, *thresholds)))} faces"
    except DetectionBudgetError as exc:
        outcome = f"422: {exc}"
    seconds = time.perf_counter() - start
    sizes = {"peak": status("VmHWM"), "after": status("VmRSS")}
    release_free_memory()
    sizes["released"] = status("VmRSS")
    print(json.dumps({**{k: v - baseline for k, v in sizes.items()}, "seconds": seconds, "outcome": outcome}))


def peaks() -> None:
    print("| case | peak over baseline | after | after release | s | outcome |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in CASES:
        command = ["prlimit", f"--as={12 << 30}", "--", sys.executable, __file__, "case", name]
        run = subprocess.run(command, capture_output=True, text=True, check=False)
        if run.returncode:
            print(f"| {name} | failed: {run.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        sizes = " | ".join(f"{r[key] / MIB:.0f} MiB" for key in ("peak", "after", "released"))
        print(f"| {name} | {sizes} | {r['seconds']:.1f} | {r['outcome'][:60]} |")


def with_arena(detector: MTCNN) -> MTCNN:
    """`detector` with sessions like runtime.create_session's but with ONNX Runtime's CPU arena on
    (the private attributes: the product has no switch for it)."""
    for attribute, network in (("_pnet", "pnet"), ("_rnet", "rnet"), ("_onet", "onet")):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(build_network(network), options, ["CPUExecutionProvider"])
        setattr(detector, attribute, session)
    return detector


def arena(repeat: int) -> None:
    variants = {"arena on": with_arena(MTCNN()), "arena off": MTCNN()}
    print("| image | arena on ms (CPU ms) | arena off ms (CPU ms) | off/on wall | off/on CPU |")
    print("| --- | --- | --- | --- | --- |")
    for width, height in ((640, 480), (1920, 1080), (4000, 3000)):
        image = resized(CROWD, width, height)
        wall: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        rounds = repeat if width < 3000 else max(2, repeat // 4)
        for round_ in range(rounds + 1):
            for name, detector in variants.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                detector.detect(image)
                release_free_memory()
                if round_:  # the first round warms up
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
        w = {name: statistics.median(v) * 1000 for name, v in wall.items()}
        c = {name: statistics.median(v) * 1000 for name, v in cpu.items()}
        times = " | ".join(f"{w[name]:.0f} ({c[name]:.0f})" for name in variants)
        ratios = f"{w['arena off'] / w['arena on']:.2f} | {c['arena off'] / c['arena on']:.2f}"
        print(f"| {width}x{height} | {times} | {ratios} |", flush=True)


def load(requests: int, keep: bool) -> None:
    detector = MTCNN()
    images = [resized(CROWD, *size) for size in ((640, 480), (1920, 1080), (4000, 3000), (1280, 720))]
    detector.detect(images[0])
    print(f"baseline RSS {status('VmRSS') / MIB:.0f} MiB")
    for number in range(1, requests + 1):
        detector.detect(images[number % len(images)])
        if not keep:
            release_free_memory()
        if number % 10 == 0:
            rss, peak = status("VmRSS") / MIB, status("VmHWM") / MIB
            print(f"after {number} requests: RSS {rss:.0f} MiB, peak {peak:.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["peaks", "arena", "load", "case"])
    parser.add_argument("case", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=12)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="load: no release after each request")
    args = parser.parse_args()
    if args.mode == "case":
        one_case(args.case)
    elif args.mode == "peaks":
        peaks()
    elif args.mode == "arena":
        arena(args.repeat)
    else:
        load(args.requests, args.keep)


if __name__ == "__main__":
    main()
