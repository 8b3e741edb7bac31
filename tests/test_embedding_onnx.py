"""The dlib ResNet → ONNX conversion: file parsing, parity with dlib on real faces, the disk cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from facegate.detection import MTCNN, DetectionParams
from facegate.embedding import dlib_onnx
from facegate.embedding.alignment import face_chips
from facegate.embedding.dlib_format import load_dlib_resnet
from facegate.embedding.dlib_onnx import converted_model
from facegate.embedding.dlib_resnet import DlibEmbedder, DlibOnnxEmbedder
from facegate.embedding.models import RESNET_PATH
from facegate.imaging import load_image_file
from tests.data import FACES
from tests.support import io_signature

LFW = FACES / "lfw"
LFW_IMAGES = 40


def lfw_first_images(count: int) -> list[Path]:
    """The first `count` distinct images of the pairs file, in pairs order."""
    seen: dict[str, None] = {}
    for line in (LFW / "pairs_folds1-2.txt").read_text().splitlines()[1:]:
        fields = line.split()
        names = (
            [(fields[0], fields[1]), (fields[0], fields[2])] if len(fields) == 3 else [fields[:2], fields[2:]]
        )
        for name, number in names:
            seen.setdefault(f"{name}/{name}_{int(number):04d}.jpg")
    return [LFW / "lfw-deepfunneled" / key for key in list(seen)[:count]]


@pytest.fixture(scope="module")
def chips_per_image() -> dict[str, np.ndarray]:
    """Aligned chips of every face MTCNN finds in the portraits and the first LFW images."""
    detector = MTCNN()
    paths = sorted((FACES / "portraits").rglob("*.*")) + lfw_first_images(LFW_IMAGES)
    chips = {}
    for path in paths:
        image = load_image_file(path)
        # Faces under a tenth of the image side are skipped: they would only make the test slow.
        faces = detector.detect(image, DetectionParams(min_face_size=max(20, min(image.shape[:2]) // 10)))
        if faces:
            chips[path.name] = face_chips(image, faces)
    return chips


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory: pytest.TempPathFactory) -> DlibOnnxEmbedder:
    return DlibOnnxEmbedder(tmp_path_factory.mktemp("models"), mirror=False)


def test_model_file_is_read_completely() -> None:
    net = load_dlib_resnet(RESNET_PATH)  # raises unless every byte is accounted for
    assert net.input_size == 150
    np.testing.assert_allclose(net.channel_means, (122.782, 117.001, 104.298), atol=1e-3)
    assert sum(array.size for layer in net.layers for array in layer.arrays.values()) == 5_614_592
    kinds = [layer.kind for layer in net.layers]
    assert (kinds.count("con"), kinds.count("add_prev"), kinds.count("tag"), kinds.count("skip")) == (
        29,
        14,
        18,
        4,
    )


def test_graph_signature(tmp_path: Path) -> None:
    model = onnx.load_from_string(converted_model(RESNET_PATH, tmp_path))
    graph_input, (output_name, _) = io_signature(model)
    assert graph_input == ("chips", onnx.TensorProto.UINT8, ["N", 150, 150, 3])
    assert output_name == "descriptors"
    ops = [node.op_type for node in model.graph.node]
    # Affine layers are folded into the convolutions: the only Mul is the input's 1/256 scale.
    assert (ops.count("Conv"), ops.count("Mul"), ops.count("Add")) == (29, 1, 14)


@pytest.mark.slow
def test_parity_with_dlib_on_every_face(
    chips_per_image: dict[str, np.ndarray], onnx_embedder: DlibOnnxEmbedder
) -> None:
    """cosine(ONNX, dlib) ≥ 0.9999 on every face; each image's faces go through ONNX in one batch."""
    reference = DlibEmbedder(mirror=False)
    worst, faces = 1.0, 0
    for name, chips in chips_per_image.items():
        ours, theirs = onnx_embedder.descriptors(chips), reference.descriptors(chips)
        cosine = (ours * theirs).sum(axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cosine.min() >= 0.9999, name
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
        worst, faces = min(worst, float(cosine.min())), faces + len(chips)
    assert faces >= 120  # 80+ portraits (some with background faces) and 40 LFW images
    print(f"parity: {faces} faces, min cosine {worst:.9f}")


def test_both_runtimes_embed_alike_with_mirror(tmp_path: Path) -> None:
    image = load_image_file(FACES / "groups" / "fr_obama_and_biden.jpg")
    faces = MTCNN().detect(image)
    dlib_side, onnx_side = DlibEmbedder(), DlibOnnxEmbedder(tmp_path)
    assert dlib_side.name == onnx_side.name == "dlib_resnet_v1+mirror"
    cosine = (dlib_side.embed(image, faces) * onnx_side.embed(image, faces)).sum(axis=1)
    assert cosine.min() >= 0.9999


# --- the disk cache ---------------------------------------------------------------------------


def test_cache_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = converted_model(RESNET_PATH, tmp_path)
    monkeypatch.setattr(dlib_onnx, "build_onnx", lambda *args: pytest.fail("converted again"))
    assert converted_model(RESNET_PATH, tmp_path) == first
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "dlib_face_recognition_resnet_model_v1.onnx",
        "dlib_face_recognition_resnet_model_v1.onnx.json",
    ]  # and no temporary files left behind


def test_changed_source_is_converted_again(tmp_path: Path) -> None:
    cache = tmp_path / "models"
    original = converted_model(RESNET_PATH, cache)
    # A copy of the model file with one weight of the last layer changed: still a valid model.
    data = bytearray(RESNET_PATH.read_bytes())
    fc_weight = load_dlib_resnet(RESNET_PATH).layers[-1].arrays["weight"]
    offset = bytes(data).rindex(fc_weight[0, 0].tobytes())
    data[offset : offset + 4] = np.float32(fc_weight[0, 0] + 1.0).tobytes()
    source = tmp_path / RESNET_PATH.name
    source.write_bytes(bytes(data))
    changed = converted_model(source, cache)
    assert changed != original
    stamp = json.loads((cache / "dlib_face_recognition_resnet_model_v1.onnx.json").read_text())
    assert stamp["source_sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("damage", ["flip a byte of the model", "truncate the stamp", "remove the model"])
def test_damaged_cache_is_converted_again(tmp_path: Path, damage: str) -> None:
    original = converted_model(RESNET_PATH, tmp_path)
    model_file = tmp_path / "dlib_face_recognition_resnet_model_v1.onnx"
    stamp_file = tmp_path / "dlib_face_recognition_resnet_model_v1.onnx.json"
    if damage == "flip a byte of the model":
        data = bytearray(model_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model_file.write_bytes(bytes(data))
    elif damage == "truncate the stamp":
        stamp_file.write_text(stamp_file.read_text()[:10])
    else:
        model_file.unlink()
    assert converted_model(RESNET_PATH, tmp_path) == original
    assert model_file.read_bytes() == original
