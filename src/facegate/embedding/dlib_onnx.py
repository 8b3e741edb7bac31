"""dlib's face-recognition ResNet as an ONNX graph, converted by us and cached on disk.

Graph input `chips`: uint8 (N, 150, 150, 3) RGB face chips exactly as `dlib.get_face_chip` makes
them. Graph output `descriptors`: float32 (N, 128), dlib's raw (not unit-length) descriptors.
The normalisation (pixel − mean) / 256 happens in the graph, and every affine layer (batch norm
already folded by dlib) is folded into the convolution before it, which is exact arithmetic and
saves a pass over every activation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegate.embedding.dlib_format import (
    ADD_PREV,
    AFFINE,
    AVG_POOL,
    CON,
    FC,
    MAX_POOL,
    RELU,
    SKIP,
    TAG,
    DlibResNet,
    Layer,
    parse_dlib_resnet,
)

log = logging.getLogger(__name__)

# Bump when the graph this module builds changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "chips", "descriptors"
_OPSET, _IR_VERSION = 17, 8  # IR 8 loads on every onnxruntime >= 1.14


def _fold_affine(layers: list[Layer]) -> list[Layer]:
    """Merge each affine layer into the convolution right before it: γ·(W∗x + b) + β."""
    folded: list[Layer] = []
    for layer in layers:
        if layer.kind == AFFINE:
            conv = folded[-1]
            if conv.kind != CON:
                raise ValueError("affine layer that does not follow a convolution")
            gamma, beta = layer.arrays["gamma"], layer.arrays["beta"]
            conv.arrays = {
                "weight": conv.arrays["weight"] * gamma[:, None, None, None],
                "bias": conv.arrays["bias"] * gamma + beta,
            }
        else:
            folded.append(replace(layer, arrays=dict(layer.arrays)))
    return folded


@dataclass(frozen=True)
class _Value:
    """A tensor of the graph being built with its static (C, H, W) shape."""

    name: str
    shape: tuple[int, int, int]


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def constant(self, prefix: str, array: np.ndarray) -> str:
        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes: object) -> str:
        output = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def conv(self, x: _Value, layer: Layer) -> _Value:
        weight = layer.arrays["weight"]
        (kh, kw), (sy, sx), (py, px) = weight.shape[2:], layer.stride, layer.pad
        name = self.node(
            "Conv",
            [x.name, self.constant("w", weight), self.constant("b", layer.arrays["bias"])],
            kernel_shape=[kh, kw],
            strides=[sy, sx],
            pads=[py, px, py, px],
        )
        return _Value(name, (weight.shape[0], *_pooled(x.shape[1:], (kh, kw), layer.stride, layer.pad)))

    def pool(self, x: _Value, layer: Layer) -> _Value:
        if layer.size == (0, 0):
            return _Value(self.node("GlobalAveragePool", [x.name]), (x.shape[0], 1, 1))
        op = "MaxPool" if layer.kind == MAX_POOL else "AveragePool"
        (py, px) = layer.pad
        name = self.node(
            op, [x.name], kernel_shape=list(layer.size), strides=list(layer.stride), pads=[py, px, py, px]
        )
        return _Value(name, (x.shape[0], *_pooled(x.shape[1:], layer.size, layer.stride, layer.pad)))

    def pad_to(self, x: _Value, shape: tuple[int, int, int]) -> str:
        """dlib's add of differently shaped tensors: the smaller one is zero beyond its own extent."""
        if x.shape == shape:
            return x.name
        tail = [0] + [big - small for big, small in zip(shape, x.shape, strict=True)]
        pads = np.array([0, 0, 0, 0, *tail], dtype=np.int64)
        return self.node("Pad", [x.name, self.constant("pads", pads)], mode="constant")

    def add(self, a: _Value, b: _Value) -> _Value:
        shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape, strict=True))
        return _Value(self.node("Add", [self.pad_to(a, shape), self.pad_to(b, shape)]), shape)  # type: ignore[arg-type]


def _pooled(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...]):
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, pad, strict=True))


def build_onnx(net: DlibResNet, source_sha256: str = "") -> onnx.ModelProto:
    """The ONNX graph of `net`: uint8 NHWC chips in, raw 128-D descriptors out."""
    g = _GraphBuilder()
    size = net.input_size
    pixels = g.node("Cast", [INPUT_NAME], to=TensorProto.FLOAT)
    means = np.array(net.channel_means, dtype=np.float32)  # broadcasts over the last (channel) axis
    centred = g.node("Sub", [pixels, g.constant("mean", means)])
    scaled = g.node("Mul", [centred, g.constant("scale", np.array(1 / 256, dtype=np.float32))])
    x = _Value(g.node("Transpose", [scaled], perm=[0, 3, 1, 2]), (3, size, size))
    tags: dict[int, _Value] = {}
    for layer in _fold_affine(net.layers):
        if layer.kind == CON:
            x = g.conv(x, layer)
        elif layer.kind == RELU:
            x = _Value(g.node("Relu", [x.name]), x.shape)
        elif layer.kind in (MAX_POOL, AVG_POOL):
            x = g.pool(x, layer)
        elif layer.kind == TAG:
            tags[layer.tag] = x
        elif layer.kind == SKIP:
            x = tags[layer.tag]
        elif layer.kind == ADD_PREV:
            x = g.add(x, tags[layer.tag])
        elif layer.kind == FC:
            flat = g.node("Flatten", [x.name], axis=1)
            out = helper.make_node("MatMul", [flat, g.constant("fc", layer.arrays["weight"])], [OUTPUT_NAME])
            g.nodes.append(out)
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["N", size, size, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 128])],
        g.initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="facegate"
    )
    model.ir_version = _IR_VERSION
    helper.set_model_props(model, {"source_sha256": source_sha256, "converter": str(CONVERTER_VERSION)})
    onnx.checker.check_model(model)
    return model


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, so readers never see a half-written file."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _cached(model_path: Path, stamp_path: Path, expected: dict[str, object]) -> bytes | None:
    """The cached model when its stamp matches the source and its own checksum; else None."""
    try:
        stamp = json.loads(stamp_path.read_text())
        data = model_path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or any(stamp.get(key) != value for key, value in expected.items()):
        return None
    if stamp.get("onnx_sha256") != _sha256(data):
        log.warning("cached model %s is corrupt; converting again", model_path)
        return None
    return data


def converted_model(source: Path, cache_dir: Path) -> bytes:
    """The ONNX bytes for the dlib model at `source`, converted once and cached in `cache_dir`.

    The cache is keyed by the SHA-256 of the source file and the converter version, and the
    converted file's own SHA-256 is checked on every load: a changed source or a damaged cache
    file is converted again.
    """
    source_bytes = source.read_bytes()
    expected: dict[str, object] = {"source_sha256": _sha256(source_bytes), "converter": CONVERTER_VERSION}
    model_path = cache_dir / f"{source.stem}.onnx"
    stamp_path = cache_dir / f"{source.stem}.onnx.json"
    data = _cached(model_path, stamp_path, expected)
    if data is not None:
        return data
    log.info("converting %s to ONNX into %s", source, model_path)
    model = build_onnx(parse_dlib_resnet(source_bytes), str(expected["source_sha256"]))
    data = model.SerializeToString()
    cache_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(model_path, data)
    _atomic_write(stamp_path, json.dumps({**expected, "onnx_sha256": _sha256(data)}).encode())
    return data


__all__ = ["CONVERTER_VERSION", "INPUT_NAME", "OUTPUT_NAME", "build_onnx", "converted_model"]
