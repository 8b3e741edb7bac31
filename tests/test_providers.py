"""Which runtime each model runs on, the error for a provider the installed build lacks, and the
decision to batch across requests (CUDA only) on real CPU sessions and a stand-in CUDA one."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from facegate.batching import ModelRunner, uses_batching
from facegate.config import Settings
from facegate.detection import MTCNN
from facegate.embedding.dlib_resnet import DlibEmbedder, DlibOnnxEmbedder
from facegate.runtime import RuntimeOptions, create_session, resolve_providers

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
needs_cpu_build = pytest.mark.skipif(
    CUDA in ort.get_available_providers(), reason="this onnxruntime build has CUDA"
)


def doubling_model() -> bytes:
    """A graph `y = 2 x` over float (N, 3) rows."""
    node = helper.make_node("Add", ["x", "x"], ["y"])
    rows = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([node], "double", [rows], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


class CudaStandIn:
    """An InferenceSession as onnxruntime-gpu reports it, running the real CPU one underneath."""

    def __init__(self) -> None:
        self._session = create_session(doubling_model())
        self.rows_per_run: list[int] = []

    def get_providers(self) -> list[str]:
        return [CUDA, CPU]

    def run(self, output_names: None, input_feed: dict[str, np.ndarray]) -> Sequence[np.ndarray]:
        self.rows_per_run.append(len(input_feed["x"]))
        return self._session.run(output_names, input_feed)


@needs_cpu_build
def test_a_provider_the_build_lacks_is_a_clear_error() -> None:
    with pytest.raises(ValueError) as error:
        resolve_providers([CUDA, CPU])
    message = str(error.value)
    assert f"onnxruntime {ort.__version__}" in message  # the installed build
    assert "CUDAExecutionProvider" in message and "onnxruntime-gpu" in message  # the fix
    assert f"onnxruntime-gpu=={ort.__version__}" in message


def test_an_unknown_provider_names_what_is_offered() -> None:
    with pytest.raises(ValueError, match=r"NoSuchExecutionProvider.*offers.*CPUExecutionProvider") as error:
        resolve_providers(["NoSuchExecutionProvider"])
    assert "onnxruntime-gpu" not in str(error.value)  # no GPU advice for a typo


@needs_cpu_build
def test_the_models_refuse_to_start_on_a_missing_provider() -> None:
    settings = Settings(_env_file=None, onnx_providers=CUDA)
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        MTCNN(settings.runtime())


def test_auto_picks_what_the_build_offers() -> None:
    chosen = resolve_providers(None)
    assert chosen[-1] == CPU
    assert (CUDA in chosen) == (CUDA in ort.get_available_providers())


def test_the_batch_wait_comes_from_the_settings() -> None:
    assert Settings(_env_file=None).runtime().batch_wait == pytest.approx(0.002)
    assert Settings(_env_file=None, gpu_batch_wait_ms=0).runtime().batch_wait == 0


def test_only_a_cuda_session_batches() -> None:
    assert uses_batching([CUDA, CPU], 0.002)
    assert not uses_batching([CPU], 0.002)
    assert not uses_batching([CUDA, CPU], 0.0)  # GPU_BATCH_WAIT_MS=0
    assert not uses_batching(["TensorrtExecutionProvider", CUDA, CPU], 0.002)
    assert not uses_batching([], 0.002)


def test_a_cpu_session_runs_each_call_as_it_is() -> None:
    session = create_session(doubling_model(), RuntimeOptions(batch_wait=0.002))
    runner = ModelRunner(session, "x", 0.002)
    assert runner.providers == (CPU,) and not runner.batched
    rows = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(runner(rows), 2 * rows)


def test_a_cuda_session_batches_concurrent_calls_with_the_same_results() -> None:
    session = CudaStandIn()
    runner = ModelRunner(session, "x", 0.05)
    try:
        assert runner.batched and runner.providers == (CUDA, CPU)
        submissions = [np.full((1 + caller % 3, 3), caller, np.float32) for caller in range(16)]
        with ThreadPoolExecutor(len(submissions)) as pool:
            results = list(pool.map(runner, submissions))
    finally:
        runner.close()
    for rows, result in zip(submissions, results, strict=True):
        np.testing.assert_array_equal(result, 2 * rows)
    assert sum(session.rows_per_run) == sum(len(rows) for rows in submissions)


@pytest.fixture(scope="module")
def onnx_embedder(tmp_path_factory: pytest.TempPathFactory) -> DlibOnnxEmbedder:
    return DlibOnnxEmbedder(tmp_path_factory.mktemp("models"), runtime=RuntimeOptions(batch_wait=0.002))


def test_each_model_reports_its_runtime(onnx_embedder: DlibOnnxEmbedder) -> None:
    with MTCNN(RuntimeOptions((CPU,), threads=1)) as detector:
        assert detector.providers == (CPU,)
    assert onnx_embedder.providers == (CPU,)
    assert not onnx_embedder._model.batched  # a CPU session never batches, whatever the wait
    assert DlibEmbedder().providers == ("dlib",)


def test_the_start_up_log_names_the_embedders_runtime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from facegate.embedding import create_embedder

    settings = Settings(_env_file=None, face_embedder="dlib", facegate_data_dir=tmp_path)
    with caplog.at_level("INFO", logger="facegate.embedding.factory"):
        create_embedder(settings)
    assert "Embedder dlib_resnet_v1+mirror on ['dlib']" in caplog.text
