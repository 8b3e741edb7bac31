"""Two (or more) versions of the detector, interleaved on one machine: the A/B that BENCHMARKS quotes.

    git worktree add /tmp/before <commit>
    python benchmarks/detect_ab.py before=/tmp/before/src after=src [--rounds 12] [--calls 5] [--threads 0]
        [--reference /path/to/venv/bin/python]

Each version runs in its own process (its `src` first on PYTHONPATH, so both import `facegate`);
the rounds alternate between them, in turn order reversed every round, so that a shared machine's
drift hits them alike. Per benchmark photo (detect_bench.photos) and version: the median over the
rounds of each round's median wall ms and CPU ms (the process's, all lanes) per detection, minor
page faults per detection, and the ratio of the first version's time to each version's; then
whether every version found the same faces (the largest difference of a box or score). With
`--reference PYTHON` (a Python with the `reference` extra, mtcnn[tensorflow], installed: keep it in
its own virtualenv), the original TensorFlow MTCNN runs as one more version, in its own process,
and each version's speed-up over it is printed too. It runs its rounds alone, after ours have ended
and their processes are gone: interleaved with it (a process of 1 GB that fills the caches with
TensorFlow's), our versions took 15-30 % more CPU and wall time per detection than with it absent,
the same versions in the same minute (BENCHMARKS.md). Each of our detections is followed by the
memory release the API does after a request. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detect_bench import cpu_line, photos

REFERENCE = "reference"


def our_detector(threads: int) -> Callable[[np.ndarray], list[tuple[list[float], float]]]:
    """Our MTCNN as the API runs it: each detection followed by the release of free memory."""
    from facegate.detection import MTCNN
    from facegate.runtime import RuntimeOptions, release_free_memory

    detector = MTCNN(RuntimeOptions(threads=threads))

    def detect(image: np.ndarray) -> list[tuple[list[float], float]]:
        faces = detector.detect(image)
        release_free_memory()
        return [(list(face.box), face.score) for face in faces]

    return detect


def reference_detector() -> Callable[[np.ndarray], list[tuple[list[float], float]]]:
    """The original TensorFlow MTCNN (ipazc/mtcnn 1.0.0), boxes as (x1, y1, x2, y2) like ours."""
    from mtcnn import MTCNN as ReferenceMTCNN  # imports TensorFlow

    reference = ReferenceMTCNN()

    def detect(image: np.ndarray) -> list[tuple[list[float], float]]:
        faces = reference.detect_faces(image)
        return [([x, y, x + w, y + h], face["confidence"]) for face in faces for x, y, w, h in [face["box"]]]

    return detect


def worker(threads: int, reference: bool) -> None:
    """Detect on request: reads `label calls` lines, answers one JSON line each."""
    images = photos()
    detect = reference_detector() if reference else our_detector(threads)
    for image in images.values():
        detect(image)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        label, calls = line.rstrip("\n").rsplit(" ", 1)
        wall, cpu = [], []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(int(calls)):
            start, start_cpu = time.perf_counter(), time.process_time()
            faces = detect(images[label])
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        answer = {
            "wall": statistics.median(wall),
            "cpu": statistics.median(cpu),
            "faults": faults / int(calls),
            "faces": [[*box, score] for box, score in faces],
        }
        print(json.dumps(answer), flush=True)


def start(source: str, threads: int, python: str = sys.executable) -> subprocess.Popen[str]:
    """A worker process running the version in `source` (or the reference, with its own Python)."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(source).resolve()), str(Path(__file__).parent)]),
    }
    command = [python, __file__, "--worker", "--threads", str(threads)]
    if source == REFERENCE:
        command.append("--reference-worker")
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment
    )
    assert process.stdout is not None
    json.loads(process.stdout.readline())  # warm
    return process


@dataclass(frozen=True)
class Answer:
    wall: float
    cpu: float
    faults: float
    faces: list[list[float]]


def ask(process: subprocess.Popen[str], label: str, calls: int) -> Answer:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(f"{label} {calls}\n")
    process.stdin.flush()
    return Answer(**json.loads(process.stdout.readline()))


def largest_difference(faces: list[list[list[float]]]) -> float:
    """The largest difference of a box coordinate or score from the first version's faces."""
    first = faces[0]
    return max(
        (
            abs(a - b)
            for other in faces[1:]
            for x, y in zip(other, first, strict=False)
            for a, b in zip(x, y, strict=True)
        ),
        default=0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="*", help="name=path/to/src, the first one the baseline")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=5, help="detections per photo and round (median taken)")
    parser.add_argument("--threads", type=int, default=0, help="MTCNN lanes (0 = every core, the default)")
    parser.add_argument("--reference", metavar="PYTHON", help="a Python with mtcnn[tensorflow] installed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--reference-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.threads, args.reference_worker)
        return
    sources = dict(version.split("=", 1) for version in args.versions)
    print(cpu_line())
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    labels = list(photos())
    answers = run_rounds(
        {name: start(source, args.threads) for name, source in sources.items()}, labels, args
    )
    if args.reference:
        answers |= run_rounds({REFERENCE: start(REFERENCE, args.threads, args.reference)}, labels, args)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    names = list(sources) + ([REFERENCE] if args.reference else [])
    columns = (
        "photo | version | wall ms | CPU ms | page faults | first / this (wall, CPU) | ref. / this (wall)"
    )
    print(f"| {columns} |")
    print("|---|---|---|---|---|---|---|")
    for label in labels:
        medians = {
            name: [
                statistics.median(getattr(a, key) for a in answers[(name, label)]) for key in ("wall", "cpu")
            ]
            for name in names
        }
        first_wall, first_cpu = next(iter(medians.values()))
        for name, (wall, cpu) in medians.items():
            faults = statistics.median(a.faults for a in answers[(name, label)])
            ratios = f"{first_wall / wall:.2f}x, {first_cpu / cpu:.2f}x"
            versus = f"{medians[REFERENCE][0] / wall:.1f}x" if REFERENCE in medians else "n/a"
            times = f"{wall * 1000:.1f} | {cpu * 1000:.1f} | {faults:.0f}"
            print(f"| {label} | {name} | {times} | {ratios} | {versus} |")
        faces = [answers[(name, label)][-1].faces for name in names]
        same = all(len(f) == len(faces[0]) for f in faces)
        print(f"| {label} | same face count: {same}, largest difference {largest_difference(faces):.2g} |")


def run_rounds(
    processes: dict[str, subprocess.Popen[str]], labels: list[str], args: argparse.Namespace
) -> dict[tuple[str, str], list[Answer]]:
    """Each version's answers per photo, the versions taking turns within every round; then the
    processes end."""
    answers: dict[tuple[str, str], list[Answer]] = {(n, label): [] for n in processes for label in labels}
    for round_ in range(args.rounds):
        order = list(processes) if round_ % 2 == 0 else list(processes)[::-1]
        for label in labels:
            for name in order:
                answers[(name, label)].append(ask(processes[name], label, args.calls))
    for process in processes.values():
        assert process.stdin is not None
        process.stdin.close()
        process.wait()
    return answers


if __name__ == "__main__":
    main()
