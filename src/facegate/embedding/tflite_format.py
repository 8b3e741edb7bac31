"""A reader of TensorFlow Lite model files (a flatbuffer, `schema.fbs` of TensorFlow Lite): the
tensors, their constant data and the operators of the one subgraph, for float models built from
the operators listed in `OPERATORS` (what the MobileFaceNet file uses).

It reads the flatbuffer with the `flatbuffers` runtime (already an onnxruntime dependency) and
the field numbers of `schema.fbs`, which only ever appends fields, so the numbers are stable. A
generated-schema package would do the same: PyPI's `tflite` (one maintainer, untyped generated code
for the whole schema) or the copy inside the TFLite runtime (`ai-edge-litert`, a large native
package); for the twenty-odd fields read here, a new runtime dependency is not worth it.
tests/test_mobilefacenet.py checks this reader against the runtime's generated code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from flatbuffers import number_types
from flatbuffers.table import Table

FILE_IDENTIFIER = b"TFL3"

# BuiltinOperator codes (schema.fbs) of the operators this reader accepts.
ADD, CONV_2D, DEPTHWISE_CONV_2D, MUL, RELU, RESHAPE, SUB, ABS = (
    "ADD",
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "MUL",
    "RELU",
    "RESHAPE",
    "SUB",
    "ABS",
)
OPERATORS = {0: ADD, 3: CONV_2D, 4: DEPTHWISE_CONV_2D, 18: MUL, 19: RELU, 22: RESHAPE, 41: SUB, 101: ABS}
# TensorType codes of the tensors accepted: float weights and activations, int32 shapes.
_TENSOR_TYPES = {0: np.dtype("<f4"), 2: np.dtype("<i4")}
_PADDINGS = {0: "SAME", 1: "VALID"}
_ACTIVATIONS = {0: None, 1: "RELU"}

# Field numbers of the tables read (schema.fbs); a field's vtable slot is 4 + 2 * number.
_MODEL_OPERATOR_CODES, _MODEL_SUBGRAPHS, _MODEL_BUFFERS = 1, 2, 4
_CODE_DEPRECATED_BUILTIN, _CODE_CUSTOM, _CODE_BUILTIN = 0, 1, 3
_GRAPH_TENSORS, _GRAPH_INPUTS, _GRAPH_OUTPUTS, _GRAPH_OPERATORS = 0, 1, 2, 3
_TENSOR_SHAPE, _TENSOR_TYPE, _TENSOR_BUFFER, _TENSOR_NAME, _TENSOR_QUANTIZATION = 0, 1, 2, 3, 4
_TENSOR_SPARSITY = 6
_QUANT_SCALE = 2
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS, _OP_OPTIONS = 0, 1, 2, 4
_BUFFER_DATA, _BUFFER_OFFSET = 0, 1
# Options tables: (field, name, default) per operator; padding and activation are bytes, the rest
# int32 (schema.fbs).
_BYTE_OPTIONS = {"padding", "activation"}
_CONV_OPTIONS = (
    (0, "padding", 0),
    (1, "stride_w", 0),
    (2, "stride_h", 0),
    (3, "activation", 0),
    (4, "dilation_w", 1),
    (5, "dilation_h", 1),
)
_DEPTHWISE_OPTIONS = (
    (0, "padding", 0),
    (1, "stride_w", 0),
    (2, "stride_h", 0),
    (3, "depth_multiplier", 0),
    (4, "activation", 0),
    (5, "dilation_w", 1),
    (6, "dilation_h", 1),
)
_ACTIVATION_OPTIONS = ((0, "activation", 0),)
_OPTIONS = {
    CONV_2D: _CONV_OPTIONS,
    DEPTHWISE_CONV_2D: _DEPTHWISE_OPTIONS,
    ADD: _ACTIVATION_OPTIONS,
    SUB: _ACTIVATION_OPTIONS,
    MUL: _ACTIVATION_OPTIONS,
}


@dataclass(frozen=True)
class Tensor:
    """A tensor of the graph: its static shape and, for a constant, its data (else None)."""

    name: str
    shape: tuple[int, ...]
    data: np.ndarray | None


@dataclass(frozen=True)
class Operator:
    """One operator: input and output tensor indices, and its options (`padding` "SAME"/"VALID",
    `activation` None/"RELU", strides, dilations, depth_multiplier where the operator has them)."""

    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, int | str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class TFLiteModel:
    """The one subgraph of a model file: operators in execution order (inputs before their uses)."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


class _Reader:
    """Field access on one flatbuffer table."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def _offset(self, number: int) -> int:
        return int(self.table.Offset(4 + 2 * number))

    def has(self, number: int) -> bool:
        return self._offset(number) != 0

    def scalar(self, number: int, flags: type, default: int) -> int:
        offset = self._offset(number)
        return int(self.table.Get(flags, self.table.Pos + offset)) if offset else default

    def string(self, number: int) -> str:
        offset = self._offset(number)
        return self.table.String(self.table.Pos + offset).decode() if offset else ""

    def numbers(self, number: int, flags: type) -> np.ndarray:
        offset = self._offset(number)
        if not offset:
            return np.zeros(0, number_types.to_numpy_type(flags))
        return self.table.GetVectorAsNumpy(flags, offset)

    def table_at(self, number: int) -> _Reader | None:
        offset = self._offset(number)
        if not offset:
            return None
        return _Reader(Table(self.table.Bytes, self.table.Indirect(self.table.Pos + offset)))

    def tables(self, number: int) -> list[_Reader]:
        offset = self._offset(number)
        if not offset:
            return []
        start, count = self.table.Vector(offset), self.table.VectorLen(offset)
        positions = (start + 4 * index for index in range(count))
        return [_Reader(Table(self.table.Bytes, self.table.Indirect(position))) for position in positions]


def _root(data: bytes) -> _Reader:
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError("not a TensorFlow Lite model (no TFL3 file identifier)")
    position = int.from_bytes(data[:4], "little")
    if not 8 <= position < len(data):
        raise ValueError("damaged TensorFlow Lite model: the root table lies outside the file")
    return _Reader(Table(bytearray(data), position))


def _operator_names(model: _Reader) -> list[str]:
    names = []
    for code in model.tables(_MODEL_OPERATOR_CODES):
        # Codes above 127 live only in `builtin_code`; older files fill only the deprecated byte.
        builtin = max(
            code.scalar(_CODE_DEPRECATED_BUILTIN, number_types.Int8Flags, 0),
            code.scalar(_CODE_BUILTIN, number_types.Int32Flags, 0),
        )
        names.append(OPERATORS.get(builtin, code.string(_CODE_CUSTOM) or f"builtin operator {builtin}"))
    return names


def _tensor(reader: _Reader, buffers: list[_Reader]) -> Tensor:
    name = reader.string(_TENSOR_NAME)
    type_code = reader.scalar(_TENSOR_TYPE, number_types.Int8Flags, 0)
    quantization = reader.table_at(_TENSOR_QUANTIZATION)
    if type_code not in _TENSOR_TYPES or (quantization is not None and quantization.has(_QUANT_SCALE)):
        raise ValueError(f"tensor {name!r}: only float32 and int32 tensors are supported (type {type_code})")
    if reader.has(_TENSOR_SPARSITY):
        raise ValueError(f"tensor {name!r}: sparse tensors are not supported")
    shape = tuple(int(n) for n in reader.numbers(_TENSOR_SHAPE, number_types.Int32Flags))
    buffer = buffers[reader.scalar(_TENSOR_BUFFER, number_types.Uint32Flags, 0)]
    if buffer.scalar(_BUFFER_OFFSET, number_types.Uint64Flags, 0):
        raise ValueError(f"tensor {name!r}: data outside the flatbuffer (files over 2 GB) is not supported")
    raw = buffer.numbers(_BUFFER_DATA, number_types.Uint8Flags)
    data = None
    if raw.size:
        dtype = _TENSOR_TYPES[type_code]
        if raw.size != dtype.itemsize * int(np.prod(shape)):
            raise ValueError(f"tensor {name!r}: {raw.size} bytes of data for shape {shape}")
        data = raw.view(dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return Tensor(name, shape, data)


def _options(op: str, reader: _Reader) -> dict[str, int | str | None]:
    table = reader.table_at(_OP_OPTIONS)
    values: dict[str, int | str | None] = {}
    for number, name, default in _OPTIONS.get(op, ()):
        flags = number_types.Int8Flags if name in _BYTE_OPTIONS else number_types.Int32Flags
        values[name] = table.scalar(number, flags, default) if table else default
    if "padding" in values:
        values["padding"] = _PADDINGS[int(values["padding"])]  # type: ignore[arg-type]
    if "activation" in values:
        code = int(values["activation"])  # type: ignore[arg-type]
        if code not in _ACTIVATIONS:
            raise ValueError(f"{op}: fused activation {code} is not supported")
        values["activation"] = _ACTIVATIONS[code]
    return values


def parse_tflite(data: bytes) -> TFLiteModel:
    """The model in a .tflite file's bytes; a ValueError for anything this reader does not cover
    (another file format, several subgraphs, quantised tensors, an operator not in `OPERATORS`)."""
    model = _root(data)
    graphs = model.tables(_MODEL_SUBGRAPHS)
    if len(graphs) != 1:
        raise ValueError(f"expected one subgraph, the file has {len(graphs)}")
    (graph,) = graphs
    buffers = model.tables(_MODEL_BUFFERS)
    names = _operator_names(model)
    operators = []
    for reader in graph.tables(_GRAPH_OPERATORS):
        op = names[reader.scalar(_OP_OPCODE, number_types.Uint32Flags, 0)]
        if op not in OPERATORS.values():
            raise ValueError(f"TensorFlow Lite operator {op} is not supported (not the expected model?)")
        operators.append(
            Operator(
                op,
                tuple(int(i) for i in reader.numbers(_OP_INPUTS, number_types.Int32Flags)),
                tuple(int(i) for i in reader.numbers(_OP_OUTPUTS, number_types.Int32Flags)),
                _options(op, reader),
            )
        )
    return TFLiteModel(
        [_tensor(reader, buffers) for reader in graph.tables(_GRAPH_TENSORS)],
        operators,
        tuple(int(i) for i in graph.numbers(_GRAPH_INPUTS, number_types.Int32Flags)),
        tuple(int(i) for i in graph.numbers(_GRAPH_OUTPUTS, number_types.Int32Flags)),
    )


__all__ = ["OPERATORS", "Operator", "TFLiteModel", "Tensor", "parse_tflite"]
