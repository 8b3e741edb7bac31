"""Calibrate the one-to-one threshold of the configured embedder (`FACE_EMBEDDER`) on the shared LFW
pairs (folds 1–2).

Pipeline per image: MTCNN (facegate.detection) → the detection nearest the image centre (LFW's
labelled face) → the embedder's own alignment and network, the crop and its mirror image in one
batch. Both variants are evaluated: one descriptor, and the mean of the unit descriptors of the
crop and its mirror (what the embedder returns with its mirror pass on).

1. One-to-one: the cosine-distance threshold with the best accuracy on fold 1 (first 600 pairs),
   applied to fold 2 (next 600): accuracy, FMR, FNMR; and the other way round.
2. One-to-many: strangers (people with one image, never enrolled) searched against galleries of
   growing size (false-positive identification rate), and enrolled people's other photos
   searched against the largest gallery (true-positive identification rate), at a few thresholds;
   larger galleries are extrapolated from the one-to-one false-match rate: 1 − (1 − FMR)^N.

Writes a ROC plot to --out (needs the `bench` extra: matplotlib). Descriptors are cached in
--cache, so reruns take seconds. Prints tables; writes nothing into the repository.

    python benchmarks/calibrate.py --out /tmp/facegate-roc.png
    FACE_EMBEDDER=onnx python benchmarks/calibrate.py      # dlib's ResNet
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import facegate.detection
import facegate.embedding
from facegate.config import Settings
from facegate.embedding.base import MirroredEmbedder, unit_descriptors
from facegate.faces import Face
from facegate.imaging import load_image_file
from facegate.pipeline import Pipeline

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "lfw"
PAIRS_PER_FOLD = 600
# The one-to-many table's thresholds, as shares of the chosen one-to-one threshold (every model has
# its own scale of distances).
THRESHOLD_SHARES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
GALLERY_SIZES = (10, 30, 100, 300)
DRAWS = 50  # random galleries per size


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    same: bool


def image_key(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    pairs = []
    for line in path.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 3:
            pairs.append(Pair(image_key(fields[0], fields[1]), image_key(fields[0], fields[2]), True))
        elif len(fields) == 4:
            pairs.append(Pair(image_key(fields[0], fields[1]), image_key(fields[2], fields[3]), False))
    return pairs


def central_face(faces: list[Face], width: int, height: int) -> Face | None:
    """The detection whose box centre is nearest the image centre: LFW labels the central face."""

    def offset(face: Face) -> float:
        x1, y1, x2, y2 = face.box
        return float(np.hypot((x1 + x2) / 2 - width / 2, (y1 + y2) / 2 - height / 2))

    return min(faces, key=offset, default=None)


def fallback_face(width: int, height: int) -> Face:
    """A fixed central box for the (rare) image without a detection; dlib alignment needs no keypoints."""
    box = (width * 0.3, height * 0.3, width * 0.7, height * 0.7)
    return Face(box=box, score=0.0, keypoints=np.zeros((5, 2)))


def pipeline_fingerprint() -> bytes:
    """The source of the detection and embedding packages: a cache entry is stale once they change."""
    packages = (Path(facegate.detection.__file__).parent, Path(facegate.embedding.__file__).parent)
    return b"".join(path.read_bytes() for package in packages for path in sorted(package.glob("*.py")))


def describe_images(keys: list[str], cache_dir: Path) -> tuple[str, dict[str, np.ndarray], int]:
    """The embedder's name, and raw descriptors (2, dim) per image: crop and mirror. Cached by the
    list of images and the embedder."""
    pipeline = Pipeline.from_settings(Settings())
    embedder = pipeline.embedder
    if not isinstance(embedder, MirroredEmbedder):
        raise SystemExit(f"{embedder.name}: only embedders with a mirror pass are calibrated here")
    name = embedder.name
    digest = hashlib.sha256("\n".join(keys).encode() + name.encode() + pipeline_fingerprint()).hexdigest()
    cache = cache_dir / f"lfw-pairs-{digest[:16]}.npz"
    if cache.is_file():
        stored = np.load(cache)
        return name, dict(zip(keys, stored["raw"], strict=True)), int(stored["misses"])
    raw, misses, started = [], 0, time.perf_counter()
    for index, key in enumerate(keys, 1):
        image = load_image_file(LFW / "lfw-deepfunneled" / key)
        height, width = image.shape[:2]
        face = central_face(pipeline.detect(image), width, height)
        if face is None:
            misses += 1
            face = fallback_face(width, height)
        crops = embedder.crops(image, [face])
        raw.append(embedder.descriptors(np.concatenate([crops, crops[:, :, ::-1]])))
        if index % 200 == 0:
            print(f"  {index}/{len(keys)} images, {time.perf_counter() - started:.0f} s", flush=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cache, raw=np.stack(raw), misses=misses)
    return name, dict(zip(keys, raw, strict=True)), misses


def variants(raw: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    return {
        "one descriptor": {key: unit_descriptors(value[:1], 1)[0] for key, value in raw.items()},
        "chip + mirror": {key: unit_descriptors(value, 1)[0] for key, value in raw.items()},
    }


def pair_distances(pairs: list[Pair], vectors: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([1.0 - float(vectors[p.first] @ vectors[p.second]) for p in pairs])


def best_threshold(distances: np.ndarray, same: np.ndarray) -> float:
    """The threshold with the best accuracy; the middle of the best run of candidate thresholds."""
    ordered = np.sort(distances)
    candidates = np.concatenate([[0.0], (ordered[1:] + ordered[:-1]) / 2, [ordered[-1] + 1e-6]])
    accuracy = np.array([np.mean((distances <= t) == same) for t in candidates])
    best = np.flatnonzero(accuracy == accuracy.max())
    run_end = best[0]
    while run_end + 1 in best:
        run_end += 1
    return float((candidates[best[0]] + candidates[run_end]) / 2)


def rates(distances: np.ndarray, same: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Accuracy, false-match rate, false-non-match rate."""
    match = distances <= threshold
    return float(np.mean(match == same)), float(np.mean(match[~same])), float(np.mean(~match[same]))


def one_to_one(name: str, pairs: list[Pair], vectors: dict[str, np.ndarray]) -> dict[str, object]:
    distances, same = pair_distances(pairs, vectors), np.array([p.same for p in pairs])
    folds = [slice(0, PAIRS_PER_FOLD), slice(PAIRS_PER_FOLD, 2 * PAIRS_PER_FOLD)]
    results = {}
    for train, test in (folds, folds[::-1]):
        threshold = best_threshold(distances[train], same[train])
        results[(train.start, test.start)] = (threshold, *rates(distances[test], same[test], threshold))
    (t1, acc2, fmr2, fnmr2), (t2, acc1, _, _) = results[(0, 600)], results[(600, 0)]
    print(
        f"| {name:<15} | {t1:.3f} | {acc2:.2%} | {fmr2:.2%} | {fnmr2:.2%} "
        f"| {t2:.3f} → fold 1 {acc1:.2%} | {(acc1 + acc2) / 2:.2%} |"
    )
    return {"threshold": t1, "distances": distances, "same": same, "folds": folds}


def identities(keys: list[str]) -> dict[str, list[str]]:
    people: dict[str, list[str]] = {}
    for key in sorted(keys):
        people.setdefault(key.split("/")[0], []).append(key)
    return people


def one_to_many(vectors: dict[str, np.ndarray], thresholds: list[float]) -> None:
    """FPIR for strangers against random galleries of growing size; TPIR against the largest one.

    Enrolled: every person with 2+ images (first image enrolled, the others are mated probes)
    plus half the people with one image. Strangers: the other half of the one-image people.
    """
    people = identities(list(vectors))
    rng = np.random.default_rng(0)
    singles = sorted(name for name, images in people.items() if len(images) == 1)
    rng.shuffle(singles)
    strangers, filler = singles[: len(singles) // 2], singles[len(singles) // 2 :]
    repeated = [name for name, images in people.items() if len(images) > 1]
    enrolled = repeated + filler
    gallery = np.stack([vectors[people[name][0]] for name in enrolled])
    stranger_probes = np.stack([vectors[people[name][0]] for name in strangers])
    stranger_nearest = 1.0 - stranger_probes @ gallery.T  # (strangers, enrolled) distances
    sizes = [size for size in GALLERY_SIZES if size < len(enrolled)] + [len(enrolled)]
    print(
        f"\nOne-to-many: {len(enrolled)} enrolled people ({len(repeated)} with more photos), "
        f"{len(strangers)} strangers; FPIR = share of strangers matched to someone "
        f"(mean of {DRAWS} random galleries per size)"
    )
    print(
        "| threshold | "
        + " | ".join(f"FPIR N={n}" for n in sizes)
        + " | TPIR (rank 1, N=all) | FMR 1:1 | ≈FPIR N=1,000 | ≈FPIR N=10,000 |"
    )
    print("|---" * (len(sizes) + 5) + "|")
    mated = [(enrolled.index(name), image) for name in repeated for image in people[name][1:]]
    mated_distances = 1.0 - np.stack([vectors[image] for _, image in mated]) @ gallery.T
    mated_truth = np.array([index for index, _ in mated])
    nonmated_all = stranger_nearest.ravel()
    galleries = {
        size: [rng.choice(len(enrolled), size, replace=False) for _ in range(DRAWS)] for size in sizes[:-1]
    }
    galleries[len(enrolled)] = [np.arange(len(enrolled))]
    for threshold in thresholds:
        fpir = [
            np.mean([np.mean(stranger_nearest[:, draw].min(axis=1) <= threshold) for draw in galleries[size]])
            for size in sizes
        ]
        nearest = mated_distances.argmin(axis=1)
        hit = (nearest == mated_truth) & (mated_distances.min(axis=1) <= threshold)
        fmr = np.mean(nonmated_all <= threshold)
        print(
            f"| {threshold:.3f} | "
            + " | ".join(f"{value:.2%}" for value in fpir)
            + f" | {np.mean(hit):.2%} ({len(mated)} probes) | {fmr:.3%} "
            + "".join(f"| {1 - (1 - fmr) ** size:.1%} " for size in (1_000, 10_000))
            + "|"
        )


def plot_roc(model: str, curves: dict[str, dict[str, object]], out: Path) -> None:
    import matplotlib  # the optional `bench` extra: imported only here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 5))
    for name, curve in curves.items():
        distances, same = curve["distances"], curve["same"]
        thresholds = np.sort(distances)
        tpr = [np.mean(distances[same] <= t) for t in thresholds]
        fpr = [np.mean(distances[~same] <= t) for t in thresholds]
        axes.plot(fpr, tpr, label=f"{name} (folds 1–2)")
        chosen = curve["threshold"]
        axes.plot(*[[np.mean(distances[mask] <= chosen)] for mask in (~same, same)], "o", color="k")
    axes.set(
        xscale="log", xlim=(1e-3, 1), ylim=(0.9, 1.0), xlabel="false match rate", ylabel="true match rate"
    )
    axes.set_title(f"{model} on LFW pairs folds 1–2, MTCNN keypoints")
    axes.legend(loc="lower right")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    print(f"\nROC plot: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, default=LFW / "pairs_folds1-2.txt")
    parser.add_argument("--out", type=Path, default=Path("/tmp/facegate-calibration/roc.png"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facegate-calibration"))
    args = parser.parse_args()

    pairs = read_pairs(args.pairs)
    keys = sorted({key for pair in pairs for key in (pair.first, pair.second)})
    print(f"{len(pairs)} pairs, {len(keys)} images")
    model, raw, misses = describe_images(keys, args.cache)
    print(f"{model}; images without a detection (fixed centre box used): {misses}\n")
    print(
        "| variant (cosine) | fold-1 threshold | fold-2 accuracy | FMR | FNMR "
        "| fold-2 threshold → fold 1 | mean |"
    )
    print("|---|---|---|---|---|---|---|")
    curves = {name: one_to_one(name, pairs, vectors) for name, vectors in variants(raw).items()}
    chosen = float(curves["chip + mirror"]["threshold"])
    one_to_many(variants(raw)["chip + mirror"], [round(share * chosen, 4) for share in THRESHOLD_SHARES])
    plot_roc(model, curves, args.out)


if __name__ == "__main__":
    main()
