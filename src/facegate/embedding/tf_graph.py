"""A reader for frozen TensorFlow graphs (`GraphDef` .pb files), without TensorFlow.

Only what a frozen inference graph needs is decoded: each node's name, op, inputs and attributes,
and constant tensors as NumPy arrays. The field numbers are those of TensorFlow's
`graph.proto`, `node_def.proto`, `attr_value.proto`, `tensor.proto` and `tensor_shape.proto`;
the encoding is protobuf's wire format (varints, length-delimited fields, fixed 32/64-bit values).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

# Wire types of protobuf's encoding.
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
# TensorFlow's DataType enum (types.proto) → NumPy.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
}


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _signed(value: int) -> int:
    """int32/int64 fields hold negative numbers as 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of one message: ints for varints, raw bytes
    for the rest."""
    at, end = 0, len(data)
    while at < end:
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if wire == _VARINT:
            value, at = _varint(data, at)
        elif wire == _BYTES:
            length, at = _varint(data, at)
            value, at = data[at : at + length], at + length
        elif wire in (_FIXED32, _FIXED64):
            size = 4 if wire == _FIXED32 else 8
            value, at = data[at : at + size], at + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number})")
        if at > end:
            raise ValueError("truncated protobuf message")
        yield number, wire, value


def _ints(wire: int, value: int | memoryview) -> list[int]:
    """A repeated integer field's values: one varint, or a packed run of them."""
    if wire == _VARINT:
        return [_signed(value)]  # type: ignore[arg-type]
    data, at, out = value, 0, []
    while at < len(data):  # type: ignore[arg-type]
        number, at = _varint(data, at)  # type: ignore[arg-type]
        out.append(_signed(number))
    return out


def _floats(wire: int, value: int | memoryview) -> list[float]:
    """A repeated float field's values: one fixed32, or a packed run of them."""
    raw = bytes(value)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@dataclass
class Node:
    """One `NodeDef`: data inputs as `name` or `name:k`; control inputs (`^name`) are dropped."""

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, object] = field(default_factory=dict)


def _shape(data: memoryview) -> list[int]:
    """`TensorShapeProto`: dim = 2 (each `Dim` has size = 1)."""
    dims = []
    for number, _, dim in fields(data):
        if number == 2:
            size = [value for key, _, value in fields(dim) if key == 1]  # type: ignore[arg-type]
            dims.append(_signed(size[0]) if size else 0)  # type: ignore[arg-type]
    return dims


def _tensor(data: memoryview) -> np.ndarray:
    """`TensorProto`: dtype = 1, tensor_shape = 2, tensor_content = 4, float_val = 5,
    int_val = 7, int64_val = 10, bool_val = 11. Fewer listed values than elements means the last
    one is repeated (TensorFlow's rule for splat constants)."""
    dtype, shape, content, values = 0, [], None, []
    for number, wire, value in fields(data):
        if number == 1:
            assert isinstance(value, int)  # a varint field
            dtype = value
        elif number == 2:
            shape = _shape(value)  # type: ignore[arg-type]
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            values += _floats(wire, value)
        elif number in (7, 10, 11):
            values += _ints(wire, value)
    if dtype not in DTYPES:
        raise ValueError(f"unsupported tensor dtype {dtype}")
    numpy_type, count = DTYPES[dtype], int(np.prod(shape, dtype=np.int64))
    if content is not None:
        return np.frombuffer(content, numpy_type).reshape(shape).copy()
    array = np.array(values, dtype=numpy_type)
    if len(array) < count:
        array = np.concatenate([array, np.full(count - len(array), array[-1] if len(array) else 0)])
    return array.astype(numpy_type).reshape(shape)


def _list(data: memoryview) -> list[object]:
    """`AttrValue.ListValue`: s = 2, i = 3, f = 4, b = 5, type = 6 (the kinds graphs use)."""
    items: list[object] = []
    for number, wire, value in fields(data):
        if number == 2:
            items.append(bytes(value).decode())
        elif number in (3, 5, 6):
            items += _ints(wire, value)
        elif number == 4:
            items += _floats(wire, value)
    return items


def _attr(data: memoryview) -> object:
    """`AttrValue`: list = 1, s = 2, i = 3, f = 4, b = 5, type = 6, shape = 7, tensor = 8."""
    for number, wire, value in fields(data):
        if number == 1:
            return _list(value)  # type: ignore[arg-type]
        if number == 2:
            return bytes(value).decode()
        if number in (3, 6):
            return _signed(value)  # type: ignore[arg-type]
        if number == 4:
            return _floats(wire, value)[0]
        if number == 5:
            return bool(value)
        if number == 7:
            return _shape(value)  # type: ignore[arg-type]
        if number == 8:
            return _tensor(value)  # type: ignore[arg-type]
    return None


def _node(data: memoryview) -> Node:
    """`NodeDef`: name = 1, op = 2, input = 3, attr = 5 (map entries: key = 1, value = 2)."""
    node = Node(name="", op="")
    for number, _, value in fields(data):
        if number == 1:
            node.name = bytes(value).decode()
        elif number == 2:
            node.op = bytes(value).decode()
        elif number == 3:
            name = bytes(value).decode()
            if not name.startswith("^"):
                node.inputs.append(name.removesuffix(":0"))
        elif number == 5:
            entry = {key: item for key, _, item in fields(value)}  # type: ignore[arg-type]
            node.attrs[bytes(entry[1]).decode()] = _attr(entry[2]) if 2 in entry else None  # type: ignore[arg-type]
    return node


def parse_graph(data: bytes) -> dict[str, Node]:
    """The nodes of a serialised `GraphDef` (node = 1) by name, in file order."""
    nodes = [_node(value) for number, _, value in fields(memoryview(data)) if number == 1]  # type: ignore[arg-type]
    if not nodes:
        raise ValueError("not a TensorFlow GraphDef: no nodes")
    return {node.name: node for node in nodes}


__all__ = ["DTYPES", "Node", "fields", "parse_graph"]
