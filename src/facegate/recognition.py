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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from facegate.config import UNCALIBRATED_MATCH_THRESHOLD, Settings
from facegate.gallery import DEFAULT_COLLECTION, Gallery, Match
from facegate.pipeline import EmbeddedFace, NoFaceError

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
    verify_threshold: float  # the one-to-one threshold: best accuracy on LFW's fold 1
    margin: float  # FACE_MATCH_MARGIN's default for this model (1 = none): what measured best

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
        margin: float | None = None,
        verify_threshold: float | None = None,
    ) -> None:
        """`fixed`: FACE_MATCH_THRESHOLD when set; `fallback`: the fixed threshold used when the
        embedder has no calibration (a user-supplied model), for searches and one-to-one
        comparisons alike; `margin` (FACE_MATCH_MARGIN, see the module docstring; 1 = none) and
        `verify_threshold` (FACE_VERIFY_THRESHOLD, the one-to-one comparison's): None = the
        calibration's."""
        self.calibration = calibration
        self.fpir = fpir
        self.fixed = fallback if fixed is None and calibration is None else fixed
        self.margin = margin if margin is not None else calibration.margin if calibration else 1.0
        self.verify_threshold = (
            verify_threshold
            if verify_threshold is not None
            else calibration.verify_threshold
            if calibration
            else fallback
        )

    @classmethod
    def from_settings(cls, settings: Settings, model: str) -> MatchPolicy:
        """The policy of `model` (the embedder's name) under FACE_MATCH_FPIR / FACE_MATCH_THRESHOLD."""
        calibration = Calibration.load(model)
        fixed, fallback = settings.face_match_threshold, UNCALIBRATED_MATCH_THRESHOLD
        if calibration is None and fixed is None:
            logger.warning(
                "no false-match calibration for the embedder %s: matching at the fixed distance %.3f "
                "(set FACE_MATCH_THRESHOLD and FACE_VERIFY_THRESHOLD, or run benchmarks/openset.py --write)",
                model,
                fallback,
            )
        return cls(
            calibration,
            settings.face_match_fpir,
            fixed,
            fallback,
            settings.face_match_margin,
            settings.face_verify_threshold,
        )

    def distance_at_fmr(self, fmr: float, fallback: float) -> float:
        """The distance within which a share `fmr` of pairs of different people fall, for a bound
        set as a false-match rate (so that it carries over to every calibrated model); `fallback`
        without a calibration."""
        return fallback if self.calibration is None else self.calibration.distance_at(fmr)

    @property
    def fpir_target(self) -> float | None:
        """FACE_MATCH_FPIR while it decides; None when a fixed threshold does."""
        return None if self.fixed is not None else self.fpir

    def threshold(self, gallery_size: int, requested: float | None = None) -> Threshold:
        if requested is not None:
            return Threshold(requested, "request", None, gallery_size)
        if self.fixed is not None:
            return Threshold(self.fixed, "setting", None, gallery_size)
        assert self.calibration is not None  # __init__: no calibration means a fixed threshold
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

    def verify(self, first: np.ndarray, second: np.ndarray, requested: float | None = None) -> Verification:
        """Whether two embeddings are the same person: the one-to-one rule (/verify, a photo added
        to a person)."""
        return self.verifies(cosine_distance(first, second), requested)

    def verifies(self, distance: float, requested: float | None = None) -> Verification:
        """The one-to-one decision for a distance already measured (the gallery's, to a person's
        nearest stored face)."""
        threshold = self.verify_threshold if requested is None else requested
        return Verification(distance <= threshold, distance, self.similarity(distance), threshold)


@dataclass(frozen=True, slots=True)
class Verification:
    verified: bool
    distance: float
    similarity: float
    threshold: float


@dataclass(frozen=True, slots=True)
class Identified:
    """One face of a photo and who it is: no candidates when the face was not searched (its
    `problem` says why) or the gallery is empty."""

    face: EmbeddedFace
    candidates: tuple[Match, ...]  # the nearest distinct people asked for (top_k), nearest first
    is_match: bool  # whether the nearest of them is the person
    similarity: float | None

    @property
    def nearest(self) -> Match | None:
        return self.candidates[0] if self.candidates else None

    @property
    def distance(self) -> float | None:
        return None if self.nearest is None else self.nearest.distance

    @property
    def person(self) -> Match | None:
        """The person the face was recognised as; None for a stranger."""
        return self.nearest if self.is_match else None


@dataclass(frozen=True, slots=True)
class Recognition:
    """Every face of a photo, largest first, against the gallery at one threshold."""

    faces: list[Identified]
    threshold: Threshold

    @property
    def largest(self) -> Identified:
        return self.faces[0]


class Recognizer:
    """Who is in a photo: the gallery search and the match decision, for every caller (the API's
    /recognize and streams, the liveness verdict, the CLI)."""

    def __init__(self, gallery: Gallery, policy: MatchPolicy) -> None:
        self.gallery = gallery
        self.policy = policy

    def identify(
        self,
        faces: Sequence[EmbeddedFace],
        threshold: float | None = None,
        collection: str = DEFAULT_COLLECTION,
        top_k: int = 1,
    ) -> Recognition:
        """Each face (largest first, as `Pipeline.analyse` gives them) against the collection; faces
        with a quality problem are not searched. `threshold` fixes the distance for this search;
        `top_k` nearest distinct people are kept as each face's candidates."""
        if not faces:
            raise NoFaceError("no face found in the image")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, not {top_k}")
        searched = [face.embedding for face in faces if face.problem is None]
        # At least two people: the margin rule compares the nearest with the next one.
        k = max(2, top_k)
        found = iter(self.gallery.search(np.stack(searched), k, collection) if searched else [])
        # The collection's size, not the database's: a stranger is compared with its people only.
        chosen = self.policy.threshold(self.gallery.size(collection), threshold)
        decided = [
            self._decide(face, None if face.problem is not None else next(found), chosen, top_k)
            for face in faces
        ]
        return Recognition(decided, chosen)

    def _decide(
        self, face: EmbeddedFace, people: list[Match] | None, chosen: Threshold, top_k: int
    ) -> Identified:
        if not people:
            return Identified(face, (), is_match=False, similarity=None)
        nearest = people[0]
        second = people[1].distance if len(people) > 1 else None
        return Identified(
            face,
            tuple(people[:top_k]),
            is_match=self.policy.is_match(nearest.distance, second, chosen),
            similarity=self.policy.similarity(nearest.distance),
        )
