"""ArcFace plumbing: keypoint alignment, model loading, batching, normalisation and refusals.

The model is a tiny ONNX graph with insightface's signature (N×3×112×112 in, N×512 out) built
here with the onnx helper API: global average pool per channel, then a fixed 3 → 512 projection,
so the expected output of a uniform image can be computed by hand.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facegate.chips import TEMPLATE, similarity_transform
from facegate.config import Settings
from facegate.embedding import ArcFaceEmbedder, create_embedder
from facegate.embedding.arcface import arcface_chips
from facegate.faces import Face

PROJECTION = np.random.default_rng(7).normal(size=(3, 512)).astype(np.float32)


def tiny_model(path: Path, batch: int | str = "N", size: int = 112) -> Path:
    """GlobalAveragePool → Flatten → MatMul(PROJECTION), input (batch, 3, size, size)."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["input.1"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "projection"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, 512])],
        [numpy_helper.from_array(PROJECTION, "projection")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def face_at(keypoints: np.ndarray) -> Face:
    x1, y1 = keypoints.min(axis=0) - 20
    x2, y2 = keypoints.max(axis=0) + 20
    return Face(box=(x1, y1, x2, y2), score=0.99, keypoints=keypoints)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def similarity(angle_degrees: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    angle = np.deg2rad(angle_degrees)
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([rotation, np.array(shift)[:, None]])


def test_similarity_transform_recovers_a_known_transform() -> None:
    known = similarity(-23.0, 1.7, (31.0, -12.5))
    source = np.random.default_rng(1).uniform(0, 200, size=(5, 2))
    estimate = similarity_transform(source, apply(known, source))
    np.testing.assert_allclose(estimate, known, atol=1e-9)


def test_warped_keypoints_land_on_the_template() -> None:
    """Bright dots at known keypoints of a rotated, scaled face end up on the template's points."""
    to_image = similarity(17.0, 2.3, (120.0, 60.0))  # template coordinates → image pixels
    keypoints = apply(to_image, TEMPLATE)
    height, width = 420, 400
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), np.uint8)
    for x, y in keypoints:
        dot = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 3.0**2))
        image[..., 1] = np.maximum(image[..., 1], (255 * dot).astype(np.uint8))
    chip = arcface_chips(image, [face_at(keypoints)])[0, ..., 1].astype(np.float64)
    cy, cx = np.mgrid[0:112, 0:112]
    for tx, ty in TEMPLATE:
        window = (np.abs(cx - tx) < 6) & (np.abs(cy - ty) < 6)
        weight = chip * window
        found = np.array([(weight * cx).sum(), (weight * cy).sum()]) / weight.sum()
        assert np.hypot(*(found - (tx, ty))) < 1.0, (found, (tx, ty))


def uniform_face_image(rgb: tuple[int, int, int]) -> tuple[np.ndarray, Face]:
    """A 300 × 300 image of one colour with a face whose 112 × 112 crop lies inside it."""
    image = np.empty((300, 300, 3), np.uint8)
    image[...] = rgb
    return image, face_at(TEMPLATE * 2.0 + 40.0)


def expected_embedding(rgb: tuple[int, int, int]) -> np.ndarray:
    scaled = (np.array(rgb, np.float64) - 127.5) / 127.5  # insightface's input scaling, RGB order
    vector = scaled @ PROJECTION
    return vector / np.linalg.norm(vector)


@pytest.fixture
def model_path(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "w600k_tiny.onnx")


def test_normalisation_and_channel_order(model_path: Path) -> None:
    embedder = ArcFaceEmbedder(model_path)
    for rgb in [(255, 0, 0), (0, 200, 30), (10, 20, 250)]:
        image, face = uniform_face_image(rgb)
        np.testing.assert_allclose(embedder.embed(image, [face])[0], expected_embedding(rgb), atol=1e-5)


def test_batch_equals_one_by_one_and_unit_norm(model_path: Path) -> None:
    embedder = ArcFaceEmbedder(model_path)
    image = np.random.default_rng(3).integers(0, 256, size=(400, 500, 3), dtype=np.uint8)
    faces = [face_at(TEMPLATE * s + (x, y)) for s, x, y in [(1.0, 10, 20), (1.5, 200, 100), (2.2, 150, 150)]]
    batch = embedder.embed(image, faces)
    assert batch.shape == (3, 512) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-6)
    single = np.concatenate([embedder.embed(image, [face]) for face in faces])
    np.testing.assert_allclose(batch, single, atol=1e-6)
    assert embedder.embed(image, []).shape == (0, 512)


def test_fixed_batch_model_runs_face_by_face(tmp_path: Path) -> None:
    batched = ArcFaceEmbedder(tiny_model(tmp_path / "a.onnx"))
    fixed = ArcFaceEmbedder(tiny_model(tmp_path / "b.onnx", batch=1))
    image = np.random.default_rng(4).integers(0, 256, size=(300, 300, 3), dtype=np.uint8)
    faces = [face_at(TEMPLATE + 30), face_at(TEMPLATE * 1.5 + 100)]
    np.testing.assert_allclose(fixed.embed(image, faces), batched.embed(image, faces), atol=1e-6)


def test_name_and_dimension_identify_the_model_file(tmp_path: Path, model_path: Path) -> None:
    embedder = ArcFaceEmbedder(model_path)
    assert embedder.dim == 512
    kind, stem, checksum = embedder.name.split(":")
    assert (kind, stem, len(checksum)) == ("arcface", "w600k_tiny", 12)
    (tmp_path / "elsewhere").mkdir()
    same_stem = tiny_model(tmp_path / "elsewhere" / "w600k_tiny.onnx", batch=1)  # other bytes
    assert ArcFaceEmbedder(same_stem).name != embedder.name


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ARCFACE_MODEL_PATH"):
        ArcFaceEmbedder(tmp_path / "nope.onnx")


def test_wrong_input_shape_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"expected an input of shape \(N, 3, 112, 112\)"):
        ArcFaceEmbedder(tiny_model(tmp_path / "small.onnx", size=64))


def test_factory_builds_arcface_and_requires_a_path(tmp_path: Path, model_path: Path) -> None:
    settings = Settings(face_embedder="arcface", arcface_model_path=model_path, facegate_data_dir=tmp_path)
    assert isinstance(create_embedder(settings), ArcFaceEmbedder)
    with pytest.raises(ValueError, match="ARCFACE_MODEL_PATH"):
        create_embedder(Settings(face_embedder="arcface", facegate_data_dir=tmp_path))
