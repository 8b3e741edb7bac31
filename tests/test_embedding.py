"""The dlib ResNet embedders as the pipeline uses them: shape, norm, batching, identity, factory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from facegate.config import Settings
from facegate.detection import MTCNN, DetectionParams
from facegate.embedding import DlibEmbedder, DlibOnnxEmbedder, Embedder, create_embedder
from facegate.embedding.alignment import face_chips
from facegate.embedding.dlib_resnet import unit_descriptors
from facegate.faces import Face
from facegate.imaging import load_image_file
from tests.data import FACES

PORTRAITS = FACES / "portraits"
# Two photos each of four people (different photos, not resized copies).
PEOPLE = {
    "Barack_Obama": ("fr_obama.jpg", "fr_obama2.jpg"),
    "Joe_Biden": ("fr_biden.jpg", "fr_biden2.jpg"),
    "Jack_Dorsey": ("deepface_img16.jpg", "deepface_img17.jpg"),
    "Scarlett_Johansson": ("deepface_img8.jpg", "deepface_img9.jpg"),
}


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN()


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> DlibOnnxEmbedder:
    return DlibOnnxEmbedder(tmp_path_factory.mktemp("models"))


def largest(detector: MTCNN, image: np.ndarray) -> Face:
    """The portrait's subject; faces under a fifth of the image side are not even searched for."""
    faces = detector.detect(image, DetectionParams(min_face_size=max(20, min(image.shape[:2]) // 5)))
    return max(faces, key=lambda face: face.area)


@pytest.fixture(scope="module")
def group(detector: MTCNN) -> tuple[np.ndarray, list[Face]]:
    image = load_image_file(FACES / "groups" / "deepface_selfie-many-people.jpg")
    faces = detector.detect(image)
    assert len(faces) >= 5
    return image, faces


def test_unit_vectors_of_the_right_shape(
    embedder: DlibOnnxEmbedder, group: tuple[np.ndarray, list[Face]]
) -> None:
    image, faces = group
    vectors = embedder.embed(image, faces)
    assert vectors.shape == (len(faces), 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    assert embedder.embed(image, []).shape == (0, 128)


def test_batch_equals_one_by_one(embedder: DlibOnnxEmbedder, group: tuple[np.ndarray, list[Face]]) -> None:
    image, faces = group
    single = np.concatenate([embedder.embed(image, [face]) for face in faces])
    np.testing.assert_allclose(embedder.embed(image, faces), single, atol=1e-5)


def test_mirror_average_is_the_mean_of_unit_views() -> None:
    raw = np.random.default_rng(0).normal(size=(4, 128))  # two faces, then their mirror images
    views = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    expected = views[:2] + views[2:]
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(unit_descriptors(raw, 2), expected, atol=1e-6)


def test_same_person_is_closer_than_different_people(detector: MTCNN, embedder: DlibOnnxEmbedder) -> None:
    vectors = {}
    for person, files in PEOPLE.items():
        for file in files:
            image = load_image_file(PORTRAITS / person / file)
            vectors[person, file] = embedder.embed(image, [largest(detector, image)])[0]
    keys = list(vectors)
    same, different = [], []
    for i, first in enumerate(keys):
        for second in keys[i + 1 :]:
            distance = 1.0 - float(vectors[first] @ vectors[second])
            (same if first[0] == second[0] else different).append(distance)
    assert max(same) < min(different), (sorted(same), sorted(different)[:3])
    assert max(same) < 0.09 < min(different)  # around the LFW-calibrated one-to-one threshold


def test_threads_share_one_embedder(embedder: DlibOnnxEmbedder, group: tuple[np.ndarray, list[Face]]) -> None:
    image, faces = group
    expected = embedder.embed(image, faces)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: embedder.embed(image, faces), range(8)))
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_dlib_runtime_is_thread_safe(detector: MTCNN) -> None:
    image = load_image_file(PORTRAITS / "Joe_Biden" / "fr_biden.jpg")
    face = largest(detector, image)
    reference = DlibEmbedder(mirror=False)
    expected = reference.embed(image, [face])
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: reference.embed(image, [face]), range(3)))
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_alignment_refuses_a_non_rgb_image(group: tuple[np.ndarray, list[Face]]) -> None:
    image, faces = group
    with pytest.raises(ValueError, match="RGB uint8"):
        face_chips(image.astype(np.float32), faces)
    with pytest.raises(ValueError, match="RGB uint8"):
        face_chips(image[..., 0], faces)


@pytest.mark.parametrize(("setting", "kind"), [("onnx", DlibOnnxEmbedder), ("dlib", DlibEmbedder)])
def test_factory(tmp_path: Path, setting: str, kind: type[Embedder]) -> None:
    embedder = create_embedder(Settings(face_embedder=setting, facegate_data_dir=tmp_path))
    assert isinstance(embedder, kind)
    assert (embedder.name, embedder.dim) == ("dlib_resnet_v1+mirror", 128)
    converted = (tmp_path / "models").exists()
    assert converted == (setting == "onnx")  # the ONNX cache lives in FACEGATE_DATA_DIR/models
