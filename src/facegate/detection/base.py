"""The interface every face detector implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

import numpy as np

from facegate.faces import DEFAULT_DETECTION, DetectionParams, Face


class Detector(ABC):
    """Finds the faces of one image; `detect` may be called from several threads at once.

    `name` says which detector produced a result (in logs and reports). A detector may hold threads or
    sessions: `close` releases them, after which `detect` must not be called; `with` closes too.
    """

    name: str

    @abstractmethod
    def detect(self, image: np.ndarray, params: DetectionParams = DEFAULT_DETECTION) -> list[Face]:
        """Faces in `image` (RGB uint8, H x W x 3), by decreasing score; `ValueError` for anything
        else, an `ImageError` for an image the detector will not take on."""

    @property
    def providers(self) -> tuple[str, ...]:
        """The runtimes its model runs on, in order of preference: its ONNX Runtime sessions'
        (`session.get_providers()`), or e.g. ("dlib",) for another runtime; () when it runs none."""
        return ()

    def close(self) -> None:  # noqa: B027 (a detector without resources has nothing to release)
        """Release what the detector holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
