"""PNet, RNet and ONet as in-memory ONNX graphs built from the Keras-layout weights.

The graphs take raw pixel values (0..255, NHWC as images and crops come) and fold the reference's
normalisation `(x - 127.5) / 128` into the first convolution, so no separate pass over the input
is needed. Each network's two-way softmax becomes `sigmoid(face - not_face)` computed from one
merged output layer: the same probability with one head fewer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegate.detection.weights import NetworkName, load_weights

OPSET = 17
PIXEL_MEAN = 127.5
PIXEL_SCALE = 128.0
# ONNX Runtime's fast convolutions (its NCHWc layout) take input channels in blocks of 8 (AVX2) or
# 16 (AVX-512). A layer with 10 or 28 input channels falls back to plain NCHW with a reorder on
# either side, which cost PNet more than its largest convolution; layers are padded with zero
# channels to a multiple of 16 instead.
CHANNEL_BLOCK = 16

Dim = int | str  # a fixed size or a symbolic one


class _Graph:
    """Appends layers to an ONNX graph, taking the weights in the order the Keras model built them."""

    def __init__(self, weights: list[np.ndarray]) -> None:
        self._weights: Iterator[np.ndarray] = iter(weights)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0
        # Zero channels the last convolution appended, which the next kernel's input must match.
        self._padded_channels = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def constant(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self._name(prefix)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: int = 1, **attributes: Any) -> list[str]:
        names = [self._name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, **attributes))
        return names

    def take(self) -> np.ndarray:
        return next(self._weights)

    def done(self) -> None:
        if next(self._weights, None) is not None:
            raise ValueError("MTCNN weights file has more arrays than the network uses")

    def conv_prelu(self, x: str, *, normalise_input: bool = False) -> str:
        kernel, bias, slope = self.take(), self.take(), self.take()
        y = self._conv(
            x, *self._onnx_kernel(kernel, bias, normalise_input=normalise_input), channels=len(bias)
        )
        # Keras shares the slope over height and width: one value per channel.
        return self.prelu(y, np.pad(slope.reshape(-1), (0, self._padded_channels)).reshape(-1, 1, 1))

    def conv_prelu_pool(self, x: str, size: int, *, same: bool, normalise_input: bool = False) -> str:
        """Convolution, PReLU and max pooling, pooled before the PReLU: the PReLU's passes then
        run on a quarter of the pixels, and no buffer but the convolution's output has the input's.

        Pooling commutes with a function that never decreases: PReLU with a slope >= 0. With a
        slope a < 0, PReLU falls, then rises, so its largest value over a window is
        `max(max x, a * min x)` = `max x + relu(-a * max(-x) - max x)`. Such channels also come
        out of the convolution negated (negated weights and bias: exactly -x), in the slots that
        the channel padding fills with zeros (PNet's first layer: 6 of its 10 channels, 6 free).
        """
        kernel, bias, slope = self.take(), self.take(), self.take()
        weight, bias = self._onnx_kernel(kernel, bias, normalise_input=normalise_input)
        slope = slope.reshape(-1)
        negative = np.flatnonzero(slope < 0)
        weight, bias = np.concatenate([weight, -weight[negative]]), np.concatenate([bias, -bias[negative]])
        pooled = self.max_pool(self._conv(x, weight, bias, channels=len(slope)), size, same=same)
        # A 1x1 convolution: kappa * x (as `prelu`) where the slope is >= 0; where it is < 0,
        # -a * max(-x) - max x from the negated copy.
        channels = len(slope) + self._padded_channels
        mix = np.zeros((channels, channels), np.float32)
        mix[: len(slope), : len(slope)] = np.diag(_kappa(slope))
        mix[negative, negative] = -1
        mix[negative, len(slope) + np.arange(len(negative))] = -slope[negative]
        (scaled,) = self.node("Conv", [pooled, self.constant(mix[:, :, None, None])])
        return self._add_relu(pooled, scaled, np.pad(slope > 1, (0, channels - len(slope))).reshape(-1, 1, 1))

    def _onnx_kernel(
        self, kernel: np.ndarray, bias: np.ndarray, *, normalise_input: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """An (out, in, h, w) kernel and its bias from Keras' (h, w, in, out) one, with zero
        inputs for the channels the last layer padded."""
        weight = kernel.transpose(3, 2, 0, 1)
        if normalise_input:
            bias = bias - weight.sum(axis=(1, 2, 3)) * (PIXEL_MEAN / PIXEL_SCALE)
            weight = weight / PIXEL_SCALE
        return self._pad_input_channels(weight), bias

    def _conv(self, x: str, weight: np.ndarray, bias: np.ndarray, *, channels: int) -> str:
        """A convolution whose output channels are padded with zeros (zero kernel and bias) to a
        multiple of CHANNEL_BLOCK; the next kernel gives every channel past the first `channels`
        zero weights (the padding stays 0 through PReLU and pooling)."""
        extra = -len(bias) % CHANNEL_BLOCK
        weight = np.pad(weight, ((0, extra), (0, 0), (0, 0), (0, 0)))
        self._padded_channels = len(bias) + extra - channels
        (y,) = self.node("Conv", [x, self.constant(weight), self.constant(np.pad(bias, (0, extra)))])
        return y

    def _pad_input_channels(self, weight: np.ndarray) -> np.ndarray:
        """An (out, in, h, w) kernel with zero inputs for the channels the last layer padded."""
        padding = self._padded_channels
        self._padded_channels = 0
        return np.pad(weight, ((0, 0), (0, padding), (0, 0), (0, 0)))

    def prelu(self, x: str, slope: np.ndarray) -> str:
        """PReLU as `x + sign * relu(kappa * x)`: kappa = slope - 1 and sign = +1 where slope <= 1,
        kappa = 1 - slope and sign = -1 where slope > 1 (the sign's Mul only when a slope is > 1).

        ONNX Runtime runs Mul by a per-channel constant, Relu and Add inside its blocked
        convolution layout (NCHWc); its PRelu kernel, Max and Min leave that layout with a reorder
        on either side, and PRelu broadcasts the slope element by element. PNet, RNet and ONet ran
        7.8, 8.8 and 3.4 ms with PRelu, 6.4, 4.4 and 2.1 ms like this (BENCHMARKS.md). Within float
        rounding of PRelu (below 1e-6 on the networks' outputs).
        """
        (scaled,) = self.node("Mul", [x, self.constant(_kappa(slope))])
        return self._add_relu(x, scaled, slope > 1)

    def _add_relu(self, x: str, scaled: str, negate: np.ndarray) -> str:
        """`x + sign * relu(scaled)`, sign = -1 where `negate`."""
        (relu,) = self.node("Relu", [scaled])
        if negate.any():
            (relu,) = self.node("Mul", [relu, self.constant(np.where(negate, -1, 1).astype(np.float32))])
        (y,) = self.node("Add", [x, relu])
        return y

    def max_pool(self, x: str, size: int, *, same: bool) -> str:
        # TensorFlow's "same" pads at the bottom/right only, like ONNX SAME_UPPER.
        padding = "SAME_UPPER" if same else "VALID"
        (y,) = self.node("MaxPool", [x], kernel_shape=[size, size], strides=[2, 2], auto_pad=padding)
        return y

    def dense_prelu(self, x: str, keras_feature_shape: tuple[int, int, int]) -> str:
        """Flatten NCHW features into a dense layer trained on Keras' `Permute((2, 1, 3))` + flatten.

        The rows of the kernel are reordered once here instead of transposing every activation.
        """
        if self._padded_channels:
            raise ValueError("a dense layer cannot follow a channel-padded convolution")
        kernel, bias, slope = self.take(), self.take(), self.take()
        height, width, channels = keras_feature_shape
        kernel = kernel.reshape(width, height, channels, -1).transpose(2, 1, 0, 3).reshape(kernel.shape)
        (flat,) = self.node("Flatten", [x], axis=1)
        (y,) = self.node("Gemm", [flat, self.constant(kernel), self.constant(bias)])
        return self.prelu(y, slope)

    def heads(self, x: str, regression_sizes: list[int], *, conv: bool) -> list[str]:
        """The regression heads and the face probability from one merged layer."""
        kernels, biases = [], []
        for _ in range(len(regression_sizes) + 1):
            kernels.append(self.take())
            biases.append(self.take())
        class_kernel, class_bias = kernels.pop(), biases.pop()
        kernels.append(class_kernel[..., 1:] - class_kernel[..., :1])
        biases.append(class_bias[1:] - class_bias[:1])
        kernel, bias = np.concatenate(kernels, axis=-1), np.concatenate(biases)
        if conv:
            weight, bias = self._onnx_kernel(kernel, bias)
            (y,) = self.node("Conv", [x, self.constant(weight), self.constant(bias)])
        else:
            (y,) = self.node("Gemm", [x, self.constant(kernel), self.constant(bias)])
        sizes = self.constant(np.asarray([*regression_sizes, 1], np.int64), "split")
        *regressions, logit = self.node("Split", [y, sizes], outputs=len(regression_sizes) + 1, axis=1)
        (probability,) = self.node("Sigmoid", [logit])
        return [*regressions, probability]

    def model(
        self, name: str, inputs: list[onnx.ValueInfoProto], outputs: dict[str, tuple[str, list[Dim]]]
    ) -> bytes:
        """The checked, serialised model; `outputs` maps public names to (internal name, shape)."""
        self.done()
        declared = []
        for public, (internal, shape) in outputs.items():
            self.nodes.append(helper.make_node("Identity", [internal], [public]))
            declared.append(helper.make_tensor_value_info(public, TensorProto.FLOAT, shape))
        graph = helper.make_graph(self.nodes, name, inputs, declared, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8  # readable by every onnxruntime that supports opset 17
        onnx.checker.check_model(model)
        return model.SerializeToString()


def _kappa(slope: np.ndarray) -> np.ndarray:
    """The factor of `_Graph.prelu`'s relu term: slope - 1 where the slope is <= 1, else 1 - slope."""
    return np.where(slope > 1, 1 - slope, slope - 1).astype(np.float32)


def _nchw(graph: _Graph, x: str) -> str:
    (y,) = graph.node("Transpose", [x], perm=[0, 3, 1, 2])
    return y


def build_pnet(weights: list[np.ndarray]) -> bytes:
    """Fully convolutional: `image` float32 pixels (1, H, W, 3) -> `regression` (1, 4, h, w), `probability`
    (1, 1, h, w), one cell per 12x12 window at a stride of 2 pixels."""
    g = _Graph(weights)
    x = g.conv_prelu_pool(_nchw(g, "image"), 2, same=True, normalise_input=True)
    x = g.conv_prelu(x)
    x = g.conv_prelu(x)
    regression, probability = g.heads(x, [4], conv=True)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, "height", "width", 3])
    outputs: dict[str, tuple[str, list[int | str]]] = {
        "regression": (regression, [1, 4, "h", "w"]),
        "probability": (probability, [1, 1, "h", "w"]),
    }
    return g.model("pnet", [image], outputs)


def build_rnet(weights: list[np.ndarray]) -> bytes:
    """`crops` float32 (N, 24, 24, 3) pixels -> `regression` (N, 4), `probability` (N, 1)."""
    g = _Graph(weights)
    x = g.conv_prelu(_nchw(g, "crops"), normalise_input=True)
    x = g.max_pool(x, 3, same=True)
    x = g.conv_prelu(x)
    x = g.max_pool(x, 3, same=False)
    x = g.conv_prelu(x)
    x = g.dense_prelu(x, (3, 3, 64))
    regression, probability = g.heads(x, [4], conv=False)
    crops = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["n", 24, 24, 3])
    outputs: dict[str, tuple[str, list[int | str]]] = {
        "regression": (regression, ["n", 4]),
        "probability": (probability, ["n", 1]),
    }
    return g.model("rnet", [crops], outputs)


def build_onet(weights: list[np.ndarray]) -> bytes:
    """`crops` float32 (N, 48, 48, 3) pixels -> `regression` (N, 4), `landmarks` (N, 10: five x then
    five y, relative to the crop), `probability` (N, 1)."""
    g = _Graph(weights)
    x = g.conv_prelu(_nchw(g, "crops"), normalise_input=True)
    x = g.max_pool(x, 3, same=True)
    x = g.conv_prelu(x)
    x = g.max_pool(x, 3, same=False)
    x = g.conv_prelu(x)
    x = g.max_pool(x, 2, same=True)
    x = g.conv_prelu(x)
    x = g.dense_prelu(x, (3, 3, 128))
    regression, landmarks, probability = g.heads(x, [4, 10], conv=False)
    crops = helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["n", 48, 48, 3])
    outputs: dict[str, tuple[str, list[int | str]]] = {
        "regression": (regression, ["n", 4]),
        "landmarks": (landmarks, ["n", 10]),
        "probability": (probability, ["n", 1]),
    }
    return g.model("onet", [crops], outputs)


_BUILDERS = {"pnet": build_pnet, "rnet": build_rnet, "onet": build_onet}


def build_network(name: NetworkName) -> bytes:
    """The serialised ONNX model of one MTCNN network with the published weights."""
    return _BUILDERS[name](load_weights(name))
