"""dlib's face-recognition ResNet as an ONNX graph, converted by us and cached on disk.

Graph input `chips`: uint8 (N, 150, 150, 3) RGB face chips exactly as `dlib.get_face_chip` makes
them. Graph output `descriptors`: float32 (N, 128), dlib's raw (not unit-length) descriptors.
The normalisation (pixel − mean) / 256 happens in the graph, and every affine layer (batch norm
already folded by dlib) is folded into the convolution before it, which is exact arithmetic and
saves a pass over every activation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegate.embedding import model_cache
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

# Bump when the graph this module builds changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "chips", "descriptors"


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

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
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


def _pooled(
    size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...], pad: tuple[int, ...]
) -> tuple[int, int]:
    height, width = ((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, pad, strict=True))
    return height, width


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
    graph = helper.make_graph(g.nodes, "dlib_face_recognition_resnet_model_v1", [], [], g.initializers)
    props = {"source_sha256": source_sha256, "converter": str(CONVERTER_VERSION)}
    return model_cache.image_model(graph, (INPUT_NAME, size), (OUTPUT_NAME, 128), props)


def converted_model(source: Path, cache_dir: Path) -> bytes:
    """The ONNX bytes for the dlib model at `source`, converted once and cached in `cache_dir`
    (see `model_cache.converted_model`: a changed source or a damaged cache is converted again)."""
    return model_cache.converted_model(
        source, cache_dir, CONVERTER_VERSION, lambda data, digest: build_onnx(parse_dlib_resnet(data), digest)
    )


__all__ = ["CONVERTER_VERSION", "INPUT_NAME", "OUTPUT_NAME", "build_onnx", "converted_model"]
