"""MTCNN face detection (PNet -> RNet -> ONet) on ONNX Runtime."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from facegate.config import available_cores
from facegate.detection import cascade
from facegate.detection.base import Detector
from facegate.detection.networks import build_network
from facegate.faces import DEFAULT_DETECTION, DetectionParams, Face
from facegate.imaging import ImageError
from facegate.runtime import DEFAULT_RUNTIME, RuntimeOptions, create_session

log = logging.getLogger(__name__)

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")

# IoU thresholds of the reference's NMS rounds (not user settings there either).
NMS_PNET_LEVEL = 0.5
NMS_PNET_ALL = 0.7
NMS_RNET = 0.7
NMS_ONET = 0.7  # over the smaller box

# The pyramid's levels together are at most this many pixels (29 MP at the defaults on a 40 MP
# image): PNet's time grows with them, and a tiny `min_face_size` upsamples (1 = 12x per side).
MAX_PYRAMID_PIXELS = 32_000_000
# Level pixels per PNet run: larger levels run in overlapping tiles (exact, cascade.pnet_tiles),
# so that a run's buffers stay bounded. ONNX Runtime plans them as one block (its memory
# pattern), about 90 bytes a level pixel (24 MB a tile): under runtime's mmap threshold, so the
# block is reused from the heap run after run rather than mapped and faulted in each time
# (BENCHMARKS.md, issue 29).
TILE_PIXELS = 1 << 18
# Tiles are full rows up to this many rows' worth of width; wider levels are tiled across too.
MIN_TILE_ROWS = 128
# Best PNet proposals kept per level, and over all levels: only reached with thresholds near 0,
# where every cell is a proposal and the pairwise NMS would otherwise grow with the square of
# the image size (the RNet and ONet crops with it).
MAX_PROPOSALS_PER_LEVEL = 10_000
MAX_CANDIDATES = 5_000
# Crop pixels per RNet/ONet run (128 crops of RNet's 24 x 24, 32 of ONet's 48 x 48), to bound
# the batch's buffers: one block of about 230 (RNet) or 365 (ONet) bytes a crop pixel, under
# runtime's mmap threshold like PNet's (64 ONet crops took 54 MB, mapped afresh every run).
MAX_BATCH_PIXELS = 32 * 48 * 48
# What a pyramid level costs besides its pixels (NumPy and ONNX Runtime calls), in pixels, for
# sharing the levels out evenly among the lanes.
LEVEL_OVERHEAD_PIXELS = 5_000


class DetectionBudgetError(ImageError):
    """The image and parameters need more than one request's budget (MAX_PYRAMID_PIXELS)."""

    status = 422


class MTCNN(Detector):
    """The three networks, built once; `detect` may be called from several threads at once."""

    name = "mtcnn"

    def __init__(self, runtime: RuntimeOptions = DEFAULT_RUNTIME) -> None:
        """`runtime.threads`: the cores detection may use (0 = all this process may run on)."""
        if runtime.threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = every available core), got {runtime.threads}")
        lanes = runtime.threads or available_cores()
        one_core = replace(runtime, threads=1)
        # PNet runs once per pyramid level, on small maps where ONNX Runtime's threads hardly
        # help (two ran it 1.3x faster than one at 640x480). The levels are shared out among
        # `lanes` threads instead, each network running on one core, and so are the crops of
        # RNet and ONet, whose NumPy cropping then runs in parallel too.
        self._pnet = create_session(build_network("pnet"), one_core)
        self._rnet = create_session(build_network("rnet"), one_core)
        self._onet = create_session(build_network("onet"), one_core)
        self._lanes = lanes
        # The calling thread runs one lane itself; these threads run the others.
        self._lane_pool = ThreadPoolExecutor(lanes - 1, "mtcnn-lane") if lanes > 1 else None
        self._closed = False
        log.info("MTCNN on %s in %d lane(s)", self._pnet.get_providers(), lanes)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self._pnet.get_providers())

    def close(self) -> None:
        """Stop the lane threads (after the detections under way); `detect` then refuses."""
        self._closed = True
        if self._lane_pool is not None:
            self._lane_pool.shutdown(wait=True)

    def detect(self, image: np.ndarray, params: DetectionParams = DEFAULT_DETECTION) -> list[Face]:
        """Faces in `image` (RGB uint8, H x W x 3), by decreasing score."""
        if self._closed:
            raise RuntimeError("this MTCNN has been closed")
        _check_image(image)
        # The compiled loops read rows of contiguous pixels: one copy here of a strided view, not
        # one per pyramid and crop batch.
        image = np.ascontiguousarray(image)
        boxes = self._propose(image, params)
        if len(boxes):
            boxes = self._refine(image, boxes, params.threshold_rnet)
        if not len(boxes):
            return []
        boxes, landmarks = self._output(image, boxes, params.threshold_onet)
        return _faces(boxes, landmarks, image.shape[0], image.shape[1])

    def _propose(self, image: np.ndarray, params: DetectionParams) -> np.ndarray:
        """PNet over the pyramid: squared candidate boxes with scores, best first."""
        height, width = image.shape[:2]
        scales = cascade.pyramid_scales(height, width, params.min_face_size)
        sizes = [cascade.level_size(height, width, scale) for scale in scales]
        _check_budget(height, width, params.min_face_size, sum(h * w for h, w in sizes))
        if not scales:
            return np.empty((0, 5), np.float32)
        pyramid = cascade.AreaPyramid(image)

        def run_lane(levels: list[int]) -> dict[int, np.ndarray]:
            return {
                level: self._level_proposals(pyramid, sizes[level], scales[level], params) for level in levels
            }

        shares = _share_out(sizes, self._lanes)
        per_level: dict[int, np.ndarray] = {}
        for lane_result in self._in_lanes(run_lane, shares):
            per_level.update(lane_result)
        # Level order, as a serial run would concatenate them: ties in score then sort the same way.
        boxes = cascade.sort_by_score(np.concatenate([per_level[level] for level in range(len(scales))]))
        boxes = boxes[:MAX_CANDIDATES]
        return cascade.square(boxes[cascade.nms(boxes, NMS_PNET_ALL)])

    def _run_on_crops(
        self, session: ort.InferenceSession, image: np.ndarray, boxes: np.ndarray, size: int
    ) -> list[np.ndarray]:
        """The network's outputs for `size` x `size` crops of `boxes`: the boxes split among the
        lanes, in chunks of at most MAX_BATCH_PIXELS."""
        step = max(1, min(MAX_BATCH_PIXELS // (size * size), -(-len(boxes) // self._lanes)))
        chunks = [boxes[start : start + step] for start in range(0, len(boxes), step)]

        def run(chunk: np.ndarray) -> list[np.ndarray]:
            return session.run(None, {"crops": cascade.crop_patches(image, chunk, size)})

        return [np.concatenate(parts) for parts in zip(*self._in_lanes(run, chunks), strict=True)]

    def _in_lanes(self, work: Callable[[_Item], _Result], items: list[_Item]) -> list[_Result]:
        """`work` on each item, in order: the first in the calling thread, the others in the lanes."""
        if self._lane_pool is None or len(items) < 2:
            return [work(item) for item in items]
        futures = [self._lane_pool.submit(work, item) for item in items[1:]]
        return [work(items[0])] + [future.result() for future in futures]

    def _level_proposals(
        self, pyramid: cascade.AreaPyramid, size: tuple[int, int], scale: float, params: DetectionParams
    ) -> np.ndarray:
        """PNet's boxes on the pyramid level of `size` (at `scale`) after the level's own NMS, best first.

        The level runs in tiles of at most TILE_PIXELS, their best proposals merged as they come.
        """
        height, width = size
        tile_width = min(width, TILE_PIXELS // MIN_TILE_ROWS)
        found: cascade.Cells | None = None
        for top, bottom, rows in cascade.pnet_tiles(height, TILE_PIXELS // tile_width):
            for left, right, cols in cascade.pnet_tiles(width, tile_width):
                tile = pyramid.level(height, width, (top, bottom), (left, right))
                regression, probability = self._pnet.run(None, {"image": tile[None]})
                origin = (top // cascade.PNET_STRIDE, left // cascade.PNET_STRIDE)
                probability, regression = probability[0, 0, :rows, :cols], regression[0, :, :rows, :cols]
                cells = cascade.Cells.over(probability, regression, params.threshold_pnet, origin)
                found = cells if found is None else cascade.Cells.join([found, cells])
                found = found.best(MAX_PROPOSALS_PER_LEVEL)
        assert found is not None  # a level has at least one tile
        boxes = found.boxes(scale)
        return boxes[cascade.nms(boxes, NMS_PNET_LEVEL)]

    def _refine(self, image: np.ndarray, boxes: np.ndarray, threshold: float) -> np.ndarray:
        """RNet: rescored, regressed and squared boxes over `threshold`, best first."""
        regression, probability = self._run_on_crops(self._rnet, image, boxes, 24)
        boxes = cascade.refine(boxes, regression, probability[:, 0])
        boxes = cascade.sort_by_score(boxes[boxes[:, 4] > threshold])
        return cascade.square(boxes[cascade.nms(boxes, NMS_RNET)])

    def _output(
        self, image: np.ndarray, boxes: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """ONet: final boxes with scores and (N, 5, 2) keypoints, best first."""
        regression, landmarks, probability = self._run_on_crops(self._onet, image, boxes, 48)
        points = cascade.landmarks_in_image(boxes, landmarks)
        boxes = cascade.refine(boxes, regression, probability[:, 0])
        selected = np.flatnonzero(boxes[:, 4] > threshold)
        selected = selected[np.argsort(-boxes[selected, 4], kind="stable")]
        boxes, points = boxes[selected], points[selected]
        kept = cascade.nms(boxes, NMS_ONET, over_min=True)
        return boxes[kept], points[kept]


def _share_out(sizes: list[tuple[int, int]], lanes: int) -> list[list[int]]:
    """Level indices for each of `lanes` lanes (none empty), evening out their pixels.

    Greedy, largest level first, each to the lane with the least work so far.
    """
    lanes = max(1, min(lanes, len(sizes)))
    work = [0] * lanes
    shares: list[list[int]] = [[] for _ in range(lanes)]
    for level in sorted(range(len(sizes)), key=lambda i: -sizes[i][0] * sizes[i][1]):
        lane = work.index(min(work))
        shares[lane].append(level)
        work[lane] += sizes[level][0] * sizes[level][1] + LEVEL_OVERHEAD_PIXELS
    return shares


def _check_budget(height: int, width: int, min_face_size: int, pyramid_pixels: int) -> None:
    """Refuse, naming the smallest `min_face_size` that fits, a pyramid over MAX_PYRAMID_PIXELS."""
    if pyramid_pixels <= MAX_PYRAMID_PIXELS:
        return
    smallest = next(
        size
        for size in itertools.count(min_face_size + 1)
        if cascade.pyramid_pixels(height, width, size) <= MAX_PYRAMID_PIXELS
    )
    raise DetectionBudgetError(
        f"min_face_size={min_face_size} on a {width}x{height} image needs an image pyramid of "
        f"{pyramid_pixels / 1e6:.1f} megapixels, over the limit of {MAX_PYRAMID_PIXELS / 1e6:.0f}: "
        f"use min_face_size >= {smallest}, or a smaller image"
    )


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"image must be an RGB uint8 array of shape (H, W, 3), got {dtype} {shape}")


def _faces(boxes: np.ndarray, landmarks: np.ndarray, height: int, width: int) -> list[Face]:
    # The reference clips boxes (not keypoints) to the last pixel row/column.
    clipped = boxes[:, :4].astype(np.float64)
    np.clip(clipped[:, 0::2], 0, width - 1, out=clipped[:, 0::2])
    np.clip(clipped[:, 1::2], 0, height - 1, out=clipped[:, 1::2])
    return [
        Face(
            box=(float(x1), float(y1), float(x2), float(y2)),
            score=float(score),
            keypoints=points.astype(np.float64),
        )
        for (x1, y1, x2, y2), score, points in zip(clipped, boxes[:, 4], landmarks, strict=True)
    ]
