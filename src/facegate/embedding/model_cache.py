"""Models converted to ONNX by us, cached in `$FACEGATE_DATA_DIR/models` and checked on every load."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
from onnx import TensorProto, helper

log = logging.getLogger(__name__)

# Builds the ONNX model from the source file's bytes; the second argument is the source's SHA-256.
Converter = Callable[[bytes, str], onnx.ModelProto]


_OPSET, _IR_VERSION = 17, 8  # IR 8 loads on every onnxruntime >= 1.14


def image_model(
    graph: onnx.GraphProto, inputs: tuple[str, int], outputs: tuple[str, int], props: dict[str, str]
) -> onnx.ModelProto:
    """A checked model of `graph` (nodes and initializers) with the signature every embedding network
    here has: `inputs` = (name, size) of uint8 (N, size, size, 3) RGB crops, `outputs` = (name, dim)
    of float (N, dim) vectors; any batch size. `props` go into the model's metadata."""
    (input_name, size), (output_name, dim) = inputs, outputs
    graph.input.append(helper.make_tensor_value_info(input_name, TensorProto.UINT8, ["N", size, size, 3]))
    graph.output.append(helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", dim]))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="facegate"
    )
    model.ir_version = _IR_VERSION
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
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
    if stamp.get("onnx_sha256") != sha256(data):
        log.warning("cached model %s is corrupt; converting again", model_path)
        return None
    return data


def converted_model(source: Path, cache_dir: Path, converter_version: int, convert: Converter) -> bytes:
    """The ONNX bytes for the model file at `source`, converted once by `convert` and cached in
    `cache_dir` as `<source stem>.onnx` with a stamp beside it.

    The cache is keyed by the SHA-256 of the source file and the converter version, and the
    converted file's own SHA-256 is checked on every load: a changed source or a damaged cache
    file is converted again.
    """
    source_bytes = source.read_bytes()
    expected: dict[str, object] = {"source_sha256": sha256(source_bytes), "converter": converter_version}
    model_path = cache_dir / f"{source.stem}.onnx"
    stamp_path = cache_dir / f"{source.stem}.onnx.json"
    data = _cached(model_path, stamp_path, expected)
    if data is not None:
        return data
    log.info("converting %s to ONNX into %s", source, model_path)
    data = convert(source_bytes, str(expected["source_sha256"])).SerializeToString()
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(model_path, data)
    atomic_write(stamp_path, json.dumps({**expected, "onnx_sha256": sha256(data)}).encode())
    return data


__all__ = ["Converter", "atomic_write", "converted_model", "image_model", "sha256"]
