"""ONNX Runtime sessions for every model (detection and embedding), configured one way."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """`None` = CUDA when this onnxruntime build offers it, else CPU; otherwise the list as given."""
    available = ort.get_available_providers()
    if providers is None:
        return [name for name in _PREFERRED if name in available]
    missing = [name for name in providers if name not in available]
    if missing:
        raise ValueError(f"ONNX Runtime providers not available: {missing}; available: {available}")
    return list(providers)


def create_session(
    model: Path | bytes, providers: Sequence[str] | None = None, threads: int = 0
) -> ort.InferenceSession:
    """A session with every graph optimisation on; `threads` = 0 leaves the count to ONNX Runtime."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    # Idle threads spinning after a run take the cores from the NumPy work between runs (and from
    # the other workers): MTCNN at 640x480, 72.8 ms spinning vs 51.6 ms not (BENCHMARKS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(source, sess_options=options, providers=resolve_providers(providers))
    log.debug("ONNX Runtime session on %s", session.get_providers())
    return session
