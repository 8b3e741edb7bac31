"""`FACE_EMBEDDER=mobilefacenet512` (the default): the 512-D MobileFaceNet-style network that the npm
package faceplugin-face-recognition-js@0.0.1 ships as `fr_feature.onnx`, behind `Embedder`.

The published graph takes one float (1, 3, 112, 112) BGR face and flattens its output with a
Reshape to (1, −1). We rebuild it exactly, with the signature of every embedding network here:
uint8 (N, 112, 112, 3) RGB crops in, any batch size; the channel swap to BGR and the scaling
(x − 127) / 128 happen inside the graph, and the final Reshape becomes a Flatten (the same values
for one face, and per face for many); each PReLU is rewritten as `onnx_ops.fast_prelu` (bit for
bit the same, a fraction of the time on ONNX Runtime's CPU provider). Faces are aligned to the
ArcFace template from MTCNN's five keypoints, and each crop's mirror image is averaged in: on LFW
that scored best (BGR + mirror: 95.4% TPIR on fold 1 against 92.2% for RGB, README's model card).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facegate.embedding import model_cache
from facegate.embedding.arcface import CHIP_SIZE, TemplateAlignedEmbedder
from facegate.embedding.npm_models import FR_FEATURE, model_file
from facegate.embedding.onnx_ops import fast_prelu
from facegate.runtime import DEFAULT_RUNTIME, RuntimeOptions

MODEL_NAME = "mobilefacenet512_faceplugin_v1"
DIM = 512
# Bump when the graph this module builds changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 2
INPUT_NAME, OUTPUT_NAME = "chips", "descriptors"
_PIXEL_MEAN, _PIXEL_SCALE = 127.0, 1 / 128  # as the network was exported to be fed


def build_onnx(source: bytes, source_sha256: str = "") -> onnx.ModelProto:
    """The published network with our input and output: see the module docstring."""
    published = onnx.load_from_string(source).graph
    (model_input,), (model_output,) = published.input, published.output
    *body, reshape = published.node
    if reshape.op_type != "Reshape" or reshape.output[0] != model_output.name:
        raise ValueError("fr_feature.onnx: expected the graph to end with a Reshape to its output")
    constants = {item.name: item for item in published.initializer}
    nodes, extra = [], []
    for node in body:
        node.doc_string = ""  # the exporter's stack traces: noise, and a user's home paths
        if node.op_type == "PRelu":
            slope = constants.pop(node.input[1])
            prelu, prelu_constants = fast_prelu(node.input[0], node.output[0], numpy_helper.to_array(slope))
            nodes += prelu
            extra += prelu_constants
        else:
            nodes.append(node)
    bgr = numpy_helper.from_array(np.array([2, 1, 0], np.int64), "bgr_channels")
    mean = numpy_helper.from_array(np.array(_PIXEL_MEAN, np.float32), "pixel_mean")
    scale = numpy_helper.from_array(np.array(_PIXEL_SCALE, np.float32), "pixel_scale")
    prologue = [
        helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["pixels", bgr.name], ["pixels_bgr"], axis=3),
        helper.make_node("Sub", ["pixels_bgr", mean.name], ["centred"]),
        helper.make_node("Mul", ["centred", scale.name], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], [model_input.name], perm=[0, 3, 1, 2]),
    ]
    flatten = helper.make_node("Flatten", [reshape.input[0]], [OUTPUT_NAME], axis=1)
    constants.pop(reshape.input[1])
    graph = helper.make_graph(
        [*prologue, *nodes, flatten], MODEL_NAME, [], [], [bgr, mean, scale, *constants.values(), *extra]
    )
    props = {"source_sha256": source_sha256, "converter": str(CONVERTER_VERSION), "source": FR_FEATURE.spec}
    return model_cache.image_model(graph, (INPUT_NAME, CHIP_SIZE), (OUTPUT_NAME, DIM), props)


class MobileFaceNet512Embedder(TemplateAlignedEmbedder):
    """The 512-D network on ONNX Runtime; the source file is checked against its pinned SHA-256."""

    dim = DIM

    def __init__(
        self, model_dir: Path, cache_dir: Path, mirror: bool = True, runtime: RuntimeOptions = DEFAULT_RUNTIME
    ) -> None:
        """`model_dir`: where set-up put the npm file (FACEGATE_MODEL_DIR); `cache_dir`: where the
        rebuilt graph is cached."""
        source = model_file(FR_FEATURE, model_dir)
        data = model_cache.converted_model(source, cache_dir, CONVERTER_VERSION, build_onnx)
        super().__init__(data, INPUT_NAME, MODEL_NAME, mirror, runtime)
