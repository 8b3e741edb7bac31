"""The numeric parts of the MTCNN cascade: pyramid, proposals, NMS, crops and box arithmetic.

Semantics follow the reference (ipazc/mtcnn 1.0.0) so that results match it: boxes are float
(x1, y1, x2, y2) without rounding, widths for regression are `x2 - x1 + 1`, NMS suppresses a box
when *any* higher-scoring box overlaps it (not only the kept ones), and crops sample like
TensorFlow's `crop_and_resize` on the reference's normalised coordinates.

The loops over pixels and boxes (the pyramid, the crops, NMS) are compiled by numba: in NumPy they
were passes over whole temporary arrays and took most of a detection's time besides the networks.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from numba.core.typing import Signature

log = logging.getLogger(__name__)

SCALE_FACTOR = 0.709
PNET_WINDOW = 12
PNET_STRIDE = 2

# Fill value of crop samples outside the image: the reference pads its normalised image with 0,
# which is this pixel value.
OUTSIDE_PIXEL = np.float32(127.5)

Span = tuple[int, int]  # (start, stop) along one side of a level


# The image's pixels, which may be a read-only array (one made from a Pillow image is).
_PIXELS = numba.types.Array(numba.uint8, 2, "C", readonly=True)


def _compiled(signature: Signature | list[Signature]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """numba's compiled loop for `signature`, built when this module is imported, without the GIL
    (the lanes run it in parallel) and with NumPy's division by zero (inf or NaN, no exception).
    Its machine code is cached beside this file or in the user's cache folder (NUMBA_CACHE_DIR
    elsewhere), so only a machine's first process compiles (about 2 s); where numba finds no
    writable place it compiles in every process instead."""

    def compile_loop(function: Callable[..., None]) -> Callable[..., None]:
        try:
            return numba.njit(signature, cache=True, nogil=True, error_model="numpy")(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            _warn_no_cache()
            return numba.njit(signature, nogil=True, error_model="numpy")(function)

    return compile_loop


@functools.cache
def _warn_no_cache() -> None:
    log.warning(
        "no writable cache folder for numba: detection's loops compiled in this process (about 2 s "
        "each start); set NUMBA_CACHE_DIR to a writable folder"
    )


def pyramid_scales(height: int, width: int, min_face_size: int) -> list[float]:
    """Scales at which PNet's 12-pixel window sees faces from `min_face_size` up to the image size.

    Levels whose smaller side is under 12 pixels cannot hold a window and are left out, so a
    `min_face_size` larger than the image gives no level at all.
    """
    scales = []
    scale = PNET_WINDOW / min_face_size
    while min(level_size(height, width, scale)) >= PNET_WINDOW:
        scales.append(scale)
        scale *= SCALE_FACTOR
    return scales


def pyramid_pixels(height: int, width: int, min_face_size: int) -> int:
    """Pixels of all the pyramid's levels together: what PNet's work grows with."""
    sizes = (level_size(height, width, scale) for scale in pyramid_scales(height, width, min_face_size))
    return sum(h * w for h, w in sizes)


def pnet_tiles(extent: int, tile: int) -> list[tuple[int, int, int | None]]:
    """`(start, stop, cells)` along one side of a level: input ranges whose first `cells` PNet
    output cells (all of them for None) make up the whole level's output, each cell once.

    Output cell j sees input [2j, 2j + 12). A tile starting at an even offset computes the same
    cells as the whole level wherever their window lies inside the tile, and the last tile, which
    ends with the level, its edge cells too (with the same "same" padding). Tiles overlap by the
    window minus the stride. An extent that fits in `tile` is one tile, even when its length is odd
    (rounding the tile down to even would split off a strip of one window, run on its own).
    """
    if extent <= tile:
        return [(0, extent, None)]
    tile = max(PNET_WINDOW, tile - tile % PNET_STRIDE)
    cells = (tile - PNET_WINDOW) // PNET_STRIDE + 1
    tiles: list[tuple[int, int, int | None]] = []
    start = 0
    while start + tile < extent:
        tiles.append((start, start + tile, cells))
        start += cells * PNET_STRIDE
    tiles.append((start, extent, None))
    return tiles


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    # The reference truncates the scaled size.
    return int(height * scale), int(width * scale)


class AreaPyramid:
    """Downscaled copies of one image by area averaging, as TensorFlow's AREA resize makes them.

    Each output pixel is the mean of the input area it covers, partial pixels weighted by their
    covered fraction. Pillow's BOX filter rounds that coverage to whole pixels, which moves
    PNet's scores enough to lose or add borderline faces against the reference.

    Rows come from an integral along y computed once for all levels (RowIntegral); columns are
    then a few weighted taps per output pixel (one per input column a cell can touch). Both run as
    compiled loops (numba), a row of the level at a time: in NumPy the same arithmetic took 4-5x
    longer, in passes over whole temporary arrays (BENCHMARKS.md, issue 29).
    """

    def __init__(self, image: np.ndarray) -> None:
        self._height, self._width = image.shape[:2]
        self._integral = RowIntegral(image)

    def level(
        self, height: int, width: int, rows: Span | None = None, cols: Span | None = None
    ) -> np.ndarray:
        """The (height, width, 3) float32 level, or its tile of `rows` x `cols` (start, stop),
        bit for bit the same values; several threads may ask for levels at once."""
        (top, bottom), (left, right) = rows or (0, height), cols or (0, width)
        index, weight = _column_taps(self._width, width, left, right)
        # The area normalisation folded into the column weights.
        weight *= np.float32(height * width / (self._height * self._width))
        edges = _cell_edges(self._height, height)[top : bottom + 1]
        below = np.minimum(edges.astype(np.intp), self._height - 1)
        level = np.empty((bottom - top, right - left, 3), np.float32)
        integral = self._integral
        _area_level(
            integral.pixels,
            integral.within,
            integral.bases,
            below,
            (edges - below).astype(np.float32),
            index,
            weight,
            level.reshape(bottom - top, -1),
        )
        return level


# Rows per block of RowIntegral: the sum of fewer 8-bit rows than this fits in 16 bits.
_INTEGRAL_BLOCK_ROWS = 256


class RowIntegral:
    """Sums over an image's first rows (entry i sums rows 0 to i - 1), in 6 bytes a pixel.

    Entry i is the sum of the whole blocks of _INTEGRAL_BLOCK_ROWS rows above it (`bases`,
    float32, one row per block) plus that of the rows since its block began (`within`, uint16:
    at most 255 rows of at most 255). Both are whole numbers, exact in float32 below 2**24
    (images under 65,793 rows), so entries come out as a float32 running sum would give them, in
    half its memory (a float32 one took 432 MB for a 36-megapixel photo). Rows are flattened to
    width x 3 values.
    """

    def __init__(self, image: np.ndarray) -> None:
        height = image.shape[0]
        self.pixels = np.ascontiguousarray(image).reshape(height, -1)
        self.within = np.empty((height + 1, self.pixels.shape[1]), np.uint16)
        self.bases = np.empty((height // _INTEGRAL_BLOCK_ROWS + 1, self.pixels.shape[1]), np.float32)
        _running_sums(self.pixels, self.within, self.bases)


@_compiled(numba.void(_PIXELS, numba.uint16[:, ::1], numba.float32[:, ::1]))
def _running_sums(pixels: np.ndarray, within: np.ndarray, bases: np.ndarray) -> None:
    """Fill RowIntegral's `within` and `bases` for the (H, W * 3) `pixels`."""
    within[0] = 0
    bases[0] = 0
    for row in range(1, pixels.shape[0] + 1):
        block, start = divmod(row, _INTEGRAL_BLOCK_ROWS)
        if start:
            for x in range(pixels.shape[1]):
                within[row, x] = within[row - 1, x] + pixels[row - 1, x]
        else:  # a new block: its base takes the rows so far, its running sum starts again
            for x in range(pixels.shape[1]):
                bases[block, x] = bases[block - 1, x] + np.float32(within[row - 1, x]) + pixels[row - 1, x]
                within[row, x] = 0


@_compiled(
    numba.void(
        _PIXELS,
        numba.uint16[:, ::1],
        numba.float32[:, ::1],
        numba.intp[::1],
        numba.float32[::1],
        numba.intp[:, ::1],
        numba.float32[:, ::1],
        numba.float32[:, ::1],
    )
)
def _area_level(
    pixels: np.ndarray,
    within: np.ndarray,
    bases: np.ndarray,
    below: np.ndarray,
    fraction: np.ndarray,
    index: np.ndarray,
    weight: np.ndarray,
    level: np.ndarray,
) -> None:
    """Fill `level` (rows, columns x 3) from the integral: output row r sums the input rows between
    the edges r and r + 1 (input row `below` plus its covered `fraction`), output column j the
    input columns `index[:, j]` times `weight[:, j]`.

    The integral of piecewise-constant rows is piecewise linear: at a fractional edge it is the
    integral at the row below plus the covered fraction of that row's pixels.
    """
    channels = 3
    first = index.min() * channels
    span = (index.max() + 1) * channels - first
    previous = np.empty(span, np.float32)
    current = np.empty(span, np.float32)
    sums = np.empty(span, np.float32)
    for edge in range(len(below)):
        # Scalars and row slices taken out of the loops: otherwise LLVM, unable to rule out that
        # the arrays overlap, reloads them every step and vectorises nothing (3x slower).
        row, covered = below[edge], fraction[edge]
        row_pixels, row_within = pixels[row, first : first + span], within[row, first : first + span]
        row_base = bases[row // _INTEGRAL_BLOCK_ROWS, first : first + span]
        for x in range(span):
            current[x] = row_pixels[x] * covered + (np.float32(row_within[x]) + row_base[x])
        if edge:
            for x in range(span):
                sums[x] = current[x] - previous[x]
            # The first tap sets, the others add: one loop over all taps, from a zeroed row or with
            # a branch on the tap, measured 10-30 % slower.
            out = level[edge - 1]
            for column in range(index.shape[1]):
                source, target = index[0, column] * channels - first, column * channels
                tap_weight = weight[0, column]
                out[target] = sums[source] * tap_weight
                out[target + 1] = sums[source + 1] * tap_weight
                out[target + 2] = sums[source + 2] * tap_weight
            for tap in range(1, index.shape[0]):
                for column in range(index.shape[1]):
                    source, target = index[tap, column] * channels - first, column * channels
                    tap_weight = weight[tap, column]
                    out[target] += sums[source] * tap_weight
                    out[target + 1] += sums[source + 1] * tap_weight
                    out[target + 2] += sums[source + 2] * tap_weight
        previous, current = current, previous


def _cell_edges(size_in: int, size_out: int) -> np.ndarray:
    """Input coordinates of the `size_out + 1` edges of equal output cells."""
    return np.arange(size_out + 1) * (size_in / size_out)


def _column_taps(size_in: int, size_out: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """(taps, stop - start) input columns and their covered widths for the output columns
    `start:stop`.

    A cell `size_in / size_out` wide touches at most `ceil(size_in / size_out) + 1` columns;
    taps past the cell (or past the image) get weight 0.
    """
    edges = _cell_edges(size_in, size_out)[start : stop + 1]
    first, last = edges[:-1], edges[1:]
    taps = int(np.ceil(size_in / size_out)) + 1
    column = np.minimum(first.astype(np.intp), size_in - 1) + np.arange(taps)[:, None]
    weight = np.clip(np.minimum(last, column + 1) - np.maximum(first, column), 0, None)
    return np.minimum(column, size_in - 1), weight.astype(np.float32)


@dataclass(frozen=True, slots=True)
class Cells:
    """PNet output cells of one level: position in the level's output, score and box offsets."""

    rows: np.ndarray
    cols: np.ndarray
    scores: np.ndarray
    offsets: np.ndarray  # (N, 4)

    @classmethod
    def over(
        cls, probability: np.ndarray, regression: np.ndarray, threshold: float, origin: tuple[int, int]
    ) -> Cells:
        """The cells over `threshold` of PNet's (h, w) `probability` and (4, h, w) `regression`
        for a tile whose first cell is `origin` (row, column) in the level."""
        rows, cols = np.nonzero(probability > threshold)
        return cls(rows + origin[0], cols + origin[1], probability[rows, cols], regression[:, rows, cols].T)

    def best(self, count: int) -> Cells:
        """The `count` best cells by score, ties in raster order (as a stable sort of the whole
        level's map gives them), best first."""
        order = np.lexsort((self.cols, self.rows, -self.scores))[:count]
        return Cells(self.rows[order], self.cols[order], self.scores[order], self.offsets[order])

    @staticmethod
    def join(parts: list[Cells]) -> Cells:
        return Cells(
            np.concatenate([part.rows for part in parts]),
            np.concatenate([part.cols for part in parts]),
            np.concatenate([part.scores for part in parts]),
            np.concatenate([part.offsets for part in parts]),
        )

    def boxes(self, scale: float) -> np.ndarray:
        """(N, 5) rows `x1, y1, x2, y2, score` in image pixels, in the cells' order."""
        # The reference's window spans [stride * i + 1, stride * i + 12] with a regression unit of 11.
        x1 = (PNET_STRIDE * self.cols + 1).astype(np.float32)
        y1 = (PNET_STRIDE * self.rows + 1).astype(np.float32)
        size = np.float32(PNET_WINDOW - 1)
        boxes = np.stack([x1, y1, x1 + size, y1 + size], axis=1) + self.offsets * size
        return np.concatenate([boxes / np.float32(scale), self.scores[:, None]], axis=1)


def nms(boxes: np.ndarray, threshold: float, *, over_min: bool = False) -> np.ndarray:
    """Indices of the rows to keep from `boxes` sorted best first (columns x1, y1, x2, y2, ...).

    A box is dropped when any better box overlaps it by more than `threshold`, measured over the
    union, or over the smaller of the two boxes when `over_min`.
    """
    keep = np.ones(len(boxes), dtype=bool)
    if len(boxes) > 1:  # one box: nothing to overlap
        # The overlap is compared in the boxes' own precision, as NumPy compares with a Python float.
        _suppress(boxes, boxes.dtype.type(threshold), over_min, keep)
    return np.flatnonzero(keep)


@numba.njit(inline="always")
def _positive_part(value: float) -> float:
    # `max(value, 0)` would compute in float64 (int and float32 promote to it) and round the
    # overlap differently from NumPy's float32; `value - value` is 0 in the value's own type.
    return value if value > 0 else value - value


@_compiled(
    [
        numba.void(numba.types.Array(dtype, 2, "A", readonly=True), dtype, numba.bool_, numba.bool_[::1])
        for dtype in (numba.float32, numba.float64)
    ]
)
def _suppress(boxes: np.ndarray, threshold: float, over_min: bool, keep: np.ndarray) -> None:
    """Clear `keep[i]` where a box before i overlaps box i by more than `threshold`."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in range(1, len(boxes)):
        x1, y1, x2, y2 = boxes[i, 0], boxes[i, 1], boxes[i, 2], boxes[i, 3]
        for better in range(i):
            width = min(boxes[better, 2], x2) - max(boxes[better, 0], x1)
            height = min(boxes[better, 3], y2) - max(boxes[better, 1], y1)
            inter = _positive_part(width) * _positive_part(height)
            denominator = min(areas[better], areas[i]) if over_min else areas[better] + areas[i] - inter
            # 0 / 0 (two empty boxes) is NaN, which overlaps nothing, as in NumPy.
            if inter / denominator > threshold:
                keep[i] = False
                break


def sort_by_score(boxes: np.ndarray) -> np.ndarray:
    return boxes[np.argsort(-boxes[:, 4], kind="stable")]


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares of their longer side around the same centre."""
    result = boxes.copy()
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    result[:, 0] = boxes[:, 0] + (width - side) * 0.5
    result[:, 1] = boxes[:, 1] + (height - side) * 0.5
    result[:, 2] = result[:, 0] + side
    result[:, 3] = result[:, 1] + side
    return result


def box_sizes(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Width and height as the reference's regression uses them (inclusive pixel count)."""
    return boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1


def refine(boxes: np.ndarray, offsets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Boxes moved by a network's regression (in units of the box size), with its scores."""
    width, height = box_sizes(boxes)
    result = np.empty((len(boxes), 5), dtype=np.float32)
    result[:, :4] = boxes[:, :4] + offsets * np.stack([width, height, width, height], axis=1)
    result[:, 4] = scores
    return result


def landmarks_in_image(boxes: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """(N, 5, 2) points from ONet's (N, 10) crop-relative output (five x, then five y)."""
    width, height = box_sizes(boxes)
    xs = landmarks[:, :5] * width[:, None] + boxes[:, 0:1] - 1
    ys = landmarks[:, 5:] * height[:, None] + boxes[:, 1:2] - 1
    return np.stack([xs, ys], axis=2)


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) float32 pixel crops of `boxes`, bilinearly resampled.

    Reproduces `tf.image.crop_and_resize` as the reference calls it: box coordinates divided by
    the image size and mapped back onto `size - 1` pixels, samples outside the image filled.
    """
    height, width = image.shape[:2]
    ys, y_inside = _sample_positions(boxes[:, 1], boxes[:, 3], height, size)
    xs, x_inside = _sample_positions(boxes[:, 0], boxes[:, 2], width, size)
    top, y_weight = _split_position(ys, height)
    left, x_weight = _split_position(xs, width)
    patches = np.empty((len(boxes), size, size, 3), np.float32)
    _bilinear_crops(
        np.ascontiguousarray(image).reshape(height, -1),
        top,
        y_weight,
        y_inside,
        left,
        x_weight,
        x_inside,
        patches.reshape(len(boxes), size, -1),
    )
    return patches


@numba.njit(inline="always")
def _lerp(a: np.float32, b: np.float32, weight: np.float32) -> np.float32:
    return a + (b - a) * weight


@_compiled(
    numba.void(
        _PIXELS,
        numba.intp[:, ::1],
        numba.float32[:, ::1],
        numba.bool_[:, ::1],
        numba.intp[:, ::1],
        numba.float32[:, ::1],
        numba.bool_[:, ::1],
        numba.float32[:, :, ::1],
    )
)
def _bilinear_crops(
    pixels: np.ndarray,
    top: np.ndarray,
    y_weight: np.ndarray,
    y_inside: np.ndarray,
    left: np.ndarray,
    x_weight: np.ndarray,
    x_inside: np.ndarray,
    patches: np.ndarray,
) -> None:
    """Fill `patches` (N, size, size x 3): sample (i, j) of crop n interpolates the pixels at rows
    `top[n, i]` and the one below, columns `left[n, j]` and the one right of it (the last row and
    column repeated), or is OUTSIDE_PIXEL where `y_inside[n, i]` or `x_inside[n, j]` is false."""
    channels = 3
    last_row, last_column = pixels.shape[0] - 1, pixels.shape[1] // channels - 1
    for crop in range(patches.shape[0]):
        for i in range(patches.shape[1]):
            out = patches[crop, i]
            upper_row = pixels[top[crop, i]]
            lower_row = pixels[min(top[crop, i] + 1, last_row)]
            row_weight, row_inside = y_weight[crop, i], y_inside[crop, i]
            for j in range(patches.shape[1]):
                if not (row_inside and x_inside[crop, j]):
                    for channel in range(channels):
                        out[j * channels + channel] = OUTSIDE_PIXEL
                    continue
                column_weight = x_weight[crop, j]
                first = left[crop, j] * channels
                second = min(left[crop, j] + 1, last_column) * channels
                for channel in range(channels):
                    upper = _lerp(
                        np.float32(upper_row[first + channel]),
                        np.float32(upper_row[second + channel]),
                        column_weight,
                    )
                    lower = _lerp(
                        np.float32(lower_row[first + channel]),
                        np.float32(lower_row[second + channel]),
                        column_weight,
                    )
                    out[j * channels + channel] = _lerp(upper, lower, row_weight)


def _sample_positions(
    start: np.ndarray, stop: np.ndarray, extent: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sample coordinates (N, size) along one axis and whether each lies inside the image."""
    last = extent - 1
    first = start / extent * last
    step = (stop - start) / extent * last / (size - 1)
    positions = first[:, None] + step[:, None] * np.arange(size, dtype=np.float32)
    return positions, (positions >= 0) & (positions <= last)


def _split_position(positions: np.ndarray, extent: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer pixel below each position (clipped into the image) and the fraction beyond it."""
    floor = np.floor(positions)
    index = np.clip(floor, 0, extent - 1).astype(np.intp)
    return index, (positions - floor).astype(np.float32)
