"""Second model: FaceNet and the dlib + FaceNet fusion on the shared LFW pairs (folds 1–2).

Pipeline per image, as in calibrate.py: MTCNN → the detection nearest the image centre → dlib
chip + mirror (ResNet on ONNX Runtime) and FaceNet margin crop + mirror (our ONNX conversion).

1. Fusion weights, fitted on fold 1 only: the standard deviation σ of each model's cosine
   similarities over every pair of fold-1 images of different people (LFW's folds share no
   person); weight 1/σ (the constants in facegate/embedding/factory.py come from here).
2. Verification, the protocol of calibrate.py: the cosine-distance threshold with the best
   accuracy on fold 1, accuracy on fold 2 (and fold-2 threshold → fold 1).
3. Thresholds at equal false-match rate, held out: over every pair of fold-2 images of different
   people (no fold-1 person, so the weights were not fitted on them), dlib + mirror's FMR at
   FACE_MATCH_THRESHOLD 0.06, and the distance at which each variant has the same FMR (and its
   share of genuine pairs within it).
4. Cost: ms per face of FaceNet and fusion `embed` (crops + mirrors in one batch) on real images.

Raw vectors are cached in --cache, so reruns take seconds. Prints tables; writes nothing into the
repository.

    python benchmarks/fusion_bench.py [--faces 24]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import time
from pathlib import Path

import numpy as np

from calibrate import LFW, PAIRS_PER_FOLD, central_face, fallback_face, one_to_one, read_pairs
from facegate.detection import MTCNN
from facegate.embedding.alignment import face_chips
from facegate.embedding.dlib_resnet import DlibOnnxEmbedder, unit_descriptors
from facegate.embedding.facenet import FaceNetEmbedder, facenet_crops
from facegate.embedding.fusion import FusionEmbedder
from facegate.imaging import load_image_file

DLIB, FACENET = "dlib + mirror", "FaceNet + mirror"
MATCH_THRESHOLD = 0.06  # dlib + mirror's FACE_MATCH_THRESHOLD (BENCHMARKS.md, Calibration)


def describe_images(keys: list[str], cache_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per model, the unit vector (view and mirror averaged) of each image's central face."""
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
    cache = cache_dir / f"lfw-mtcnn-dlib-facenet-{digest}.npz"
    if not cache.is_file():
        detector = MTCNN()
        dlib = DlibOnnxEmbedder(cache_dir / "models", mirror=False)
        facenet = FaceNetEmbedder(cache_dir / "models", mirror=False)
        raw_dlib, raw_facenet, started = [], [], time.perf_counter()
        for index, key in enumerate(keys, 1):
            image = load_image_file(LFW / "lfw-deepfunneled" / key)
            height, width = image.shape[:2]
            face = central_face(detector.detect(image), width, height) or fallback_face(width, height)
            chips, crops = face_chips(image, [face]), facenet_crops(image, [face])
            raw_dlib.append(dlib.descriptors(np.concatenate([chips, chips[:, :, ::-1]])))
            raw_facenet.append(facenet.descriptors(np.concatenate([crops, crops[:, :, ::-1]])))
            if index % 200 == 0:
                print(f"  {index}/{len(keys)} images, {time.perf_counter() - started:.0f} s", flush=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(cache, dlib=np.stack(raw_dlib), facenet=np.stack(raw_facenet))
    stored = np.load(cache)
    return {
        name: {key: unit_descriptors(raw, 1)[0] for key, raw in zip(keys, stored[field], strict=True)}
        for name, field in ((DLIB, "dlib"), (FACENET, "facenet"))
    }


def impostor_std(vectors: dict[str, np.ndarray], keys: list[str]) -> float:
    """σ of the cosine similarities of every pair of `keys` of different people."""
    matrix = np.stack([vectors[key] for key in keys])
    people = np.array([key.split("/")[0] for key in keys])
    similarity = matrix @ matrix.T
    different = np.triu(people[:, None] != people[None, :], 1)
    return float(similarity[different].std())


def fused(parts: list[tuple[dict[str, np.ndarray], float]]) -> dict[str, np.ndarray]:
    """What FusionEmbedder computes, from stored unit vectors."""
    total = sum(weight for _, weight in parts)
    out = {}
    for key in parts[0][0]:
        vector = np.concatenate([vectors[key] * np.sqrt(weight / total) for vectors, weight in parts])
        out[key] = vector / np.linalg.norm(vector)
    return out


def equal_fmr_thresholds(models: dict[str, dict[str, np.ndarray]], keys: list[str], threshold: float) -> None:
    people = np.array([key.split("/")[0] for key in keys])
    upper = np.triu_indices(len(keys), k=1)
    same = people[upper[0]] == people[upper[1]]
    print(
        f"\nfold-2 images, {(~same).sum()} impostor pairs\n| variant | distance at dlib + mirror's FMR "
        f"at {threshold} | FMR | genuine pairs within ({same.sum()} pairs) |\n|---|---|---|---|"
    )
    target = None
    for name, vectors in models.items():
        matrix = np.stack([vectors[key] for key in keys])
        distances = (1.0 - matrix @ matrix.T)[upper]
        impostor = np.sort(distances[~same])
        if target is None:
            target = int(np.searchsorted(impostor, threshold, side="right"))
        cut = float(impostor[max(target - 1, 0)])
        print(
            f"| {name} | {cut:.4f} | {target / len(impostor):.4%} | {np.mean(distances[same] <= cut):.2%} |"
        )


def ms_per_face(embedder, images: list[tuple[np.ndarray, list]], repeats: int) -> tuple[float, float]:
    """Median wall and CPU ms per face of `embed` over `repeats` passes, one image (one face) per
    call. CPU time is far steadier than wall time on a shared machine."""
    embedder.embed(*images[0])  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        for image, faces in images:
            embedder.embed(image, faces)
        walls.append((time.perf_counter() - started) / len(images) * 1000)
        cpus.append((time.process_time() - started_cpu) / len(images) * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, default=LFW / "pairs_folds1-2.txt")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facegate-calibration"))
    parser.add_argument("--faces", type=int, default=24, help="images timed for the cost table")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    pairs = read_pairs(args.pairs)
    keys = sorted({key for pair in pairs for key in (pair.first, pair.second)})
    fold1 = sorted({key for pair in pairs[:PAIRS_PER_FOLD] for key in (pair.first, pair.second)})
    print(f"{len(pairs)} pairs, {len(keys)} images ({len(fold1)} in fold 1)")
    models = describe_images(keys, args.cache)
    sigma = {name: impostor_std(vectors, fold1) for name, vectors in models.items()}
    print("\nimpostor σ on fold 1: " + ", ".join(f"{name} {value:.4f}" for name, value in sigma.items()))
    print(f"weights 1/σ: {', '.join(f'{name} {1 / value:.3f}' for name, value in sigma.items())}")
    models["fusion, weights 1/σ"] = fused([(models[name], 1 / sigma[name]) for name in (DLIB, FACENET)])
    models["fusion, equal weights"] = fused([(models[name], 1.0) for name in (DLIB, FACENET)])
    print(
        "\n| variant (cosine) | fold-1 threshold | fold-2 accuracy | FMR | FNMR "
        "| fold-2 threshold → fold 1 | mean |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, vectors in models.items():
        one_to_one(name, pairs, vectors)

    fold2 = sorted(set(keys) - set(fold1))
    equal_fmr_thresholds(models, fold2, MATCH_THRESHOLD)

    detector, cache = MTCNN(), args.cache / "models"
    images = []
    for key in keys[: args.faces]:
        image = load_image_file(LFW / "lfw-deepfunneled" / key)
        height, width = image.shape[:2]
        images.append(
            (image, [central_face(detector.detect(image), width, height) or fallback_face(width, height)])
        )
    dlib, facenet = DlibOnnxEmbedder(cache), FaceNetEmbedder(cache)
    fusion = FusionEmbedder([(dlib, 1 / sigma[DLIB]), (facenet, 1 / sigma[FACENET])])
    print(
        f"\ncost, {len(images)} LFW faces, one face per call, view + mirror in one batch; "
        f"{os.cpu_count()} CPUs, load average before: " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    )
    print("| embedder | wall ms per face | CPU ms per face |\n|---|---|---|")
    for embedder in (dlib, facenet, fusion):
        wall, cpu = ms_per_face(embedder, images, args.repeats)
        print(f"| {embedder.name} | {wall:.1f} | {cpu:.1f} |")
    print("load average after: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
