"""The numeric parts of the MTCNN cascade: pyramid, proposals, NMS, crops and box arithmetic.

Semantics follow the reference (ipazc/mtcnn 1.0.0) so that results match it: boxes are float
(x1, y1, x2, y2) without rounding, widths for regression are `x2 - x1 + 1`, NMS suppresses a box
when *any* higher-scoring box overlaps it (not only the kept ones), and crops sample like
TensorFlow's `crop_and_resize` on the reference's normalised coordinates.
"""

from __future__ import annotations

import numpy as np

SCALE_FACTOR = 0.709
PNET_WINDOW = 12
PNET_STRIDE = 2

# Fill value of crop samples outside the image: the reference pads its normalised image with 0,
# which is this pixel value.
OUTSIDE_PIXEL = 127.5

# NMS blocks: rows of the pairwise IoU matrix computed at a time, to bound memory.
_NMS_BLOCK = 1024


def pyramid_scales(height: int, width: int, min_face_size: int, max_level_pixels: int) -> list[float]:
    """Scales at which PNet's 12-pixel window sees faces from `min_face_size` up to the image size.

    Levels whose smaller side is under 12 pixels cannot hold a window and are left out, so a
    `min_face_size` larger than the image gives no level at all. Levels over `max_level_pixels`
    (upsampling for a tiny `min_face_size`, or enormous images) are left out to bound memory.
    """
    scales = []
    scale = PNET_WINDOW / min_face_size
    while True:
        level_height, level_width = level_size(height, width, scale)
        if min(level_height, level_width) < PNET_WINDOW:
            return scales
        if level_height * level_width <= max_level_pixels:
            scales.append(scale)
        scale *= SCALE_FACTOR


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    # The reference truncates the scaled size.
    return int(height * scale), int(width * scale)


class AreaPyramid:
    """Downscaled copies of one image by area averaging, as TensorFlow's AREA resize makes them.

    Each output pixel is the mean of the input area it covers, partial pixels weighted by their
    covered fraction. Pillow's BOX filter rounds that coverage to whole pixels, which moves
    PNet's scores enough to lose or add borderline faces against the reference.

    Rows come from an integral along y computed once for all levels; columns are then a few
    weighted gathers per level (one per input column a cell can touch), since a cumulative sum
    along x would have to be redone for every level and numpy's is slow on that axis.
    """

    def __init__(self, image: np.ndarray) -> None:
        self._height, self._width = image.shape[:2]
        self._image = image
        self._cumulative_rows = _running_sum(image)

    def level(self, height: int, width: int) -> np.ndarray:
        """The (height, width, 3) float32 level; several threads may ask for levels at once."""
        rows = _row_sums(self._cumulative_rows, self._image, height)
        index, weight = _column_taps(self._width, width)
        # Weights come repeated per channel, with the area normalisation folded in, so that each
        # product runs along whole rows: numpy broadcasting a (width, 1) weight over (width, 3)
        # pixels works three values at a time and is several times slower.
        weight = np.repeat(weight * np.float32(height * width / (self._height * self._width)), 3, axis=1)
        level = np.take(rows, index[0], axis=1).reshape(height, -1) * weight[0]
        for tap_index, tap_weight in zip(index[1:], weight[1:], strict=True):
            level += np.take(rows, tap_index, axis=1).reshape(height, -1) * tap_weight
        return level.reshape(height, width, 3)


def _running_sum(image: np.ndarray) -> np.ndarray:
    """Float32 cumulative sums over rows with a leading zero row: entry i sums the first i rows."""
    result = np.zeros((image.shape[0] + 1, *image.shape[1:]), np.float32)
    # numpy's cumsum over the first axis of a C-ordered array is several times slower than
    # adding whole rows in a loop (the same additions in the same order); converting the pixels
    # to float once, not in every addition, takes another third off (2.6 -> 1.7 ms at 640x480).
    pixels = image.astype(np.float32)
    for row in range(image.shape[0]):
        np.add(result[row], pixels[row], out=result[row + 1])
    return result


def _cell_edges(size_in: int, size_out: int) -> np.ndarray:
    """Input coordinates of the `size_out + 1` edges of equal output cells."""
    return np.arange(size_out + 1) * (size_in / size_out)


def _row_sums(integral: np.ndarray, image: np.ndarray, size_out: int) -> np.ndarray:
    """(size_out, W, 3) sums over the rows each output row covers, from the integral over rows.

    The integral of piecewise-constant rows is piecewise linear: at a fractional cell edge it is
    the integral at the row below plus the covered fraction of that row's pixels.
    """
    size_in = image.shape[0]
    edges = _cell_edges(size_in, size_out)
    below = np.minimum(edges.astype(np.intp), size_in - 1)
    at_edges = image[below] * (edges - below).astype(np.float32)[:, None, None]
    at_edges += integral[below]
    return np.diff(at_edges, axis=0)


def _column_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(taps, size_out) input columns and their covered widths for each output column.

    A cell `size_in / size_out` wide touches at most `ceil(size_in / size_out) + 1` columns;
    taps past the cell (or past the image) get weight 0.
    """
    edges = _cell_edges(size_in, size_out)
    start, stop = edges[:-1], edges[1:]
    taps = int(np.ceil(size_in / size_out)) + 1
    column = np.minimum(start.astype(np.intp), size_in - 1) + np.arange(taps)[:, None]
    weight = np.clip(np.minimum(stop, column + 1) - np.maximum(start, column), 0, None)
    return np.minimum(column, size_in - 1), weight.astype(np.float32)


def pnet_proposals(
    probability: np.ndarray, regression: np.ndarray, scale: float, threshold: float
) -> np.ndarray:
    """(N, 5) rows `x1, y1, x2, y2, score` in image pixels, best first, for cells over `threshold`.

    `probability` is (h, w) and `regression` (4, h, w) as PNet returns them for one level.
    """
    rows, cols = np.nonzero(probability > threshold)
    scores = probability[rows, cols]
    order = np.argsort(-scores, kind="stable")
    rows, cols, scores = rows[order], cols[order], scores[order]
    offsets = regression[:, rows, cols].T
    # The reference's window spans [stride * i + 1, stride * i + 12] with a regression unit of 11.
    x1 = (PNET_STRIDE * cols + 1).astype(np.float32)
    y1 = (PNET_STRIDE * rows + 1).astype(np.float32)
    size = np.float32(PNET_WINDOW - 1)
    boxes = np.stack([x1, y1, x1 + size, y1 + size], axis=1) + offsets * size
    return np.concatenate([boxes / np.float32(scale), scores[:, None]], axis=1)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: np.ndarray, threshold: float, *, over_min: bool = False) -> np.ndarray:
    """Indices of the rows to keep from `boxes` sorted best first (columns x1, y1, x2, y2, ...).

    A box is dropped when any better box overlaps it by more than `threshold`, measured over the
    union, or over the smaller of the two boxes when `over_min`.
    """
    count = len(boxes)
    areas = box_areas(boxes)
    keep = np.ones(count, dtype=bool)
    for start in range(0, count, _NMS_BLOCK):
        stop = min(start + _NMS_BLOCK, count)
        better, block = boxes[:stop, None, :4], boxes[None, start:stop, :4]
        width = np.minimum(better[..., 2], block[..., 2]) - np.maximum(better[..., 0], block[..., 0])
        height = np.minimum(better[..., 3], block[..., 3]) - np.maximum(better[..., 1], block[..., 1])
        inter = np.maximum(width, 0) * np.maximum(height, 0)
        a, b = areas[:stop, None], areas[None, start:stop]
        denominator = np.minimum(a, b) if over_min else a + b - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            overlapping = inter / denominator > threshold
        # Only better boxes (earlier rows) count.
        overlapping &= np.arange(stop)[:, None] < np.arange(start, stop)[None, :]
        keep[start:stop] = ~overlapping.any(axis=0)
    return np.flatnonzero(keep)


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
    # One gather of all four neighbours by flat pixel index: several times faster than fancy
    # indexing with broadcast row and column arrays.
    rows = np.stack([top, np.minimum(top + 1, height - 1)]) * width  # (2, N, size)
    cols = np.stack([left, np.minimum(left + 1, width - 1)])  # (2, N, size)
    flat_index = rows[:, None, :, :, None] + cols[None, :, :, None, :]  # (2, 2, N, size, size)
    # Rows of a crop as size * 3 values, and x weights repeated per channel: numpy broadcasting a
    # weight over the 3 channels works three values at a time and is several times slower.
    pixels = np.take(image.reshape(-1, 3), flat_index, axis=0).astype(np.float32)
    (upper_left, upper_right), (lower_left, lower_right) = pixels.reshape(2, 2, len(boxes), size, size * 3)
    x_weight = np.repeat(x_weight, 3, axis=1)[:, None, :]
    upper = _lerp(upper_left, upper_right, x_weight)
    lower = _lerp(lower_left, lower_right, x_weight)
    patches = _lerp(upper, lower, y_weight[:, :, None]).reshape(len(boxes), size, size, 3)
    patches[~(y_inside[:, :, None] & x_inside[:, None, :])] = OUTSIDE_PIXEL
    return patches


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


def _lerp(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return a + (b - a) * weight
