"""The numeric parts of the MTCNN cascade: pyramid, proposals, NMS, crops and box arithmetic.

Semantics follow the reference (ipazc/mtcnn 1.0.0) so that results match it: boxes are float
(x1, y1, x2, y2) without rounding, widths for regression are `x2 - x1 + 1`, NMS suppresses a box
when *any* higher-scoring box overlaps it (not only the kept ones), and crops sample like
TensorFlow's `crop_and_resize` on the reference's normalised coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCALE_FACTOR = 0.709
PNET_WINDOW = 12
PNET_STRIDE = 2

# Fill value of crop samples outside the image: the reference pads its normalised image with 0,
# which is this pixel value.
OUTSIDE_PIXEL = 127.5

# NMS blocks: columns of the pairwise IoU matrix computed at a time, and at most this many of
# its entries, to bound memory (each of the block's temporaries is 4 bytes an entry).
_NMS_BLOCK = 1024
_NMS_BLOCK_ENTRIES = 2_000_000

Span = tuple[int, int]  # (start, stop) along one side of a level


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

    Rows come from an integral along y computed once for all levels; columns are then a few
    weighted gathers per level (one per input column a cell can touch), since a cumulative sum
    along x would have to be redone for every level and numpy's is slow on that axis.
    """

    def __init__(self, image: np.ndarray) -> None:
        self._height, self._width = image.shape[:2]
        self._image = image
        self._row_integral = RowIntegral(image)

    def level(
        self, height: int, width: int, rows: Span | None = None, cols: Span | None = None
    ) -> np.ndarray:
        """The (height, width, 3) float32 level, or its tile of `rows` x `cols` (start, stop),
        bit for bit the same values; several threads may ask for levels at once."""
        (top, bottom), (left, right) = rows or (0, height), cols or (0, width)
        index, weight = _column_taps(self._width, width, left, right)
        # Only the input columns this tile's cells cover: a tile costs its own size, not the image's.
        first, last = int(index.min()), int(index.max()) + 1
        sums = _row_sums(self._row_integral, self._image, height, top, bottom, (first, last))
        index -= first
        # Weights come repeated per channel, with the area normalisation folded in, so that each
        # product runs along whole rows: numpy broadcasting a (width, 1) weight over (width, 3)
        # pixels works three values at a time and is several times slower.
        weight = np.repeat(weight * np.float32(height * width / (self._height * self._width)), 3, axis=1)
        level = np.take(sums, index[0], axis=1).reshape(bottom - top, -1) * weight[0]
        for tap_index, tap_weight in zip(index[1:], weight[1:], strict=True):
            level += np.take(sums, tap_index, axis=1).reshape(bottom - top, -1) * tap_weight
        return level.reshape(bottom - top, right - left, 3)


# Rows per block of RowIntegral: the sum of fewer 8-bit rows than this fits in 16 bits.
_INTEGRAL_BLOCK_ROWS = 256


class RowIntegral:
    """Sums over an image's first rows (entry i sums rows 0 to i - 1), in 6 bytes a pixel.

    Entry i is the sum of the whole blocks of _INTEGRAL_BLOCK_ROWS rows above it (float32, one
    row per block) plus that of the rows since its block began (uint16: at most 255 rows of at
    most 255). Both are whole numbers, exact in float32 below 2**24 (images under 65,793 rows),
    so entries come out as a float32 running sum would give them, in half its memory (a float32
    one took 432 MB for a 36-megapixel photo).
    """

    def __init__(self, image: np.ndarray) -> None:
        height, block_rows = image.shape[0], _INTEGRAL_BLOCK_ROWS
        self._within = np.empty((height + 1, *image.shape[1:]), np.uint16)
        self._bases = np.empty((height // block_rows + 1, *image.shape[1:]), np.float32)
        self._bases[0] = 0
        for block, start in enumerate(range(0, height + 1, block_rows)):
            self._within[start] = 0
            # numpy's cumsum over the first axis of a C-ordered array is several times slower
            # than adding whole rows in a loop; converting the block's pixels once, not in every
            # addition, takes another third off.
            pixels = image[start : start + block_rows - 1].astype(np.uint16)
            for row, pixel_row in enumerate(pixels, start):
                np.add(self._within[row], pixel_row, out=self._within[row + 1])
            if start + block_rows <= height:
                last = start + block_rows - 1
                self._bases[block + 1] = self._bases[block] + self._within[last] + image[last]

    def rows(self, indices: np.ndarray, first: int, last: int) -> np.ndarray:
        """(len(indices), last - first, 3) float32 entries at the increasing row `indices`, of
        the columns `first:last`."""
        result = np.empty((len(indices), last - first, *self._within.shape[2:]), np.float32)
        blocks = indices // _INTEGRAL_BLOCK_ROWS
        # The indices increase: each block's rows are one slice, which gets its base in one add.
        bounds = np.flatnonzero(np.diff(blocks)) + 1
        for start, stop in zip([0, *bounds], [*bounds, len(indices)], strict=True):
            result[start:stop] = self._within[indices[start:stop], first:last]
            if blocks[start]:  # the first block's base is 0
                result[start:stop] += self._bases[blocks[start], first:last]
        return result


def _cell_edges(size_in: int, size_out: int) -> np.ndarray:
    """Input coordinates of the `size_out + 1` edges of equal output cells."""
    return np.arange(size_out + 1) * (size_in / size_out)


def _row_sums(
    integral: RowIntegral, image: np.ndarray, size_out: int, start: int, stop: int, columns: Span
) -> np.ndarray:
    """(stop - start, W, 3) sums over the rows each of the output rows `start:stop` covers, of
    the input `columns`, from the integral over rows.

    The integral of piecewise-constant rows is piecewise linear: at a fractional cell edge it is
    the integral at the row below plus the covered fraction of that row's pixels.
    """
    size_in = image.shape[0]
    edges = _cell_edges(size_in, size_out)[start : stop + 1]
    below = np.minimum(edges.astype(np.intp), size_in - 1)
    first, last = columns
    at_edges = image[below, first:last] * (edges - below).astype(np.float32)[:, None, None]
    at_edges += integral.rows(below, first, last)
    return np.diff(at_edges, axis=0)


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


def box_areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: np.ndarray, threshold: float, *, over_min: bool = False) -> np.ndarray:
    """Indices of the rows to keep from `boxes` sorted best first (columns x1, y1, x2, y2, ...).

    A box is dropped when any better box overlaps it by more than `threshold`, measured over the
    union, or over the smaller of the two boxes when `over_min`.
    """
    count = len(boxes)
    if count < 2:  # nothing to overlap
        return np.arange(count)
    areas = box_areas(boxes)
    keep = np.ones(count, dtype=bool)
    block_size = max(1, min(_NMS_BLOCK, _NMS_BLOCK_ENTRIES // max(count, 1)))
    for start in range(0, count, block_size):
        stop = min(start + block_size, count)
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
