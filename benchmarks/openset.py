"""Open-set identification on the shared LFW images: how often a stranger is named, how often an
enrolled person is, and how well the false-accept policy's prediction holds.

For the configured embedder (`FACE_EMBEDDER`, default mobilefacenet512), every image of
`../shared/data/faces/lfw` (1,585 images of 844 people) is embedded once: MTCNN, the detection
nearest the centre (LFW's labelled face), the embedder. Vectors are cached in --cache.

1. The false-match curve FMR(t): the share of the ~1.2 million pairs of images of *different*
   people within cosine distance t, and the similarity score: a logistic fit of "same person" on
   the distance of all pairs, genuine and impostor weighted equally (equal priors).
   Also the one-to-one threshold (best accuracy on LFW's fold-1 pairs: /verify, added photos) and
   the margin: none, unless the policy alone names more strangers than its target at some gallery
   size below; then the loosest ratio that keeps every size within it.
   `--write` stores them in `src/facegate/calibration/<embedder>.json`, the file the service's
   policy reads (facegate.recognition).
2. Galleries of N = 100, 300, 500 and 844 real people (first photo of each; random draws):
   genuine probes are the other photos of enrolled people, strangers the photos of people not
   enrolled (for N = all: each image searched with its own person removed). Reported: TPIR at a
   measured FPIR of 1% and 0.1%; the policy's threshold for FPIR targets 1% and 0.1% at that N,
   and the FPIR and TPIR it gives (predicted FPIR = target); and the same with the margin test
   and with mean-embedding matching.

    python benchmarks/openset.py                    # the configured embedder (default mobilefacenet512)
    python benchmarks/openset.py --write            # and store the calibration file
    FACE_EMBEDDER=onnx python benchmarks/openset.py --write     # dlib + mirror
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from calibrate import LFW as LFW_ROOT
from calibrate import (
    PAIRS_PER_FOLD,
    best_threshold,
    central_face,
    fallback_face,
    pipeline_fingerprint,
    read_pairs,
)
from facegate.config import Settings
from facegate.embedding.base import MirroredEmbedder
from facegate.imaging import load_image_file
from facegate.pipeline import Pipeline
from facegate.recognition import CALIBRATION_DIR, Calibration, calibration_file

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "lfw" / "lfw-deepfunneled"
GALLERY_SIZES = (100, 300, 500)
DRAWS = 20
TARGETS = (0.01, 0.001)
MARGIN_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7)
# A measured FPIR within this factor of the target counts as on target (20 draws of strangers).
FPIR_TOLERANCE = 1.2
# Points of the stored curve: FMR levels from CURVE_MIN_PAIRS impostor pairs (fewer are too few to
# place a quantile; facegate.recognition extends the curve below) up to CURVE_MAX_FMR of them.
CURVE_POINTS = 200
CURVE_MIN_PAIRS = 10
CURVE_MAX_FMR = 0.5


@dataclass(frozen=True)
class Corpus:
    keys: list[str]
    people: np.ndarray  # identity index per image
    vectors: np.ndarray  # unit embeddings, one row per image


def embed_corpus(cache_dir: Path, mirror: bool = True) -> tuple[str, Corpus]:
    """Every LFW image embedded once; `mirror=False` turns the embedder's mirror pass off (a
    measurement only: the service's embedders keep theirs)."""
    settings = Settings()
    pipeline = Pipeline.from_settings(settings)
    if not mirror:
        if not isinstance(pipeline.embedder, MirroredEmbedder):
            raise SystemExit(f"{pipeline.embedder.name} has no mirror pass to turn off")
        pipeline.embedder.mirror = False
    name = pipeline.embedder.name + ("" if mirror else " (mirror pass off)")
    keys = sorted(str(path.relative_to(LFW)) for path in LFW.glob("*/*.jpg"))
    digest = hashlib.sha256("\n".join(keys).encode() + name.encode() + pipeline_fingerprint()).hexdigest()
    cache = cache_dir / f"openset-{digest[:16]}.npz"
    if cache.is_file():
        vectors = np.load(cache)["vectors"]
    else:
        started, rows = time.perf_counter(), []
        for index, key in enumerate(keys, 1):
            image = load_image_file(LFW / key)
            height, width = image.shape[:2]
            face = central_face(pipeline.detect(image), width, height) or fallback_face(width, height)
            rows.append(pipeline.embedder.embed(image, [face])[0])
            if index % 200 == 0:
                print(f"  {index}/{len(keys)} images, {time.perf_counter() - started:.0f} s", flush=True)
        vectors = np.stack(rows).astype(np.float32)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(cache, vectors=vectors)
    names = sorted({key.split("/")[0] for key in keys})
    people = np.array([names.index(key.split("/")[0]) for key in keys])
    return name, Corpus(keys, people, vectors)


# --- 1. the curve and the score ------------------------------------------------------------------


def pair_distances(corpus: Corpus) -> tuple[np.ndarray, np.ndarray]:
    """Distances of every pair of different images: impostor pairs, genuine pairs."""
    distances = 1.0 - corpus.vectors @ corpus.vectors.T
    upper = np.triu_indices(len(corpus.keys), k=1)
    same = corpus.people[upper[0]] == corpus.people[upper[1]]
    flat = distances[upper]
    return flat[~same], flat[same]


def fmr_curve(impostor: np.ndarray) -> tuple[list[float], list[float]]:
    """(FMR levels, distance at each level), from CURVE_MIN_PAIRS impostor pairs to CURVE_MAX_FMR."""
    ordered = np.sort(impostor)
    levels = np.geomspace(CURVE_MIN_PAIRS / len(ordered), CURVE_MAX_FMR, CURVE_POINTS)
    distances = ordered[np.clip(np.ceil(levels * len(ordered)).astype(int) - 1, 0, len(ordered) - 1)]
    return [float(v) for v in levels], [float(v) for v in distances]


def fit_similarity(impostor: np.ndarray, genuine: np.ndarray) -> tuple[float, float]:
    """Logistic P(same | d) = 1 / (1 + exp((d - midpoint) / scale)) at equal priors (Newton steps)."""
    x = np.concatenate([genuine, impostor]).astype(np.float64)
    y = np.concatenate([np.ones(len(genuine)), np.zeros(len(impostor))])
    weight = np.where(y == 1, 0.5 / len(genuine), 0.5 / len(impostor))
    a, b = 0.0, 0.0  # logit = a + b * d
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(a + b * x)))
        gradient = np.array([np.sum(weight * (p - y)), np.sum(weight * (p - y) * x)])
        w = weight * p * (1 - p)
        hessian = np.array([[w.sum(), (w * x).sum()], [(w * x).sum(), (w * x * x).sum()]])
        step = np.linalg.solve(hessian, gradient)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    return float(-a / b), float(-1.0 / b)  # midpoint, scale


# --- 2. open-set protocol ------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """Nearest and second-nearest person for each probe of one gallery, and the truth."""

    genuine_nearest: np.ndarray  # distance to the nearest enrolled person
    genuine_second: np.ndarray
    genuine_correct: np.ndarray  # the nearest is the right person
    stranger_nearest: np.ndarray
    stranger_second: np.ndarray


def first_images(corpus: Corpus) -> dict[int, int]:
    first: dict[int, int] = {}
    for index, person in enumerate(corpus.people):
        first.setdefault(int(person), index)
    return first


def two_nearest(distances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(distances, axis=1)[:, :2]
    rows = np.arange(len(distances))
    return distances[rows, order[:, 0]], distances[rows, order[:, 1]], order[:, 0]


def trial(corpus: Corpus, enrolled: np.ndarray) -> Trial:
    """One gallery: the first photo of each person in `enrolled`; probes = everyone's other photos
    (genuine) and the photos of people not enrolled (strangers)."""
    first = first_images(corpus)
    gallery_index = np.array([first[int(p)] for p in enrolled])
    gallery = corpus.vectors[gallery_index]
    is_enrolled = np.isin(corpus.people, enrolled)
    probes = np.setdiff1d(np.flatnonzero(is_enrolled), gallery_index)
    strangers = np.flatnonzero(~is_enrolled)
    g1, g2, g_at = two_nearest(1.0 - corpus.vectors[probes] @ gallery.T)
    s1, s2, _ = two_nearest(1.0 - corpus.vectors[strangers] @ gallery.T)
    return Trial(g1, g2, enrolled[g_at] == corpus.people[probes], s1, s2)


def leave_one_out(corpus: Corpus) -> Trial:
    """All 844 people enrolled; each image a stranger once with its own person removed."""
    first = first_images(corpus)
    people = np.array(sorted(first))
    gallery_index = np.array([first[int(p)] for p in people])
    distances = 1.0 - corpus.vectors @ corpus.vectors[gallery_index].T
    genuine = np.setdiff1d(np.arange(len(corpus.keys)), gallery_index)
    g1, g2, g_at = two_nearest(distances[genuine])
    own = corpus.people[:, None] == people[None, :]
    s1, s2, _ = two_nearest(np.where(own, np.inf, distances))
    return Trial(g1, g2, people[g_at] == corpus.people[genuine], s1, s2)


def accepted(nearest: np.ndarray, second: np.ndarray, threshold: float, ratio: float) -> np.ndarray:
    return (nearest <= threshold) & (nearest <= ratio * second)


def rates(trials: list[Trial], threshold: float, ratio: float = 1.0) -> tuple[float, float]:
    """(FPIR, TPIR) over the trials at `threshold` and the margin `ratio` (1 = no margin)."""
    fpir = np.mean([accepted(t.stranger_nearest, t.stranger_second, threshold, ratio).mean() for t in trials])
    tpir = np.mean(
        [
            (accepted(t.genuine_nearest, t.genuine_second, threshold, ratio) & t.genuine_correct).mean()
            for t in trials
        ]
    )
    return float(fpir), float(tpir)


def threshold_at_fpir(trials: list[Trial], target: float, ratio: float = 1.0) -> float:
    """The loosest threshold whose measured FPIR is at most `target` (bisection on the distance)."""
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        low, high = (middle, high) if rates(trials, middle, ratio)[0] <= target else (low, middle)
    return low


def galleries(corpus: Corpus, size: int, rng: np.random.Generator) -> list[Trial]:
    people = np.unique(corpus.people)
    return [trial(corpus, rng.choice(people, size, replace=False)) for _ in range(DRAWS)]


def trials_by_size(corpus: Corpus) -> dict[int, list[Trial]]:
    """Random galleries of each size, and everyone enrolled (leave one out) at the largest."""
    rng = np.random.default_rng(0)
    trials = {size: galleries(corpus, size, rng) for size in GALLERY_SIZES}
    trials[len(np.unique(corpus.people))] = [leave_one_out(corpus)]
    return trials


def choose_margin(trials: dict[int, list[Trial]], calibration: Calibration) -> float:
    """The loosest ratio (1 = no margin) at which the policy's 1% threshold names at most the target
    share of strangers, within FPIR_TOLERANCE, at every gallery size."""
    target = TARGETS[0]
    for ratio in MARGIN_RATIOS:
        fpirs = [rates(t, calibration.threshold(size, target), ratio)[0] for size, t in trials.items()]
        if max(fpirs) <= target * FPIR_TOLERANCE:
            return ratio
    return MARGIN_RATIOS[-1]


def verification_threshold(corpus: Corpus) -> float:
    """The one-to-one threshold with the best accuracy on LFW's fold-1 pairs."""
    pairs = read_pairs(LFW_ROOT / "pairs_folds1-2.txt")[:PAIRS_PER_FOLD]
    row = {key: index for index, key in enumerate(corpus.keys)}
    first = corpus.vectors[[row[pair.first] for pair in pairs]]
    second = corpus.vectors[[row[pair.second] for pair in pairs]]
    distances = 1.0 - np.sum(first * second, axis=1)
    return best_threshold(distances, np.array([pair.same for pair in pairs]))


def report_open_set(trials_at: dict[int, list[Trial]], calibration: Calibration) -> None:
    print(f"\nPolicy: threshold from the curve for the target FPIR at N; + margin: {calibration.margin}")
    print(
        "| N | TPIR @ measured FPIR 1% (t) | policy 1%: t, FPIR, TPIR | + margin: FPIR, TPIR "
        "| policy 0.1%: t, FPIR, TPIR | + margin: FPIR, TPIR |"
    )
    print("|---|---|---|---|---|---|")
    for size, trials in trials_at.items():
        measured = threshold_at_fpir(trials, 0.01)
        cells = [f"{rates(trials, measured)[1]:.1%} (t={measured:.4f})"]
        for target in TARGETS:
            t = calibration.threshold(size, target)
            fpir, tpir = rates(trials, t)
            with_margin = rates(trials, t, calibration.margin)
            cells += [f"{t:.4f}, {fpir:.2%}, {tpir:.1%}", f"{with_margin[0]:.2%}, {with_margin[1]:.1%}"]
        print(f"| {size} | " + " | ".join(cells) + " |")
    report_margin(trials_at[300])
    report_larger(trials_at[max(trials_at)][0], calibration)


def report_larger(everyone: Trial, calibration: Calibration) -> None:
    """What the policy means for galleries larger than LFW: its threshold, and the share of genuine
    probes within it in the 844-person gallery (an upper bound of TPIR at that size)."""
    print("\n| people | threshold @ FPIR 1% | genuine probes within it (844-person gallery) |")
    print("|---|---|---|")
    for size in (1_000, 10_000, 100_000, 1_000_000):
        t = calibration.threshold(size, 0.01)
        within = np.mean((everyone.genuine_nearest <= t) & everyone.genuine_correct)
        print(f"| {size:,} | {t:.4f} | {within:.1%} |")


def report_margin(trials: list[Trial]) -> None:
    """Whether a margin over the nearest other person helps at equal FPIR (N = 300)."""
    print("\nMargin test at N=300: accept when d1 <= t and d1 <= ratio * d2, t re-chosen for FPIR 1%")
    print("| ratio | t | FPIR | TPIR |")
    print("|---|---|---|---|")
    for ratio in (1.0, 0.95, 0.9, 0.85, 0.8, 0.7):
        t = threshold_at_fpir(trials, 0.01, ratio)
        fpir, tpir = rates(trials, t, ratio)
        print(f"| {ratio:.2f} | {t:.4f} | {fpir:.2%} | {tpir:.1%} |")


def report_several_photos(corpus: Corpus) -> None:
    """People with 3+ photos: all but the last enrolled; nearest photo vs the mean embedding."""
    people, counts = np.unique(corpus.people, return_counts=True)
    many = people[counts >= 3]
    enrolled_rows: dict[int, np.ndarray] = {int(p): np.flatnonzero(corpus.people == p) for p in many}
    probes = np.array([rows[-1] for rows in enrolled_rows.values()])
    strangers = np.flatnonzero(~np.isin(corpus.people, many))
    for label, reduce in (("nearest photo", "min"), ("mean embedding", "mean")):
        columns = []
        for rows in enrolled_rows.values():
            kept = corpus.vectors[rows[:-1]]
            if reduce == "mean":
                mean = kept.mean(axis=0)
                kept = (mean / np.linalg.norm(mean))[None]
            columns.append(kept)

        def nearest(indices: np.ndarray, columns: list[np.ndarray] = columns) -> np.ndarray:
            return np.stack([(1.0 - corpus.vectors[indices] @ c.T).min(axis=1) for c in columns], axis=1)

        genuine, stranger = nearest(probes), nearest(strangers)
        t = float(np.quantile(stranger.min(axis=1), 0.01))
        correct = genuine.argmin(axis=1) == np.arange(len(probes))
        tpir = float(np.mean(correct & (genuine.min(axis=1) <= t)))
        print(f"| {label} | {len(many)} people | {t:.4f} | {tpir:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/facegate-calibration"))
    parser.add_argument("--write", action="store_true", help="store the calibration file of the embedder")
    parser.add_argument(
        "--no-mirror", action="store_true", help="measure with the mirror pass off (no --write)"
    )
    args = parser.parse_args()
    if args.write and args.no_mirror:
        parser.error("--no-mirror measures only: the service's embedders run their mirror pass")

    name, corpus = embed_corpus(args.cache, mirror=not args.no_mirror)
    impostor, genuine = pair_distances(corpus)
    levels, distances = fmr_curve(impostor)
    midpoint, scale = fit_similarity(impostor, genuine)
    curve = Calibration(
        model=name,
        fmr=tuple(levels),
        distance=tuple(distances),
        similarity_midpoint=midpoint,
        similarity_scale=scale,
        impostor_pairs=len(impostor),
        genuine_pairs=len(genuine),
        verify_threshold=verification_threshold(corpus),
        margin=1.0,
    )
    trials = trials_by_size(corpus)
    calibration = replace(curve, margin=choose_margin(trials, curve))
    print(f"{name}: {len(corpus.keys)} images, {len(np.unique(corpus.people))} people")
    print(f"{len(impostor)} impostor pairs, {len(genuine)} genuine pairs")
    for fmr in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        print(f"  FMR {fmr:g}: distance {calibration.distance_at(fmr):.4f}")
    print(f"similarity: 50% at distance {midpoint:.4f}, scale {scale:.4f}")
    print(f"one-to-one threshold (LFW fold 1): {calibration.verify_threshold:.4f}")
    print(f"margin: {calibration.margin}")
    report_open_set(trials, calibration)
    print("\n| matching | people | t @ FPIR 1% | TPIR |")
    print("|---|---|---|---|")
    report_several_photos(corpus)
    if args.write:
        path = CALIBRATION_DIR / calibration_file(name)
        path.write_text(json.dumps(calibration.to_json(), indent=1) + "\n")
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
