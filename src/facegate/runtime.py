"""ONNX Runtime sessions for every model (detection and embedding), configured one way, and the
memory their runs use."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")
# Providers that only the onnxruntime-gpu wheel carries.
_GPU_BUILD_ONLY = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

# glibc's malloc options (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Buffers up to this size come from the heap and are reused run after run; larger ones are mapped
# and unmapped each time (page faults: the cost of ONNX Runtime without its arena). 32 MiB is the
# most glibc accepts on 64-bit, and MTCNN's tiles and batches stay under it.
_MMAP_THRESHOLD = 32 << 20
# Free heap kept for the next request; beyond it, a request's memory goes back to the system.
# A 1920x1080 crowd photo leaves 140-210 MiB free: kept, the next one runs without re-faulting
# it. A 36-megapixel photo or a tiny min_face_size leaves more, given back (BENCHMARKS.md).
RETAINED_FREE_BYTES = 256 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",  # free bytes the heap holds
            "keepcost",
        )
    ]


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc 2.33+ (mallinfo2); elsewhere memory is left to the allocator."""
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    if library is None or not hasattr(library, "mallinfo2") or not hasattr(library, "malloc_trim"):
        return None
    library.mallinfo2.restype = _MallInfo2
    return library


_LIBC = _glibc()


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How ONNX Runtime runs a model: its execution providers (None = `resolve_providers`'s choice),
    intra-op threads (0 = ONNX Runtime's default; for MTCNN, the lanes it spreads work over) and
    the seconds a model on CUDA gathers concurrent requests' rows for one run (0 = no batching;
    `facegate.batching`)."""

    providers: tuple[str, ...] | None = None
    threads: int = 0
    batch_wait: float = 0.0


DEFAULT_RUNTIME = RuntimeOptions()


def resolve_providers(providers: Sequence[str] | None) -> list[str]:
    """`None` = CUDA when this onnxruntime build offers it, else CPU; otherwise the list as given."""
    available = ort.get_available_providers()
    if providers is None:
        return [name for name in _PREFERRED if name in available]
    missing = [name for name in providers if name not in available]
    if missing:
        raise ValueError(_missing_providers(missing, available))
    return list(providers)


def _missing_providers(missing: list[str], available: list[str]) -> str:
    build = f"onnxruntime {ort.__version__} ({ort.get_device()} build)"
    message = f"ONNX_PROVIDERS names {missing}, which {build} lacks; it offers {available}"
    if any(name in _GPU_BUILD_ONLY for name in missing):
        message += (
            f". Install the GPU build in place of the CPU one: pip uninstall -y onnxruntime && "
            f"pip install onnxruntime-gpu=={ort.__version__} (README, Deployment: GPU)"
        )
    return message


def create_session(model: Path | bytes, runtime: RuntimeOptions = DEFAULT_RUNTIME) -> ort.InferenceSession:
    """A session with every graph optimisation on; `threads` = 0 leaves the count to ONNX Runtime."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = runtime.threads
    # Idle threads spinning after a run take the cores from the NumPy work between runs (and from
    # the other workers): MTCNN at 640x480, 72.8 ms spinning vs 51.6 ms not (BENCHMARKS.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ONNX Runtime's CPU arena never gives memory back, and grows past a run's peak as it
    # fragments (one abusive request left a worker at 9 GB). Without it, runs allocate from
    # malloc, tuned below to reuse buffers as fast as the arena did (BENCHMARKS.md).
    options.enable_cpu_mem_arena = False
    _tune_allocator()
    source = str(model) if isinstance(model, Path) else model
    session = ort.InferenceSession(
        source, sess_options=options, providers=resolve_providers(runtime.providers)
    )
    log.debug("ONNX Runtime session on %s", session.get_providers())
    return session


def _tune_allocator() -> None:
    """Keep freed blocks in the heap (glibc would return the top of it at once and map every
    large buffer afresh): `release_free_memory` decides when memory goes back.

    One heap for all threads: with a heap per thread (glibc's default, up to 8 per core) the
    lanes' buffers fragment several heaps, which keep growing (1.6x the CPU time of the arena at
    1920x1080, against 1.1-1.2x with one heap; BENCHMARKS.md). Inference allocates few, large blocks,
    so the shared heap's lock is not contended.
    """
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        _LIBC.mallopt(_M_TRIM_THRESHOLD, RETAINED_FREE_BYTES)
        _LIBC.mallopt(_M_ARENA_MAX, 1)


def release_free_memory() -> None:
    """Give free heap memory back to the system once over RETAINED_FREE_BYTES: after a request
    that needed more than usual, the process returns to its usual size (and the next request
    pays the page faults); under ordinary load the heap is reused as it is."""
    if _LIBC is not None and _LIBC.mallinfo2().fordblks > RETAINED_FREE_BYTES:
        _LIBC.malloc_trim(0)
