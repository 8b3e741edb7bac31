"""Reader for dlib's binary serialisation of the face-recognition ResNet (`anet_type`).

dlib writes a network from the outside in: every wrapper writes a version integer and then its
sub-network *before* its own layer details, so the file is a run of headers down to the input
layer followed by the layer details from the input outward. Which wrapper sits where is fixed by
the network's C++ type (`anet_type` in dlib's `examples/dnn_face_recognition_ex.cpp`), so the
reader walks a description of that type rather than guessing from the bytes.

The result is a flat list of `Layer` records in forward order (input first); `dlib_onnx` turns
it into an ONNX graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Layer kinds. "tag"/"skip"/"add_prev" carry the tag number in `Layer.tag`.
CON, AFFINE, RELU, MAX_POOL, AVG_POOL, FC, TAG, SKIP, ADD_PREV = (
    "con",
    "affine",
    "relu",
    "max_pool",
    "avg_pool",
    "fc",
    "tag",
    "skip",
    "add_prev",
)
_WRAPPER_ONLY = (TAG, SKIP)  # wrappers with no layer details of their own


@dataclass
class Layer:
    """One layer of the network with whatever parameters the file holds for it."""

    kind: str
    tag: int = 0
    # con: filters (O, I, kh, kw), bias (O,), stride (y, x), pad (y, x)
    # affine: gamma (C,), beta (C,)
    # pools: size (y, x) (0, 0 = global), stride, pad
    # fc: weight (inputs, outputs)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    size: tuple[int, int] = (0, 0)
    version: int = 0  # the wrapper's version integer (decides whether a third tensor follows)


@dataclass
class DlibResNet:
    """The parsed network: the input normalisation and the layers in forward order."""

    input_size: int
    channel_means: tuple[float, float, float]  # R, G, B; input value = (pixel - mean) / 256
    layers: list[Layer]


def _block(filters: int, down: bool) -> list[Layer]:
    """`ares` / `ares_down` of dlib's example, in forward order."""
    first_stride = 2 if down else 1
    body = [
        Layer(TAG, tag=1),
        Layer(CON, stride=(first_stride, first_stride)),
        Layer(AFFINE),
        Layer(RELU),
        Layer(CON),
        Layer(AFFINE),
    ]
    if down:
        # tag2 <- residual branch; skip1 back to the block input; 2x2 average pool; add tag2.
        body += [Layer(TAG, tag=2), Layer(SKIP, tag=1), Layer(AVG_POOL), Layer(ADD_PREV, tag=2)]
    else:
        body += [Layer(ADD_PREV, tag=1)]
    return [*body, Layer(RELU)]


def network_layout() -> list[Layer]:
    """Empty `Layer` records for dlib's `anet_type`, input first."""
    layers = [Layer(CON), Layer(AFFINE), Layer(RELU), Layer(MAX_POOL)]
    levels = [(32, 3, False), (64, 3, True), (128, 2, True), (256, 2, True)]
    for filters, residuals, starts_down in levels:
        if starts_down:
            layers += _block(filters, down=True)
        for _ in range(residuals):
            layers += _block(filters, down=False)
    layers += _block(256, down=True)  # alevel0
    return [*layers, Layer(AVG_POOL), Layer(FC)]


class _Reader:
    """dlib's primitive encodings (dlib/serialize.h)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise ValueError(f"unexpected end of file at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        control = self._take(1)[0]
        value = int.from_bytes(self._take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def boolean(self) -> bool:
        return self._take(1) == b"1"

    def string(self) -> str:
        return self._take(self.integer()).decode("ascii")

    def real(self) -> float:
        mantissa, exponent = self.integer(), self.integer()
        if exponent >= 32000:
            raise ValueError("non-finite value in model file")
        return float(mantissa) * 2.0**exponent

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise ValueError(f"unsupported tensor version {version} at byte {self.pos}")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        if (version := self.integer()) != 1:
            raise ValueError(f"unsupported alias tensor version {version}")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]

    def expect(self, name: str) -> None:
        found = self.string()
        if found != name:
            raise ValueError(f"expected layer {name!r}, found {found!r} at byte {self.pos}")


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    """Cut a layer's flat `params` tensor into the arrays its alias tensors describe."""
    flat, parts, start = params.reshape(-1), [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(flat[start : start + size].reshape(shape))
        start += size
    if start != flat.size:
        raise ValueError("layer parameters do not match their declared shapes")
    return parts


def _read_details(reader: _Reader, layer: Layer) -> None:
    """Fill `layer` from its serialised details (dlib/dnn/layers.h)."""
    if layer.kind == CON:
        reader.expect("con_4")
        params = reader.tensor()
        filters, rows, cols = reader.integer(), reader.integer(), reader.integer()
        layer.stride = (reader.integer(), reader.integer())
        layer.pad = (reader.integer(), reader.integer())
        weight_shape, bias_shape = reader.alias(), reader.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            reader.real()
        weight, bias = _split(params, weight_shape, bias_shape)
        if weight.shape[0] != filters or weight.shape[2:] != (rows, cols):
            raise ValueError("convolution shape disagrees with its parameters")
        layer.arrays = {"weight": weight, "bias": bias.reshape(-1)}
    elif layer.kind == AFFINE:
        reader.expect("affine_")
        params = reader.tensor()
        gamma_shape, beta_shape = reader.alias(), reader.alias()
        reader.integer()  # mode: per channel (conv mode) in this network
        gamma, beta = _split(params, gamma_shape, beta_shape)
        layer.arrays = {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)}
    elif layer.kind in (MAX_POOL, AVG_POOL):
        reader.expect(f"{layer.kind}_2")
        layer.size = (reader.integer(), reader.integer())
        layer.stride = (reader.integer(), reader.integer())
        layer.pad = (reader.integer(), reader.integer())
    elif layer.kind == FC:
        reader.expect("fc_2")
        outputs, inputs = reader.integer(), reader.integer()
        params = reader.tensor()
        weight_shape = reader.alias()
        reader.alias()  # the biases: empty without bias
        if reader.integer() != 1:  # bias mode: FC_NO_BIAS
            raise ValueError("expected a fully connected layer without bias")
        for _ in range(4):
            reader.real()
        (weight,) = _split(params, weight_shape)
        layer.arrays = {"weight": weight.reshape(inputs, outputs)}
    elif layer.kind == RELU:
        reader.expect("relu_")
    elif layer.kind == ADD_PREV:
        reader.expect("add_prev_")
    else:
        raise AssertionError(layer.kind)


def _read_wrapper_tail(reader: _Reader, version: int) -> None:
    """Training state every ordinary wrapper stores after its details; empty in a trained model."""
    for _ in range(3):
        reader.boolean()
    for _ in range(3 if version == 2 else 2):
        reader.tensor()


def parse_dlib_resnet(data: bytes) -> DlibResNet:
    """Parse the bytes of `dlib_face_recognition_resnet_model_v1.dat`."""
    reader = _Reader(data)
    if reader.integer() != 1:
        raise ValueError("not a dlib loss-layer file")
    reader.expect("loss_metric_2")
    reader.real(), reader.real()  # margin and distance threshold: training-only
    layers = network_layout()
    # Headers, outside in, down to the wrapper that holds the input layer.
    for layer in reversed(layers[1:]):
        layer.version = reader.integer()
    innermost = layers[0]
    innermost.version = reader.integer()
    reader.expect("input_rgb_image_sized")
    means = (reader.real(), reader.real(), reader.real())
    rows, cols = reader.integer(), reader.integer()
    _read_details(reader, innermost)
    for _ in range(3):
        reader.boolean()
    for _ in range(3):
        reader.tensor()
    if innermost.version == 3:
        reader.integer()  # sample expansion factor
    # Details, input outward; tag and skip wrappers have none.
    for layer in layers[1:]:
        if layer.kind not in _WRAPPER_ONLY:
            _read_details(reader, layer)
            _read_wrapper_tail(reader, layer.version)
    if reader.pos != len(data):
        raise ValueError(f"{len(data) - reader.pos} unread bytes at the end of the model file")
    if rows != cols:
        raise ValueError("expected a square input")
    return DlibResNet(input_size=rows, channel_means=means, layers=layers)


def load_dlib_resnet(path: Path) -> DlibResNet:
    return parse_dlib_resnet(path.read_bytes())


__all__ = ["DlibResNet", "Layer", "load_dlib_resnet", "network_layout", "parse_dlib_resnet"]
