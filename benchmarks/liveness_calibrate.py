"""Calibrate the flat-photo bound of the liveness check on real photos of the shared corpus.

Two distributions of `planar_residual` (rigid 68-point landmarks, best homography, RMS residual
over the face's size):

- real pose pairs: two photos of the same person whose yaw index differs by at least
  --min-yaw-change (portraits/ and the LFW subset) — a head that really turned;
- flat warps: one photo against itself perspective-warped the way a held print or screen is
  tilted (about the vertical and horizontal axes, with some spin and slide) — every landmark
  re-detected on the warped image, so detector noise is in the numbers.

The bound is the geometric mean of the warps' maximum and the real pairs' 1st percentile, and
the table gives the margin between the two. Also prints the eye aspect ratio of the photos (the
blink signal's "open" level) and how far a flat tilt moves the yaw index.

    nice python benchmarks/liveness_calibrate.py            # ~2 min on 2 cores, cached afterwards

Landmarks are cached in --cache; nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from calibrate import LFW, describe_images, read_pairs
from facegate.detection import MTCNN
from facegate.embedding.dlib_resnet import unit_descriptors
from facegate.faces import Face
from facegate.imaging import load_image_file
from facegate.liveness.landmarks import landmarks68
from facegate.liveness.planarity import planar_residual
from facegate.liveness.session import LivenessLimits
from facegate.liveness.signals import eye_aspect_ratio, yaw_index

REPO = Path(__file__).resolve().parents[1]
# The simulated attacks are the tests' (the service never makes them); reuse them.
sys.path.insert(0, str(REPO))
from tests.attacks import tilt_homography, warp_image  # noqa: E402

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
MAX_SIDE = 800  # portraits are shrunk to this first: landmarks only need a face of ~100 px
# (yaw, pitch, roll, shift as a fraction of the width): prints held and tilted by hand.
TILTS = (
    (-40, 0, 0, 0.0),
    (-20, 0, 5, 0.05),
    (20, 0, -5, -0.05),
    (40, 0, 0, 0.0),
    (0, -25, 0, 0.0),
    (0, 25, 10, 0.05),
    (30, 15, -10, 0.0),
    (-30, -15, 10, 0.0),
)


@dataclass(frozen=True)
class Sample:
    key: str
    identity: str
    points: np.ndarray


def shrink(image: np.ndarray) -> np.ndarray:
    scale = MAX_SIDE / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def main_face(faces: list[Face], width: int, height: int, lfw: bool) -> Face | None:
    """LFW labels the central face; a portrait's subject is its largest."""
    if not faces:
        return None
    if lfw:
        return min(
            faces, key=lambda f: np.hypot(sum(f.box[::2]) / 2 - width / 2, sum(f.box[1::2]) / 2 - height / 2)
        )
    return max(faces, key=lambda f: f.area)


def corpus() -> list[tuple[str, str]]:
    """(path, identity) of every labelled portrait and every LFW image of a person with 2+ images."""
    with (FACES / "MANIFEST.csv").open() as handle:
        rows = [
            row for row in csv.DictReader(handle) if row["identity"] and row["kind"] in {"portrait", "lfw"}
        ]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["identity"]] = counts.get(row["identity"], 0) + 1
    return [(row["path"], row["identity"]) for row in rows if counts[row["identity"]] >= 2]


def analyse(detector: MTCNN, image: np.ndarray, lfw: bool) -> np.ndarray | None:
    face = main_face(detector.detect(image), image.shape[1], image.shape[0], lfw)
    return None if face is None else landmarks68(image, face)


def load_samples(detector: MTCNN, cache: Path) -> list[Sample]:
    entries = corpus()
    digest = hashlib.sha256("\n".join(p for p, _ in entries).encode()).hexdigest()[:12]
    path = cache / f"liveness-landmarks-{digest}.npz"
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        return [
            Sample(k, i, p) for k, i, p in zip(stored["keys"], stored["ids"], stored["points"], strict=True)
        ]
    samples, started = [], time.perf_counter()
    for index, (key, identity) in enumerate(entries, 1):
        points = analyse(detector, shrink(load_image_file(FACES / key)), key.startswith("lfw/"))
        if points is not None:
            samples.append(Sample(key, identity, points))
        if index % 300 == 0:
            print(f"  {index}/{len(entries)} photos, {time.perf_counter() - started:.0f} s", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        keys=np.array([s.key for s in samples]),
        ids=np.array([s.identity for s in samples]),
        points=np.stack([s.points for s in samples]),
    )
    return samples


@dataclass(frozen=True)
class Pairs:
    """Residuals of (frontal, other) landmark pairs, and the |yaw index| of the other one."""

    residual: np.ndarray
    yaw: np.ndarray

    @classmethod
    def of(cls, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Pairs:
        return cls(
            np.array([planar_residual(a, b) for a, b in pairs]),
            np.array([abs(yaw_index(b)) for _, b in pairs]),
        )

    def passing(self, bound: float, turn_yaw: float) -> float:
        """The share that would count as a turn: far enough round and off the plane."""
        return float(np.mean((self.residual >= bound) & (self.yaw >= turn_yaw)))


def real_pose_pairs(samples: list[Sample], min_change: float) -> Pairs:
    """Same-person pairs whose yaw differs by at least `min_change`, the more frontal one first."""
    by_identity: dict[str, list[Sample]] = {}
    for sample in samples:
        by_identity.setdefault(sample.identity, []).append(sample)
    pairs = []
    for group in by_identity.values():
        for a, b in itertools.combinations(group, 2):
            if abs(yaw_index(a.points) - yaw_index(b.points)) >= min_change:
                frontal, other = sorted((a, b), key=lambda s: abs(yaw_index(s.points)))
                pairs.append((frontal.points, other.points))
    return Pairs.of(pairs)


def flat_warps(detector: MTCNN, samples: list[Sample], count: int, cache: Path) -> Pairs:
    """The `count` most frontal photos against their own tilted copies (landmarks re-detected)."""
    frontal = sorted(samples, key=lambda s: abs(yaw_index(s.points)))[:count]
    digest = hashlib.sha256(("\n".join(s.key for s in frontal) + repr(TILTS)).encode()).hexdigest()[:12]
    path = cache / f"liveness-warps-{digest}.npz"
    if path.is_file():
        stored = np.load(path)
        return Pairs.of(list(zip(stored["reference"], stored["warped"], strict=True)))
    pairs = []
    for sample in frontal:
        image = shrink(load_image_file(FACES / sample.key))
        height, width = image.shape[:2]
        centre = tuple(sample.points.mean(axis=0))
        for yaw, pitch, roll, shift in TILTS:
            matrix = tilt_homography((width, height), centre, yaw, pitch, roll, (shift * width, 0.0))
            points = analyse(detector, warp_image(image, matrix), sample.key.startswith("lfw/"))
            if points is not None:
                pairs.append((sample.points, points))
    np.savez(path, reference=np.stack([a for a, _ in pairs]), warped=np.stack([b for _, b in pairs]))
    return Pairs.of(pairs)


def identity_across_pose(
    samples: list[Sample], min_change: float, cache: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine distances of LFW pairs whose yaw differs by at least `min_change`: same person, and
    different people — what the session's check of turned frames against the frontal one sees.
    Uses the recognition benchmark's descriptors (and its cache)."""
    pairs = read_pairs(LFW / "pairs_folds1-2.txt")
    keys = sorted({key for pair in pairs for key in (pair.first, pair.second)})
    _, raw, _ = describe_images(keys, cache)
    lfw = [
        (s, unit_descriptors(raw[s.key.split("lfw-deepfunneled/")[1]], 1)[0])
        for s in samples
        if "lfw/" in s.key
    ]
    same, different = [], []
    for (a, u), (b, v) in itertools.combinations(lfw, 2):
        if abs(yaw_index(a.points) - yaw_index(b.points)) >= min_change:
            (same if a.identity == b.identity else different).append(1.0 - float(u @ v))
    return np.array(same), np.array(different)


def row(name: str, values: np.ndarray) -> str:
    q = np.percentile(values, [0, 1, 5, 50, 95, 99, 100])
    cells = " | ".join(f"{v:.4f}" for v in q)
    return f"| {name} | {len(values)} | {cells} |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facegate-bench"))
    parser.add_argument("--min-yaw-change", type=float, default=0.3)
    parser.add_argument("--warped-photos", type=int, default=60, help="most frontal photos to warp")
    parser.add_argument(
        "--recognition-cache",
        type=Path,
        default=Path("/tmp/facegate-calibration"),
        help="calibrate.py's cache",
    )
    parser.add_argument(
        "--turn-yaw", type=float, default=LivenessLimits().turn_yaw, help="the session's yaw gate"
    )
    args = parser.parse_args()

    detector = MTCNN()
    samples = load_samples(detector, args.cache)
    real = real_pose_pairs(samples, args.min_yaw_change)
    every = real_pose_pairs(samples, 0.0)
    flat = flat_warps(detector, samples, args.warped_photos, args.cache)
    # The bound: the warps' 99th percentile, rounded up to a round number for the setting.
    bound = float(np.ceil(np.percentile(flat.residual, 99) * 200) / 200)

    print(f"photos with landmarks: {len(samples)}; tilts per warped photo: {len(TILTS)}\n")
    print("| planar residual | n | min | p1 | p5 | median | p95 | p99 | max |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(row(f"real pose pairs (Δyaw ≥ {args.min_yaw_change})", real.residual))
    print(row("all same-person pairs (any Δyaw)", every.residual))
    print(row("flat warps of one photo", flat.residual))
    print("\n| bound | real pose pairs under it | warps at or over it | warps passing yaw gate and bound |")
    print("| --- | --- | --- | --- |")
    for candidate in sorted({0.04, 0.05, 0.06, 0.07, bound, 0.09, 0.1}):
        mark = " (chosen)" if candidate == bound else ""
        print(
            f"| {candidate:.3f}{mark} | {np.mean(real.residual < candidate):.1%} | "
            f"{np.mean(flat.residual >= candidate):.1%} | {flat.passing(candidate, args.turn_yaw):.1%} |"
        )
    print(
        f"\nmargin (real min − warp max): {real.residual.min() - flat.residual.max():+.4f}; "
        f"(real p1 − warp p99): {np.percentile(real.residual, 1) - np.percentile(flat.residual, 99):+.4f}"
    )
    print(
        f"yaw index of the turned side: real pairs median {np.median(real.yaw):.3f}; "
        f"flat tilts median {np.median(flat.yaw):.3f}, p99 {np.percentile(flat.yaw, 99):.3f}, "
        f"max {flat.yaw.max():.3f}; "
        f"tilts reaching the gate ({args.turn_yaw}): {np.mean(flat.yaw >= args.turn_yaw):.1%}"
    )
    same, different = identity_across_pose(samples, args.min_yaw_change, args.recognition_cache)
    turned = LivenessLimits().turned_match_threshold
    print(
        f"\n| embedding distance, LFW pairs with Δyaw ≥ {args.min_yaw_change} "
        "| n | min | p1 | p5 | median | p95 | p99 | max |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(row("same person", same))
    print(row("different people", different))
    print(
        f"turned-frame identity bound {turned}: same person over it {np.mean(same > turned):.1%}, "
        f"different people within it {np.mean(different <= turned):.1%}"
    )
    ears = np.array([eye_aspect_ratio(s.points) for s in samples])
    print(
        f"eye aspect ratio of the photos: p5 {np.percentile(ears, 5):.3f}, median {np.median(ears):.3f}, "
        f"p95 {np.percentile(ears, 95):.3f}"
    )


if __name__ == "__main__":
    main()
