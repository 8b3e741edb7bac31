"""The pipeline over the `Detector` interface: a second detector, face selection, metering, closing.

`RecordedDetector` is a real second implementation: it answers with the detections the reference
MTCNN (ipazc/mtcnn on TensorFlow) recorded for the shared photos. A pipeline built on it runs
unchanged, which is what the interface promises.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from functools import cache

import anyio
import numpy as np
import pytest

from facegate.api.metrics import MeteredPipeline, Metrics
from facegate.detection import MTCNN, DetectionParams, Detector
from facegate.embedding import DlibEmbedder
from facegate.faces import DEFAULT_DETECTION, KEYPOINT_NAMES, Face
from facegate.imaging import load_image_file
from facegate.pipeline import NoFaceError, Pipeline
from facegate.recognition import cosine_distance
from facegate.runtime import RuntimeOptions
from tests.data import FACES, REFERENCE

pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared reference data not present")

# One subject and a tiny face far behind (17 px beside 129 px): a portrait, not a group.
PORTRAIT = "portraits/Katy_Perry/deepface_img46.jpg"
TWO_PEOPLE = "groups/fr_two_people.jpg"  # two faces of about the same size
GROUP = "groups/deepface_selfie-many-people.jpg"  # five faces, 68 to 130 px wide


@cache
def recorded() -> dict[str, list[dict]]:
    """The reference's detections at the default settings, by photo path."""
    entries = json.loads((REFERENCE / "mtcnn_tf.json").read_text())["images"]
    return {entry["path"]: entry["results"]["default"] for entry in entries}


def fingerprint(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest() + str(image.shape)


def face_of(entry: dict) -> Face:
    x1, y1, x2, y2 = (float(v) for v in entry["box"])
    points = np.array([entry["keypoints"][name] for name in KEYPOINT_NAMES], dtype=np.float64)
    return Face(box=(x1, y1, x2, y2), score=entry["score"], keypoints=points)


class RecordedDetector(Detector):
    """The reference implementation's recorded faces for the photos it was given, at the defaults."""

    name = "recorded-mtcnn-tf"

    def __init__(self, paths: list[str]) -> None:
        self._faces = {fingerprint(load_image_file(FACES / path)): recorded()[path] for path in paths}
        self.closed = False

    def detect(self, image: np.ndarray, params: DetectionParams = DEFAULT_DETECTION) -> list[Face]:
        assert params == DEFAULT_DETECTION, "only the default settings were recorded"
        faces = [face_of(entry) for entry in self._faces[fingerprint(image)]]
        return sorted(faces, key=lambda face: face.score, reverse=True)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def embedder() -> DlibEmbedder:
    return DlibEmbedder()


@pytest.fixture(scope="module")
def pipeline(embedder: DlibEmbedder) -> Pipeline:
    return Pipeline(RecordedDetector([PORTRAIT, TWO_PEOPLE, GROUP]), embedder)


def test_a_pipeline_on_another_detector_uses_its_faces(pipeline: Pipeline, embedder: DlibEmbedder) -> None:
    group = pipeline.analyse(load_image_file(FACES / GROUP))
    expected = sorted(
        recorded()[GROUP], key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])
    )
    assert [list(found.face.box) for found in group] == [entry["box"] for entry in reversed(expected)]
    # The portrait's subject, embedded as on MTCNN's own box: the same person to the embedder.
    image = load_image_file(FACES / PORTRAIT)
    subject = pipeline.single_face(image)
    assert list(subject.face.box) == recorded()[PORTRAIT][0]["box"]
    ours = Pipeline(MTCNN(RuntimeOptions(threads=1)), embedder)
    assert cosine_distance(subject.embedding, ours.single_face(image).embedding) < 0.01


def test_the_face_is_the_largest_and_background_faces_do_not_compete(pipeline: Pipeline) -> None:
    portrait = pipeline.select_face(load_image_file(FACES / PORTRAIT))
    assert portrait.comparable == 1 and portrait.face is not None and portrait.face.width > 100
    group = pipeline.select_face(load_image_file(FACES / GROUP))
    assert group.comparable == 5 and group.face is not None
    assert group.face.width == max(entry["box"][2] - entry["box"][0] for entry in recorded()[GROUP])
    assert pipeline.largest_face(load_image_file(FACES / TWO_PEOPLE)).face.width > 140
    with pytest.raises(NoFaceError, match="found 2 faces of similar size"):
        pipeline.single_face(load_image_file(FACES / TWO_PEOPLE))


def test_metered_pipeline_times_the_detector_and_embedder_it_wraps(pipeline: Pipeline) -> None:
    metrics = Metrics()
    metered = MeteredPipeline(pipeline, metrics)
    image = load_image_file(FACES / PORTRAIT)
    metered.single_face(image)
    metered.analyse(image)
    text = metrics.render(None, anyio.CapacityLimiter(1)).decode()
    assert 'facegate_inference_stage_seconds_count{stage="detect"} 2.0' in text
    assert 'facegate_inference_stage_seconds_count{stage="embed"} 2.0' in text


def test_closing_a_pipeline_closes_its_detector(embedder: DlibEmbedder) -> None:
    detector = RecordedDetector([])
    Pipeline(detector, embedder).close()
    assert detector.closed


def test_closing_mtcnn_stops_its_lanes() -> None:
    image = load_image_file(FACES / PORTRAIT)
    before = set(threading.enumerate())
    detector = MTCNN(RuntimeOptions(threads=3))
    assert detector.detect(image)
    lanes = [t for t in set(threading.enumerate()) - before if t.name.startswith("mtcnn-lane")]
    assert lanes
    detector.close()
    assert not any(thread.is_alive() for thread in lanes)
    with pytest.raises(RuntimeError, match="closed"):
        detector.detect(image)


def test_warm_loads_both_shape_predictors_ahead_of_use() -> None:
    """In a fresh process: after `warm`, alignment and landmarks need no loading (dlib's loader is
    taken away), so the first request after startup does not pay for it."""
    x1, y1, x2, y2 = recorded()[PORTRAIT][0]["box"]
    script = f"""
import dlib
from facegate import dlib_models
from facegate.embedding.alignment import face_chips
from facegate.faces import Face
from facegate.imaging import load_image_file
from facegate.liveness.landmarks import landmarks68
import numpy as np

dlib_models.warm()
dlib.shape_predictor = None
image = load_image_file({str(FACES / PORTRAIT)!r})
face = Face(box=({x1}, {y1}, {x2}, {y2}), score=1.0, keypoints=np.zeros((5, 2)))
assert face_chips(image, [face]).shape == (1, 150, 150, 3)
assert landmarks68(image, face).shape == (68, 2)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
