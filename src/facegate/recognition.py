"""What counts as a match: the one place where a face's distance to the gallery becomes a name.

A search of a gallery of N people gives a stranger N chances to be close to someone, so one fixed
distance threshold protects less and less as the gallery grows. The policy here fixes instead the
false-positive identification rate (FPIR): the share of searches by a never-enrolled person that
may name someone. With the embedder's false-match curve FMR(t) (the share of pairs of different
people within distance t, measured on LFW by `benchmarks/openset.py`), a gallery of N people
needs the threshold t with

    FPIR(N, t) ≈ 1 − (1 − FMR(t))^N   ⇔   FMR(t) = 1 − (1 − FPIR)^(1/N),

so the threshold tightens as the gallery grows. An explicit `FACE_MATCH_THRESHOLD`, or a request's
own `threshold`, fixes the distance instead.

A match also needs a margin: the nearest person must be clearly nearer than the next one
(distance at most `FACE_MATCH_MARGIN` times the second-nearest person's). A stranger's nearest and
second-nearest people are often about as far (a face that looks like many), a genuine probe's are
not: on LFW this halved the strangers matched at 500-844 people for under one point of genuine
probes named (BENCHMARKS.md, Open-set identification).

The similarity of a face to its nearest person is P(same person | distance) at equal priors, a
logistic fit on the same LFW pairs.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from facegate.config import UNCALIBRATED_MATCH_THRESHOLD, Settings

logger = logging.getLogger(__name__)

CALIBRATION_DIR = Path(__file__).parent / "calibration"
# Below the measured curve (rates too small to measure on LFW's ~1.25 million impostor pairs),
# log FMR is extended linearly in the distance, with the slope of the curve's lowest decade. The
# tail of the impostor distances falls faster than that (roughly Gaussian), so it errs strict.
TAIL_DECADE = 10.0

ThresholdSource = Literal["fpir", "setting", "request"]


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """1 − cos(a, b) of two unit vectors: the distance every comparison uses (the gallery's SQL `<=>`
    computes the same for stored faces)."""
    return float(1.0 - np.dot(a, b))


def calibration_file(model: str) -> str:
    """The file name of `model`'s calibration (model names hold `+` and other punctuation)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", model) + ".json"


@dataclass(frozen=True)
class Calibration:
    """An embedder's false-match curve and similarity score, as `benchmarks/openset.py` measured them."""

    model: str
    fmr: tuple[float, ...]  # ascending false-match rates ...
    distance: tuple[float, ...]  # ... and the distance at which each is reached
    similarity_midpoint: float  # distance at which P(same) = 0.5
    similarity_scale: float
    impostor_pairs: int
    genuine_pairs: int

    @classmethod
    def load(cls, model: str) -> Calibration | None:
        path = CALIBRATION_DIR / calibration_file(model)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        data["fmr"], data["distance"] = tuple(data["fmr"]), tuple(data["distance"])
        return cls(**data)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def distance_at(self, fmr: float) -> float:
        """The distance within which a share `fmr` of impostor pairs falls (log-linear interpolation)."""
        levels, distances = np.log(self.fmr), np.asarray(self.distance)
        target = math.log(max(fmr, 1e-300))
        if target >= levels[0]:
            return float(np.interp(target, levels, distances))
        tail = levels <= levels[0] + math.log(TAIL_DECADE)
        slope, intercept = np.polyfit(distances[tail], levels[tail], 1)
        return max(0.0, float((target - intercept) / slope))

    def threshold(self, gallery_size: int, fpir: float) -> float:
        """The distance threshold that keeps a stranger's chance to match anyone at `fpir`."""
        per_comparison = -math.expm1(math.log1p(-fpir) / max(1, gallery_size))
        return self.distance_at(per_comparison)

    def similarity(self, distance: float) -> float:
        """P(same person | distance) at equal priors, in [0, 1]."""
        z = (distance - self.similarity_midpoint) / self.similarity_scale
        return 1.0 / (1.0 + math.exp(min(z, 700.0)))


@dataclass(frozen=True, slots=True)
class Threshold:
    """The threshold of one search, and why."""

    distance: float
    source: ThresholdSource
    fpir_target: float | None
    gallery_size: int


class MatchPolicy:
    """Decides the threshold of each search and whether a distance is a match."""

    def __init__(
        self,
        calibration: Calibration | None,
        fpir: float,
        fixed: float | None,
        fallback: float,
        margin: float = 1.0,
    ) -> None:
        """`fixed`: FACE_MATCH_THRESHOLD when set; `fallback`: the fixed threshold used when the
        embedder has no calibration (a user-supplied model); `margin`: see the module docstring
        (1 = none)."""
        self.calibration = calibration
        self.fpir = fpir
        self.fixed = fixed if calibration is not None else (fixed if fixed is not None else fallback)
        self.margin = margin

    @classmethod
    def from_settings(cls, settings: Settings, model: str) -> MatchPolicy:
        """The policy of `model` (the embedder's name) under FACE_MATCH_FPIR / FACE_MATCH_THRESHOLD."""
        calibration = Calibration.load(model)
        fixed, fallback = settings.face_match_threshold, UNCALIBRATED_MATCH_THRESHOLD
        if calibration is None and fixed is None:
            logger.warning(
                "no false-match calibration for the embedder %s: matching at the fixed distance %.3f "
                "(set FACE_MATCH_THRESHOLD, or run benchmarks/openset.py --write)",
                model,
                fallback,
            )
        return cls(calibration, settings.face_match_fpir, fixed, fallback, settings.face_match_margin)

    @property
    def fpir_target(self) -> float | None:
        """FACE_MATCH_FPIR while it decides; None when a fixed threshold does."""
        return None if self.fixed is not None else self.fpir

    def threshold(self, gallery_size: int, requested: float | None = None) -> Threshold:
        if requested is not None:
            return Threshold(requested, "request", None, gallery_size)
        if self.fixed is not None or self.calibration is None:
            return Threshold(float(self.fixed or 0.0), "setting", None, gallery_size)
        return Threshold(self.calibration.threshold(gallery_size, self.fpir), "fpir", self.fpir, gallery_size)

    def similarity(self, distance: float) -> float:
        """The calibrated similarity of a distance; without a calibration, 1 − distance clipped to [0, 1]."""
        if self.calibration is None:
            return min(1.0, max(0.0, 1.0 - distance))
        return self.calibration.similarity(distance)

    def is_match(self, nearest: float | None, second: float | None, threshold: Threshold) -> bool:
        """Whether the nearest person (at `nearest`; the next one at `second`, None if there is
        none) is the person searched for: the one rule for /recognize, streams, liveness and the CLI."""
        if nearest is None or nearest > threshold.distance:
            return False
        return second is None or nearest <= self.margin * second
