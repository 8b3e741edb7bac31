"""MTCNN detection: edge cases, parameters, thread safety and the numeric building blocks."""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from facegate.detection import MTCNN, DetectionParams, cascade, mtcnn, networks
from facegate.faces import Face
from facegate.imaging import decode_image, load_image_file
from facegate.runtime import RuntimeOptions
from tests.data import FACES
from tests.support import iou

PORTRAIT = FACES / "portraits/Barack_Obama/fr_obama_small.jpg"  # 320x240, one face
GROUP = FACES / "groups/deepface_selfie-many-people.jpg"  # 600x604, five faces

needs_data = pytest.mark.skipif(not PORTRAIT.is_file(), reason="shared test images not present")


@pytest.fixture(scope="module")
def detector() -> MTCNN:
    return MTCNN()


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return load_image_file(PORTRAIT)


def one_face(faces: list[Face]) -> Face:
    assert len(faces) == 1, faces
    return faces[0]


# --- results -------------------------------------------------------------------------------------


@needs_data
def test_portrait_gives_one_well_formed_face(detector: MTCNN, portrait: np.ndarray) -> None:
    face = one_face(detector.detect(portrait))
    assert all(isinstance(v, float) for v in face.box) and isinstance(face.score, float)
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= portrait.shape[1] - 1 and 0 <= y1 < y2 <= portrait.shape[0] - 1
    assert 0.9 < face.score <= 1.0
    assert face.keypoints.shape == (5, 2)
    assert np.all((face.keypoints >= [x1, y1]) & (face.keypoints <= [x2, y2]))


@needs_data
def test_group_faces_sorted_by_score(detector: MTCNN) -> None:
    faces = detector.detect(load_image_file(GROUP))
    assert len(faces) >= 4
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True)


@needs_data
def test_grey_and_rgba_sources_converted_by_the_caller(detector: MTCNN, portrait: np.ndarray) -> None:
    expected = one_face(detector.detect(portrait))
    for mode in ("L", "RGBA", "LA"):
        buffer = io.BytesIO()
        Image.fromarray(portrait).convert(mode).save(buffer, format="PNG")
        converted = decode_image(buffer.getvalue(), max_bytes=10**8, max_pixels=10**8)
        assert converted.shape == portrait.shape and converted.dtype == np.uint8
        assert iou(one_face(detector.detect(converted)).box, expected.box) > 0.85, mode


@needs_data
def test_concurrent_calls_give_identical_results(detector: MTCNN, portrait: np.ndarray) -> None:
    group = np.asarray(Image.open(GROUP).convert("RGB").reduce(2))
    images = [portrait, group, np.ascontiguousarray(portrait[:, ::-1])]
    expected = [detector.detect(image) for image in images]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(detector.detect, images * 3))
    assert any(len(faces) > 1 for faces in expected)
    for got, want in zip(results, expected * 3, strict=True):
        assert [(f.box, f.score) for f in got] == [(f.box, f.score) for f in want]
        assert all(np.array_equal(a.keypoints, b.keypoints) for a, b in zip(got, want, strict=True))


@needs_data
def test_lanes_give_the_serial_result(portrait: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    group = load_image_file(GROUP)
    serial, lanes = MTCNN(RuntimeOptions(threads=1)), MTCNN(RuntimeOptions(threads=3))
    for image in (portrait, group):
        want = serial.detect(image)
        assert want and [(f.box, f.score) for f in lanes.detect(image)] == [(f.box, f.score) for f in want]
    # More crops than one batch holds: several chunks per lane, queued on the lane threads.
    monkeypatch.setattr(mtcnn, "MAX_BATCH_PIXELS", 4 * 48 * 48)
    chunked = lanes.detect(group)
    want = serial.detect(group)
    assert len(chunked) == len(want)
    for got, expected in zip(chunked, want, strict=True):
        # A batch of another size may round the last bit differently in ONNX Runtime's kernels.
        np.testing.assert_allclose(got.box, expected.box, rtol=1e-5, atol=1e-3)
        assert got.score == pytest.approx(expected.score, abs=1e-5)


def test_levels_shared_out_evenly_among_lanes() -> None:
    sizes = [cascade.level_size(480, 640, s) for s in cascade.pyramid_scales(480, 640, 20)]
    shares = mtcnn._share_out(sizes, 2)
    assert sorted(itertools.chain(*shares)) == list(range(len(sizes)))
    work = [sum(sizes[i][0] * sizes[i][1] for i in share) for share in shares]
    # The largest level alone is about half of all pixels; the other lane takes the rest.
    assert shares[0][0] == 0 and max(work) / min(work) < 1.2
    assert mtcnn._share_out(sizes[:2], 8) == [[0], [1]]
    assert mtcnn._share_out(sizes, 1) == [list(range(len(sizes)))]


def test_prelu_graph_matches_prelu() -> None:
    """The elementwise PReLU, with slopes below 0, between 0 and 1, and above 1."""
    slopes = np.asarray([-1.3, 0.0, 0.25, 1.0, 1.7], np.float32)
    graph = networks._Graph([])
    y = graph.prelu("x", slopes.reshape(-1, 1, 1))
    declared = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 5, 3, 4])
    model = graph.model("prelu", [declared], {"y": (y, [1, 5, 3, 4])})
    x = np.random.default_rng(0).normal(size=(1, 5, 3, 4)).astype(np.float32)
    (got,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    want = np.where(x > 0, x, slopes.reshape(-1, 1, 1) * x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("channels", "size", "same"), [(5, 2, True), (14, 3, False), (7, 3, True)])
def test_pooling_before_prelu_gives_prelu_then_pooling(channels: int, size: int, same: bool) -> None:
    """PNet's first layer pools before its PReLU (and negates the channels whose slope is < 0):
    against ONNX's own Conv, PRelu and MaxPool in that order, with slopes below 0 (more of them
    than the padding's free slots when 14 channels), 0, between 0 and 1, 1 and above 1."""
    rng = np.random.default_rng(channels)
    kernel = rng.normal(size=(3, 3, 3, channels)).astype(np.float32)
    bias = rng.normal(size=channels).astype(np.float32)
    slopes = np.resize(np.asarray([-1.3, 0.0, 0.25, -0.4, 1.0, 1.7, -0.05], np.float32), channels)
    graph = networks._Graph([kernel, bias, slopes.reshape(1, 1, -1)])
    declared = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, "h", "w"])
    pooled = graph.conv_prelu_pool("x", size, same=same)
    model = graph.model("pooled", [declared], {"y": (pooled, [1, "c", "h2", "w2"])})

    padding = "SAME_UPPER" if same else "VALID"
    nodes = [
        onnx.helper.make_node("Conv", ["x", "kernel", "bias"], ["conv"]),
        onnx.helper.make_node("PRelu", ["conv", "slope"], ["prelu"]),
        onnx.helper.make_node(
            "MaxPool", ["prelu"], ["y"], kernel_shape=[size, size], strides=[2, 2], auto_pad=padding
        ),
    ]
    constants = [
        onnx.numpy_helper.from_array(kernel.transpose(3, 2, 0, 1).copy(), "kernel"),
        onnx.numpy_helper.from_array(bias, "bias"),
        onnx.numpy_helper.from_array(slopes.reshape(-1, 1, 1), "slope"),
    ]
    output = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    graph_in_order = onnx.helper.make_graph(nodes, "in_order", [declared], [output], constants)
    reference = onnx.helper.make_model(graph_in_order, opset_imports=[onnx.helper.make_opsetid("", 17)])
    reference.ir_version = 8

    for height, width in ((9, 9), (12, 17), (30, 23)):
        x = rng.normal(size=(1, 3, height, width)).astype(np.float32)
        (got,) = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})
        (want,) = ort.InferenceSession(reference.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )
        assert got.shape[1] % networks.CHANNEL_BLOCK == 0 and got.shape[2:] == want.shape[2:]
        # The channels past the slopes' (negated copies, zero padding) get zero weights next.
        np.testing.assert_allclose(got[:, :channels], want, rtol=1e-6, atol=1e-6)


def test_padded_channels_leave_the_networks_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    # RNet's 28 and 48 channels are padded to 32 and 64 (PNet's 10 + 6 negated fill 16).
    crops = np.random.default_rng(1).uniform(0, 255, size=(5, 24, 24, 3)).astype(np.float32)
    padded = networks.build_network("rnet")
    monkeypatch.setattr(networks, "CHANNEL_BLOCK", 1)
    plain = networks.build_network("rnet")
    assert len(padded) > len(plain)  # zero channels were added
    outputs = [
        ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"crops": crops})
        for m in (padded, plain)
    ]
    for got, want in zip(*outputs, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_data
def test_non_contiguous_input(detector: MTCNN, portrait: np.ndarray) -> None:
    mirrored = portrait[:, ::-1]
    face = one_face(detector.detect(mirrored))
    original = one_face(detector.detect(portrait))
    width = portrait.shape[1] - 1
    assert iou((width - face.box[2], face.box[1], width - face.box[0], face.box[3]), original.box) > 0.85


# --- edge cases ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(1, 1), (5, 5), (11, 11), (12, 12), (13, 40), (1, 640), (640, 1), (11, 2000), (24, 24)]
)
def test_tiny_and_thin_images_do_not_crash(detector: MTCNN, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    faces = detector.detect(
        image, DetectionParams(threshold_pnet=0.0, threshold_rnet=0.0, threshold_onet=0.0)
    )
    if min(shape) < 12:
        assert faces == []
    for face in faces:
        assert 0 <= face.box[0] <= face.box[2] <= shape[1] - 1


@pytest.mark.parametrize("value", [0, 255])
def test_flat_images_give_no_face(detector: MTCNN, value: int) -> None:
    assert detector.detect(np.full((480, 640, 3), value, np.uint8)) == []


@needs_data
def test_large_min_face_size(detector: MTCNN, portrait: np.ndarray) -> None:
    face = one_face(detector.detect(portrait))  # about 100 x 150 px
    assert one_face(detector.detect(portrait, DetectionParams(min_face_size=60))).box == pytest.approx(
        face.box, abs=0.1 * face.width
    )
    # MTCNN's minimum is where the pyramid starts, not a filter: a 200 px window may still
    # regress onto the 100 px face, but never onto anything else.
    for other in detector.detect(portrait, DetectionParams(min_face_size=200)):
        assert iou(other.box, face.box) > 0.5
    assert detector.detect(portrait, DetectionParams(min_face_size=241)) == []  # larger than the image
    assert detector.detect(portrait, DetectionParams(min_face_size=10_000)) == []


@needs_data
def test_small_min_face_size_upsamples(detector: MTCNN, portrait: np.ndarray) -> None:
    small = np.asarray(Image.fromarray(portrait).resize((40, 30), Image.Resampling.LANCZOS))
    assert cascade.pyramid_scales(30, 40, 8)[0] == pytest.approx(1.5)
    expected = one_face(detector.detect(small))  # about 14 px wide
    for size in (8, 1):
        face = one_face(detector.detect(small, DetectionParams(min_face_size=size)))
        assert iou(face.box, expected.box) > 0.7


@needs_data
def test_threshold_one_finds_nothing(detector: MTCNN, portrait: np.ndarray) -> None:
    for params in (
        DetectionParams(threshold_pnet=1.0),
        DetectionParams(threshold_rnet=1.0),
        DetectionParams(threshold_onet=1.0),
    ):
        assert detector.detect(portrait, params) == []


@needs_data
def test_threshold_zero_keeps_the_face_and_more(detector: MTCNN, portrait: np.ndarray) -> None:
    face = one_face(detector.detect(portrait))
    faces = detector.detect(
        portrait, DetectionParams(threshold_pnet=0.0, threshold_rnet=0.0, threshold_onet=0.0)
    )
    assert len(faces) > 1
    assert faces[0].box == face.box or any(iou(other.box, face.box) > 0.85 for other in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_face_size": 0},
        {"min_face_size": -20},
        {"min_face_size": 20.5},
        {"min_face_size": True},
        {"min_face_size": "20"},
        {"threshold_pnet": -0.01},
        {"threshold_rnet": 1.01},
        {"threshold_onet": math.nan},
        {"threshold_onet": "0.7"},
    ],
)
def test_invalid_params_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DetectionParams(**kwargs)


def test_params_are_frozen_with_reference_defaults() -> None:
    params = DetectionParams()
    assert (params.min_face_size, params.threshold_pnet, params.threshold_rnet, params.threshold_onet) == (
        20,
        0.6,
        0.7,
        0.7,
    )
    with pytest.raises(AttributeError):
        params.min_face_size = 40  # type: ignore[misc]


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((40, 40), np.uint8),
        np.zeros((40, 40, 4), np.uint8),
        np.zeros((40, 40, 3), np.float32),
        [[0, 0, 0]],
    ],
)
def test_invalid_images_raise(detector: MTCNN, image: object) -> None:
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect(image)  # type: ignore[arg-type]


def test_unknown_provider_raises() -> None:
    with pytest.raises(ValueError, match=r"NoSuchExecutionProvider.*lacks"):
        MTCNN(RuntimeOptions(providers=("NoSuchExecutionProvider",)))


# --- building blocks -----------------------------------------------------------------------------


def test_pyramid_stops_at_the_pnet_window() -> None:
    scales = cascade.pyramid_scales(480, 640, 20)
    assert scales[0] == pytest.approx(0.6)
    assert all(b / a == pytest.approx(cascade.SCALE_FACTOR) for a, b in itertools.pairwise(scales))
    assert int(480 * scales[-1]) >= 12 > int(480 * scales[-1] * cascade.SCALE_FACTOR)
    assert cascade.pyramid_scales(11, 1000, 20) == []
    assert cascade.pyramid_scales(100, 100, 101) == []


def test_pyramid_over_the_budget_is_refused_naming_the_smallest_min_face_size() -> None:
    assert cascade.pyramid_pixels(480, 640, 20) < mtcnn.MAX_PYRAMID_PIXELS
    image = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(mtcnn.DetectionBudgetError, match=r"min_face_size >= (\d+)") as refused:
        MTCNN(RuntimeOptions(threads=1)).detect(image, DetectionParams(min_face_size=1))
    assert refused.value.status == 422
    smallest = int(re.search(r">= (\d+)", str(refused.value)).group(1))
    assert cascade.pyramid_pixels(480, 640, smallest) <= mtcnn.MAX_PYRAMID_PIXELS
    assert cascade.pyramid_pixels(480, 640, smallest - 1) > mtcnn.MAX_PYRAMID_PIXELS


@pytest.mark.parametrize("extent", [12, 13, 24, 25, 99, 100, 257])
@pytest.mark.parametrize("tile", [12, 13, 20, 64])
def test_pnet_tiles_give_each_output_cell_once(extent: int, tile: int) -> None:
    # PNet's output: a 3x3 convolution, a "same" 2x2 max pool of stride 2, two 3x3 convolutions.
    cells = math.ceil((extent - 2) / 2) - 4
    covered = []
    for start, stop, count in cascade.pnet_tiles(extent, tile):
        assert start % 2 == 0 and stop <= extent
        covered += range(start // 2, start // 2 + (count or math.ceil((stop - start - 2) / 2) - 4))
    assert covered == list(range(cells))


@needs_data
def test_tiles_give_the_whole_level_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    image = load_image_file(GROUP)
    pyramid = cascade.AreaPyramid(image)
    level = pyramid.level(400, 300)
    np.testing.assert_array_equal(pyramid.level(400, 300, (38, 190), (7, 111)), level[38:190, 7:111])
    whole = MTCNN(RuntimeOptions(threads=1))
    params = DetectionParams(threshold_pnet=0.3)
    want = whole._propose(image, params)
    # Tiles of 64 x 32 level pixels: the larger levels are split along both sides.
    monkeypatch.setattr(mtcnn, "TILE_PIXELS", 64 * 32)
    monkeypatch.setattr(mtcnn, "MIN_TILE_ROWS", 32)
    np.testing.assert_array_equal(whole._propose(image, params), want)


def test_area_pyramid_averages_covered_area() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    pyramid = cascade.AreaPyramid(image)
    thirds = image.astype(np.float64).reshape(9, 4, 3, 3).mean(axis=2)
    np.testing.assert_allclose(pyramid.level(9, 4), thirds, atol=1e-3)
    # 12 -> 8 columns: each output column covers 1.5 input columns.
    row = image[0, :, 0].astype(np.float64)
    expected = [
        (row[i] + 0.5 * row[i + 1]) / 1.5 if k % 2 == 0 else (0.5 * row[i] + row[i + 1]) / 1.5
        for k, i in enumerate([0, 1, 3, 4, 6, 7, 9, 10])
    ]
    np.testing.assert_allclose(pyramid.level(9, 8)[0, :, 0], expected, atol=1e-3)
    np.testing.assert_allclose(pyramid.level(9, 12), image, atol=1e-3)


def test_nms_drops_boxes_overlapped_by_any_better_box() -> None:
    # b overlaps a, c overlaps only b: the reference drops c too although b is dropped itself.
    boxes = np.asarray([[0, 0, 10, 10, 0.9], [3, 0, 13, 10, 0.8], [6, 0, 16, 10, 0.7], [40, 40, 50, 50, 0.6]])
    assert cascade.nms(boxes, 0.3).tolist() == [0, 3]
    assert cascade.nms(boxes, 0.9).tolist() == [0, 1, 2, 3]
    inner = np.asarray([[0, 0, 100, 100, 0.9], [10, 10, 30, 30, 0.8]])
    assert cascade.nms(inner, 0.7).tolist() == [0, 1]
    assert cascade.nms(inner, 0.7, over_min=True).tolist() == [0]
    assert cascade.nms(np.empty((0, 5)), 0.5).tolist() == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("over_min", [False, True])
def test_nms_agrees_with_the_pairwise_overlaps(dtype: type, over_min: bool) -> None:
    rng = np.random.default_rng(2)
    corners = rng.uniform(0, 200, (300, 2)).round()
    boxes = np.concatenate(
        [corners, corners + rng.uniform(0, 40, (300, 2)).round(), rng.random((300, 1))], axis=1
    )
    boxes = cascade.sort_by_score(boxes.astype(dtype))
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    inter = np.maximum(np.minimum(x2[:, None], x2) - np.maximum(x1[:, None], x1), 0) * np.maximum(
        np.minimum(y2[:, None], y2) - np.maximum(y1[:, None], y1), 0
    )
    areas = (x2 - x1) * (y2 - y1)
    denominator = np.minimum(areas[:, None], areas) if over_min else areas[:, None] + areas - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        overlaps = np.triu(inter / denominator > 0.5, k=1)  # [better, worse]
    kept = cascade.nms(boxes, 0.5, over_min=over_min)
    assert 0 < len(kept) < len(boxes)
    assert kept.tolist() == np.flatnonzero(~overlaps.any(axis=0)).tolist()


def test_square_keeps_the_centre() -> None:
    squared = cascade.square(np.asarray([[10.0, 20.0, 30.0, 60.0, 0.5]]))
    assert squared.tolist() == [[0.0, 20.0, 40.0, 60.0, 0.5]]


def test_crops_sample_bilinearly_and_fill_outside() -> None:
    image = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
    # The reference divides by the size but samples over size - 1: a box 0..10 spans pixels 0..9.
    whole = cascade.crop_patches(image, np.asarray([[0.0, 0.0, 10.0, 10.0]]), 10)
    np.testing.assert_allclose(whole[0], image, atol=1e-4)
    half = cascade.crop_patches(image, np.asarray([[0.0, 0.0, 10.0, 10.0]]), 19)
    np.testing.assert_allclose(half[0, 1, 1], image[:2, :2].astype(np.float32).mean(axis=(0, 1)), atol=1e-4)
    outside = cascade.crop_patches(image, np.asarray([[-20.0, -20.0, 30.0, 30.0]]), 5)
    assert outside[0, 0, 0].tolist() == [cascade.OUTSIDE_PIXEL] * 3
    np.testing.assert_allclose(
        outside[0, 2, 2], image[4:6, 4:6].astype(np.float32).mean(axis=(0, 1)), atol=0.6
    )


@pytest.mark.parametrize("height", [1, 255, 256, 257, 600])
def test_row_integral_holds_the_exact_running_sums(height: int) -> None:
    # Blocks of 256 rows: heights at, just under and just over a block's end, and several blocks.
    image = np.full((height, 5, 3), 255, np.uint8)
    image[::7] = np.random.default_rng(height).integers(0, 256, (len(image[::7]), 5, 3), dtype=np.uint8)
    pyramid = cascade.AreaPyramid(image)
    # A level of the image's own size differences consecutive running sums: exact only if each is.
    np.testing.assert_array_equal(pyramid.level(height, 5), image)
    # Fewer rows: each output row spans blocks and ends mid-row (float32 rounding at the edges).
    rows = max(1, height // 7)
    edges = np.arange(rows + 1) * (height / rows)
    pixel_rows = np.arange(height)
    coverage = np.clip(
        np.minimum(edges[1:, None], pixel_rows + 1) - np.maximum(edges[:-1, None], pixel_rows), 0, None
    )
    expected = np.einsum("oi,iwc->owc", coverage, image.astype(np.float64)) / (height / rows)
    np.testing.assert_allclose(pyramid.level(rows, 5), expected, atol=1e-3)


def _private_mounts_work() -> bool:
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30).returncode == 0
    except OSError:
        return False


@needs_data
@pytest.mark.skipif(
    os.geteuid() != 0 or not _private_mounts_work(), reason="needs root for a private read-only mount"
)
def test_without_a_writable_cache_folder_the_loops_are_compiled_in_the_process(
    tmp_path: Path, detector: MTCNN, portrait: np.ndarray
) -> None:
    # A read-only root filesystem: neither the package's folder nor the home holds numba's cache.
    # Caching would fail the import of facegate.detection; the loops compile in the process instead.
    package, home = Path(cascade.__file__).parent, tmp_path / "home"
    home.mkdir()
    read_only = " && ".join(
        f"mount --bind {shlex.quote(str(path))} {shlex.quote(str(path))} && "
        f"mount -o remount,bind,ro {shlex.quote(str(path))}"
        for path in (package, home)
    )
    script = (
        "import json, logging, sys; logging.basicConfig()\n"
        "from facegate.detection import MTCNN\nfrom facegate.imaging import load_image_file\n"
        "print(json.dumps([face.box for face in MTCNN().detect(load_image_file(sys.argv[1]))]))"
    )
    run = shlex.join([sys.executable, "-c", script, str(PORTRAIT)])
    command = f"{read_only} && exec {run}"
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home), "NUMBA_CACHE_DIR": ""}
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", command], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no writable cache folder for numba") == 1
    assert json.loads(result.stdout) == [list(face.box) for face in detector.detect(portrait)]
    assert not list(home.iterdir())
