"""The match policy (a false-accept target instead of a fixed threshold) and the quality gate."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from PIL import Image, ImageFilter

from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.embedding.dlib_resnet import MIRROR_SUFFIX, MODEL_NAME
from facegate.embedding.mobilefacenet import MODEL_NAME as MOBILEFACENET192
from facegate.embedding.mobilefacenet512 import MODEL_NAME as MOBILEFACENET512
from facegate.faces import Face
from facegate.gallery import Gallery
from facegate.imaging import load_image_file
from facegate.pipeline import EmbeddedFace, NoFaceError
from facegate.quality import assess
from facegate.recognition import Calibration, MatchPolicy, Recognizer
from tests.data import FACES

PORTRAIT = FACES / "portraits" / "Barack_Obama" / "fr_obama.jpg"
DLIB = f"{MODEL_NAME}{MIRROR_SUFFIX}"
# Every shipped embedder's model name, the default first.
SHIPPED = [f"{name}{MIRROR_SUFFIX}" for name in (MOBILEFACENET512, MOBILEFACENET192, MODEL_NAME)]
SIZES = (1, 10, 100, 300, 500, 1_000, 10_000, 100_000, 1_000_000)


def policy(model: str = DLIB, **settings: object) -> MatchPolicy:
    return MatchPolicy.from_settings(Settings(_env_file=None, **settings), model)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", SHIPPED)
def test_every_shipped_embedder_ships_its_calibration(model: str) -> None:
    calibration = Calibration.load(model)
    assert calibration is not None and calibration.impostor_pairs > 1_000_000
    # The one-to-one threshold lies on the model's own scale: between its 0.01% and 50% false matches.
    assert calibration.distance_at(1e-4) < calibration.verify_threshold < calibration.distance[-1]
    assert 0 < calibration.margin <= 1
    # The service uses the calibration's one-to-one threshold and margin unless they are set.
    assert (policy(model).verify_threshold, policy(model).margin) == (
        calibration.verify_threshold,
        calibration.margin,
    )
    assert policy(model, face_verify_threshold=0.3, face_match_margin=0.9).verify_threshold == 0.3


def test_the_default_embedder_is_the_first_shipped_one() -> None:
    assert Settings(_env_file=None).face_embedder == "mobilefacenet512"
    assert SHIPPED[0].startswith("mobilefacenet512")


@pytest.mark.parametrize("model", SHIPPED)
def test_the_threshold_tightens_as_the_gallery_grows(model: str) -> None:
    thresholds = [policy(model).threshold(size) for size in SIZES]
    assert all(t.source == "fpir" and t.fpir_target == 0.01 for t in thresholds)
    distances = [t.distance for t in thresholds]
    assert all(a > b for a, b in itertools.pairwise(distances)), distances
    assert policy(model, face_match_fpir=0.001).threshold(300).distance < distances[SIZES.index(300)]


@pytest.mark.parametrize("model", SHIPPED)
def test_the_threshold_keeps_the_predicted_false_accept_rate_at_the_target(model: str) -> None:
    """FPIR(N, t) = 1 − (1 − FMR(t))^N at the chosen t, where the curve was measured."""
    calibration = Calibration.load(model)
    assert calibration is not None
    levels, distances = np.log(calibration.fmr), np.array(calibration.distance)
    for size in (1, 10, 100, 1_000):  # per comparison 1% ... 1e-5: within the measured curve
        t = calibration.threshold(size, 0.01)
        fmr = math.exp(np.interp(t, distances, levels))
        assert 1 - (1 - fmr) ** size == pytest.approx(0.01, rel=0.05), size
    # Beyond it (rates LFW's pairs cannot show) the extension keeps tightening.
    assert calibration.threshold(10_000, 0.01) < distances[0] < calibration.threshold(1_000, 0.01)


def test_a_set_or_requested_threshold_wins() -> None:
    fixed = policy(face_match_threshold=0.05).threshold(10_000)
    assert (fixed.distance, fixed.source, fixed.fpir_target) == (0.05, "setting", None)
    requested = policy(face_match_threshold=0.05).threshold(10_000, requested=0.07)
    assert (requested.distance, requested.source) == (0.07, "request")


def test_a_match_needs_the_threshold_and_the_margin() -> None:
    rule = policy(face_match_threshold=0.06, face_match_margin=0.8)
    threshold = rule.threshold(100)
    assert rule.is_match(0.04, None, threshold)  # the only person
    assert rule.is_match(0.04, 0.05, threshold)  # 0.04 <= 0.8 × 0.05
    assert not rule.is_match(0.045, 0.05, threshold)  # as near as the next person: ambiguous
    assert not rule.is_match(0.061, None, threshold) and not rule.is_match(None, None, threshold)


@pytest.mark.parametrize("model", SHIPPED)
def test_similarity_is_a_probability_that_falls_with_the_distance(model: str) -> None:
    rule = policy(model)
    values = [rule.similarity(d) for d in np.linspace(0, 2, 41)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert values[0] > 0.99 and values[-1] < 0.01


def test_without_a_calibration_a_fixed_threshold_applies() -> None:
    rule = MatchPolicy.from_settings(Settings(_env_file=None), "someone-elses-model")
    threshold = rule.threshold(1_000)
    assert threshold.source == "setting" and threshold.distance > 0


# --- quality gate --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN()


def main_face(detector: MTCNN, image: np.ndarray) -> Face:
    faces = detector.detect(image)
    assert faces
    return max(faces, key=lambda face: face.area)


def problem(detector: MTCNN, image: np.ndarray) -> str | None:
    return assess(image, main_face(detector, image)).problem(Settings(_env_file=None).quality_bounds())


def test_a_good_portrait_passes(detector: MTCNN) -> None:
    assert problem(detector, load_image_file(PORTRAIT)) is None


def test_a_tiny_face_is_low_quality(detector: MTCNN) -> None:
    image = Image.fromarray(load_image_file(PORTRAIT))
    tiny = image.resize((image.width // 12, image.height // 12), Image.BOX)
    padded = Image.new("RGB", (400, 400), (128, 128, 128))
    padded.paste(tiny, (150, 150))
    found = problem(detector, np.asarray(padded))
    assert found is not None and "too small" in found


def test_a_blurred_face_is_low_quality(detector: MTCNN) -> None:
    image = Image.fromarray(load_image_file(PORTRAIT))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(image.width / 60)))
    found = problem(detector, blurred)
    assert found is not None and "blurred" in found


def test_a_turned_face_is_low_quality(detector: MTCNN) -> None:
    # A real three-quarter profile (looked at): Spielberg turned to his left, beside Tom Cruise.
    image = load_image_file(
        FACES / "lfw" / "lfw-deepfunneled" / "Steven_Spielberg" / "Steven_Spielberg_0002.jpg"
    )
    faces = detector.detect(image)
    centre = min(
        faces, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - 125) + abs((f.box[1] + f.box[3]) / 2 - 125)
    )
    found = assess(image, centre).problem(Settings(_env_file=None).quality_bounds())
    assert found is not None and "turned" in found


# --- the Recognizer: the gallery search and the decision for every caller ---------------------


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def _embedded(vector: np.ndarray, problem: str | None = None) -> EmbeddedFace:
    face = Face((0.0, 0.0, 100.0, 100.0), 0.99, np.zeros((5, 2)))
    return EmbeddedFace(face, vector, problem)


def test_the_recognizer_answers_each_face_in_order_and_skips_poor_ones(gallery: Gallery) -> None:
    rng = np.random.default_rng(7)
    people = [_unit(rng.standard_normal(gallery.dim)) for _ in range(3)]
    ids = [gallery.add_user(f"person {n}", vector, (0, 0, 100, 100)).id for n, vector in enumerate(people)]
    recognizer = Recognizer(gallery, MatchPolicy(None, 0.01, 0.2, 0.2, margin=0.8))
    near_second = _unit(people[1] + 0.05 * rng.standard_normal(gallery.dim))
    stranger = _unit(rng.standard_normal(gallery.dim))
    poor = _embedded(people[0], problem="the face is too small")
    result = recognizer.identify([_embedded(near_second), poor, _embedded(stranger), _embedded(people[2])])
    first, skipped, unknown, last = result.faces
    assert first.person is not None and first.person.user_id == ids[1]
    assert skipped.nearest is None and skipped.person is None  # not searched, though it is person 0
    assert unknown.nearest is not None and unknown.person is None
    assert (
        last.person is not None
        and last.person.user_id == ids[2]
        and last.distance == pytest.approx(0, abs=1e-5)
    )
    assert result.threshold.distance == 0.2 and result.largest is first


def test_the_recognizer_needs_a_face_and_names_no_one_from_an_empty_gallery(gallery: Gallery) -> None:
    recognizer = Recognizer(gallery, MatchPolicy(None, 0.01, None, 0.2))
    with pytest.raises(NoFaceError):
        recognizer.identify([])
    alone = recognizer.identify([_embedded(_unit(np.ones(gallery.dim)))]).largest
    assert alone.nearest is None and not alone.is_match and alone.similarity is None
