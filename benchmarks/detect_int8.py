"""MTCNN in int8 against fp32 on this CPU: where detection's time goes, how fast int8 networks run,
and whether they keep parity with the reference.

    PYTHONPATH=src:. python benchmarks/detect_int8.py [--rounds 3] [--skip-parity]

(the repository root on the path: the parity gates are imported from tests/test_detection_parity.py)

Static QDQ quantisation (onnxruntime.quantization.quantize_static: per-channel int8 weights, uint8
activations, MinMax ranges) of PNet, RNet and ONet, calibrated on the inputs the fp32 cascade
feeds them (pyramid tiles and crops) on every fourth portrait and group photo of the shared set.
Prints, for three photos (a group at 1280x886, a 512x512 portrait, the 320x240 small-face
portrait):

- split: one lane's CPU time divided among the pyramid, each network, NMS, crops and the rest
  (detect_bench.py's split);
- networks: each network alone on one core, fp32 against two int8 forms (all ops quantised;
  convolutions only, the PReLU arithmetic left in float), and whole detections with int8 networks;
- parity: tests/test_detection_parity.py's gates with each int8 network swapped in, then all three.

Rounds alternate between the variants so that a shared machine's drift hits them alike: quote
the ratios. Writes its models to a temporary folder only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from detect_bench import FACES, REFERENCE_JSON, cpu_line, photos, print_split
from facegate.detection import MTCNN, DetectionParams
from facegate.detection.networks import build_network
from facegate.detection.weights import NetworkName
from facegate.imaging import load_image_file
from facegate.runtime import RuntimeOptions, create_session

NETWORKS: tuple[NetworkName, ...] = ("pnet", "rnet", "onet")
INPUT_NAME = {"pnet": "image", "rnet": "crops", "onet": "crops"}
# Calibration batches per network, and crops per batch.
CALIBRATION_BATCHES = 150
CROPS_PER_BATCH = 64
ONE_CORE = RuntimeOptions(threads=1)


class _Recorder:
    """A session stand-in that runs the real one, recording its inputs."""

    def __init__(self, session: ort.InferenceSession, inputs: list[np.ndarray]) -> None:
        self._session = session
        self._inputs = inputs

    def run(self, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (value,) = feeds.values()
        self._inputs.append(value.copy())
        return self._session.run(outputs, feeds)


def calibration_inputs() -> dict[NetworkName, list[np.ndarray]]:
    """What the fp32 cascade feeds each network on every fourth portrait and group photo."""
    with (FACES / "MANIFEST.csv").open(newline="") as manifest:
        paths = [row["path"] for row in csv.DictReader(manifest) if row["kind"] in ("portrait", "group")]
    detector = MTCNN(ONE_CORE)
    recorded: dict[NetworkName, list[np.ndarray]] = {name: [] for name in NETWORKS}
    for name in NETWORKS:
        setattr(detector, f"_{name}", _Recorder(getattr(detector, f"_{name}"), recorded[name]))
    for path in paths[::4]:
        detector.detect(load_image_file(FACES / path))
    rng = np.random.default_rng(0)
    tiles = recorded["pnet"]
    chosen = rng.choice(len(tiles), min(len(tiles), CALIBRATION_BATCHES), replace=False)
    result: dict[NetworkName, list[np.ndarray]] = {"pnet": [tiles[i] for i in sorted(chosen)]}
    for name in ("rnet", "onet"):
        crops = np.concatenate(recorded[name])
        batches = [crops[i : i + CROPS_PER_BATCH] for i in range(0, len(crops), CROPS_PER_BATCH)]
        result[name] = batches[:CALIBRATION_BATCHES]
    return result


class _Batches(CalibrationDataReader):
    def __init__(self, name: str, batches: list[np.ndarray]) -> None:
        self._name = name
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}


def quantised(name: NetworkName, batches: list[np.ndarray], folder: Path, *, convs_only: bool) -> bytes:
    """The network in int8 QDQ form; `convs_only` leaves everything but Conv and Gemm in float."""
    source, prepared, target = folder / f"{name}.onnx", folder / f"{name}.pre.onnx", folder / f"{name}.q.onnx"
    source.write_bytes(build_network(name))
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    options: dict[str, Any] = {"op_types_to_quantize": ["Conv", "Gemm"]} if convs_only else {}
    quantize_static(
        str(prepared),
        str(target),
        _Batches(INPUT_NAME[name], batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        # 7-bit weights: without VNNI, ONNX Runtime's u8s8 kernels (vpmaddubsw) can saturate
        # their 16-bit pair sums on full-range weights.
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        **options,
    )
    return target.read_bytes()


def median_ms(work: Callable[[], object], repeat: int) -> float:
    work()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def with_networks(sessions: dict[NetworkName, ort.InferenceSession]) -> MTCNN:
    """A one-lane detector running the given sessions in place of its own."""
    detector = MTCNN(ONE_CORE)
    for name, session in sessions.items():
        setattr(detector, f"_{name}", session)
    return detector


def print_networks(
    variants: dict[str, dict[NetworkName, ort.InferenceSession]],
    calibration: dict[NetworkName, list[np.ndarray]],
    images: dict[str, np.ndarray],
    rounds: int,
) -> None:
    """Each network alone on its largest calibration input, then whole detections."""
    print("\nnetworks alone (one core, ms; best round of medians; ratio to fp32):")
    for name in NETWORKS:
        feed = {INPUT_NAME[name]: max(calibration[name], key=lambda batch: batch.size)}
        best: dict[str, float] = defaultdict(lambda: float("inf"))
        for _ in range(rounds):
            for variant, sessions in variants.items():
                ms = median_ms(partial(sessions[name].run, None, feed), 7)
                best[variant] = min(best[variant], ms)
        shape = "x".join(map(str, feed[INPUT_NAME[name]].shape))
        cells = "; ".join(f"{v} {ms:.2f} ({ms / best['fp32']:.2f}x)" for v, ms in best.items())
        print(f"  {name} on {shape}: {cells}")
    print("\nwhole detections (one lane, ms; ratio to fp32):")
    detectors = {variant: with_networks(sessions) for variant, sessions in variants.items()}
    for label, image in images.items():
        best = defaultdict(lambda: float("inf"))
        for _ in range(rounds):
            for variant, detector in detectors.items():
                best[variant] = min(best[variant], median_ms(partial(detector.detect, image), 5))
        cells = "; ".join(f"{v} {ms:.1f} ({ms / best['fp32']:.2f}x)" for v, ms in best.items())
        print(f"  {label}: {cells}")


def print_parity(int8: dict[NetworkName, ort.InferenceSession]) -> None:
    """tests/test_detection_parity.py's gates, default and strict settings, int8 networks swapped in."""
    from tests.test_detection_parity import Comparison  # the gates' one definition

    reference = json.loads(REFERENCE_JSON.read_text())
    images = {entry["path"]: load_image_file(FACES / entry["path"]) for entry in reference["images"]}
    print("\nparity (gates: found >= 98%, extra <= 2%, score diff <= 0.05, keypoints <= 0.05 box widths):")
    swaps: list[tuple[NetworkName, ...]] = [(name,) for name in NETWORKS] + [NETWORKS]
    for swap in swaps:
        detector = with_networks({name: int8[name] for name in swap})
        for setting in ("default", "strict"):
            params = DetectionParams(**reference["meta"]["settings"][setting])
            c = Comparison()
            for entry in reference["images"]:
                c.add(entry["results"][setting], detector.detect(images[entry["path"]], params))
            passed = (
                c.found >= 0.98 * c.expected
                and c.unmatched_ours <= 0.02 * c.ours
                and c.max_score_diff <= 0.05
                and c.max_keypoint_diff <= 0.05
            )
            print(
                f"  int8 {'+'.join(swap)}, {setting}: found {c.found}/{c.expected}, extra "
                f"{c.unmatched_ours}/{c.ours}, score diff {c.max_score_diff:.3f}, keypoints "
                f"{c.max_keypoint_diff:.3f} -> {'pass' if passed else 'FAIL'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds over the variants")
    parser.add_argument(
        "--skip-parity", action="store_true", help="skip the parity runs (about a minute each)"
    )
    args = parser.parse_args()
    print(cpu_line())
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    images = photos()
    print_split(images, repeat=10, reference=None)
    calibration = calibration_inputs()
    with tempfile.TemporaryDirectory() as folder:
        variants: dict[str, dict[NetworkName, ort.InferenceSession]] = {
            "fp32": {name: create_session(build_network(name), ONE_CORE) for name in NETWORKS}
        }
        for variant, convs_only in (("int8", False), ("int8 convs only", True)):
            variants[variant] = {
                name: create_session(
                    quantised(name, calibration[name], Path(folder), convs_only=convs_only), ONE_CORE
                )
                for name in NETWORKS
            }
    print_networks(variants, calibration, images, args.rounds)
    if not args.skip_parity:
        print_parity(variants["int8"])
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
