"""The default embedder (FACE_EMBEDDER=mobilefacenet512): the npm package's fr_feature.onnx rebuilt
with our input and output, checked against the published graph itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.embedding import create_embedder
from facegate.embedding.arcface import arcface_chips
from facegate.embedding.mobilefacenet512 import DIM, MobileFaceNet512Embedder
from facegate.embedding.npm_models import FR_FEATURE, model_file
from facegate.faces import Face
from facegate.imaging import load_image_file
from facegate.recognition import cosine_distance
from facegate.runtime import RuntimeOptions
from tests.data import FACES
from tests.support import assert_unit_and_people_apart

PEOPLE = {
    "obama": [FACES / "portraits/Barack_Obama/fr_obama1.jpg", FACES / "portraits/Barack_Obama/fr_obama3.jpg"],
    "jolie": [
        FACES / "portraits/Angelina_Jolie/deepface_img5.jpg",
        FACES / "portraits/Angelina_Jolie/deepface_img6.jpg",
    ],
}


@pytest.fixture(scope="module")
def source() -> Path:
    """The file set-up fetched (checked against its pinned checksum)."""
    return model_file(FR_FEATURE, Settings().facegate_model_dir)


@pytest.fixture(scope="module")
def embedder(source: Path, tmp_path_factory: pytest.TempPathFactory) -> MobileFaceNet512Embedder:
    return MobileFaceNet512Embedder(
        source.parent, tmp_path_factory.mktemp("models"), runtime=RuntimeOptions(threads=1)
    )


@pytest.fixture(scope="module")
def faces() -> dict[str, list[tuple[np.ndarray, Face]]]:
    detector = MTCNN(RuntimeOptions(threads=1))
    found = {}
    for person, paths in PEOPLE.items():
        images = [load_image_file(path) for path in paths]
        found[person] = [(image, max(detector.detect(image), key=lambda f: f.area)) for image in images]
    return found


def published(source: Path, crops: np.ndarray) -> np.ndarray:
    """The package's own graph, fed as it was exported: one BGR face at a time, (x − 127) / 128."""
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    rows = ((crops[..., ::-1].astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2)
    return np.concatenate([session.run(None, {"input": np.ascontiguousarray(row[None])})[0] for row in rows])


def test_the_rebuilt_graph_gives_the_published_graphs_vectors(
    source: Path, embedder: MobileFaceNet512Embedder, faces: dict[str, list[tuple[np.ndarray, Face]]]
) -> None:
    crops = np.concatenate(
        [arcface_chips(image, [face]) for items in faces.values() for image, face in items]
    )
    ours = embedder.descriptors(crops)  # one batch of four
    assert ours.shape == (len(crops), DIM)
    np.testing.assert_allclose(ours, published(source, crops), atol=1e-5)
    np.testing.assert_allclose(embedder.descriptors(crops[:1]), ours[:1], atol=1e-5)


def test_vectors_are_unit_and_tell_people_apart(
    embedder: MobileFaceNet512Embedder, faces: dict[str, list[tuple[np.ndarray, Face]]]
) -> None:
    vectors = {
        person: np.concatenate([embedder.embed(image, [face]) for image, face in items])
        for person, items in faces.items()
    }
    assert_unit_and_people_apart(vectors, DIM)
    # Mirror averaging: the embedder's vector is neither view's alone.
    image, face = faces["obama"][0]
    crops = arcface_chips(image, [face])
    plain = embedder.descriptors(crops)[0]
    assert cosine_distance(vectors["obama"][0], plain / np.linalg.norm(plain)) > 1e-4


def test_it_is_the_default_and_names_itself(source: Path, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, facegate_data_dir=tmp_path, facegate_model_dir=source.parent)
    embedder = create_embedder(settings)
    assert isinstance(embedder, MobileFaceNet512Embedder)
    assert (embedder.name, embedder.dim) == ("mobilefacenet512_faceplugin_v1+mirror", 512)
