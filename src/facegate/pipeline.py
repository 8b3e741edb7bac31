"""detect → align → embed: the one path from a decoded image to faces with vectors.

The API, the CLI and the benchmarks all go through `Pipeline`, so they see the same faces and
the same vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from facegate.chips import FaceChip, make_chip
from facegate.config import Settings
from facegate.detection import MTCNN, DetectionParams, Detector
from facegate.embedding import Embedder, create_embedder
from facegate.faces import Face
from facegate.quality import QualityBounds, assess

# A face narrower than this fraction of the largest face does not compete with it for registration.
BACKGROUND_FACE_RATIO = 0.4


@dataclass(frozen=True, slots=True)
class EmbeddedFace:
    face: Face
    embedding: np.ndarray
    # Why the face is too poor to be searched or enrolled (facegate.quality); None when it is fine.
    problem: str | None = None
    # The aligned face as the gallery keeps it (facegate.chips): made for faces to enrol only, so
    # that a search does not pay for the JPEG encoding.
    chip: FaceChip | None = None


@dataclass(frozen=True, slots=True)
class FaceSelection:
    """The face an image is about: the largest one (None when there is no face), and how many
    faces of comparable size it has, itself included (0 when there is no face)."""

    face: Face | None
    comparable: int


# A `box` chooses the detected face it overlaps most, if their intersection over union is at least
# this: a box drawn by hand around a face, or copied from /detect, meets it easily; one around
# empty background or straddling two faces does not.
BOX_MIN_IOU = 0.3


@dataclass(frozen=True, slots=True)
class FaceChoice:
    """Which face of a photo to enrol, when it holds several: `index` in /detect's order (by
    decreasing score, with the default detection parameters), a `box` (x1, y1, x2, y2) to match, or
    the face nearest the image's `center`. Nothing chosen: the photo must hold one face."""

    index: int | None = None
    box: tuple[float, float, float, float] | None = None
    center: bool = False

    def __post_init__(self) -> None:
        if (self.index is not None) + (self.box is not None) + self.center > 1:
            raise ValueError("choose the face by one of index, box or center")

    @property
    def chosen(self) -> bool:
        return self.index is not None or self.box is not None or self.center


NO_CHOICE = FaceChoice()


class NoFaceError(ValueError):
    """The image holds no face (or, for registration, not exactly one, or one too poor to enrol).

    `faces`: the faces found, in /detect's order, when a choice among them would help."""

    def __init__(self, message: str, faces: Sequence[Face] = ()) -> None:
        super().__init__(message)
        self.faces = tuple(faces)


def create_detector(settings: Settings) -> Detector:
    """MTCNN on the configured providers and threads (the pipeline's, and `facegate detect`'s)."""
    return MTCNN(settings.runtime())


class Pipeline:
    """The models of one process, loaded once and shared by every request."""

    def __init__(self, detector: Detector, embedder: Embedder, quality: QualityBounds | None = None) -> None:
        """`quality`: the bounds a face must meet to be searched or enrolled; None = no gate."""
        self.detector = detector
        self.embedder = embedder
        self.quality = quality

    @classmethod
    def from_settings(cls, settings: Settings) -> Pipeline:
        return cls(create_detector(settings), create_embedder(settings), settings.quality_bounds())

    def detect(self, image: np.ndarray, params: DetectionParams | None = None) -> list[Face]:
        """Faces in order of decreasing score, as the detection API reports them."""
        return self.detector.detect(image, params or DetectionParams())

    def analyse(self, image: np.ndarray, params: DetectionParams | None = None) -> list[EmbeddedFace]:
        """Every face with its embedding, largest first (the order recognition reports)."""
        faces = self._largest_first(image, params)
        if not faces:
            return []
        embeddings = self.embedder.embed(image, faces)
        return [
            EmbeddedFace(face, vector, self._problem(image, face))
            for face, vector in zip(faces, embeddings, strict=True)
        ]

    def select_face(self, image: np.ndarray) -> FaceSelection:
        """The face `image` is about, and how many faces compete with it.

        Faces much smaller than the largest (under `BACKGROUND_FACE_RATIO` of its width) are
        background: passers-by, posters, or MTCNN's small false positives on portraits. They do
        not make a portrait ambiguous; a second face of comparable size does.
        """
        faces = self._largest_first(image)
        if not faces:
            return FaceSelection(None, 0)
        comparable = sum(face.width >= BACKGROUND_FACE_RATIO * faces[0].width for face in faces)
        return FaceSelection(faces[0], comparable)

    def single_face(self, image: np.ndarray, choice: FaceChoice = NO_CHOICE) -> EmbeddedFace:
        """The one face of a registration photo, or the one `choice` picks; `NoFaceError` when there
        is none, or several (background faces aside: `select_face`) and no choice, listing them, or
        when the face is too poor to enrol."""
        face = self._chosen_face(image, choice) if choice.chosen else self._only_face(image)
        if problem := self._problem(image, face):
            raise NoFaceError(f"the face cannot be enrolled: {problem}")
        return self.embed_face(image, face, chip=True)

    def _only_face(self, image: np.ndarray) -> Face:
        selection = self.select_face(image)
        if selection.face is None:
            raise NoFaceError("exactly one face is needed, found no face")
        if selection.comparable > 1:
            raise NoFaceError(
                f"exactly one face is needed, found {selection.comparable} faces of similar size: "
                "choose one by its index in `faces` (face=) or by its box (box=x1,y1,x2,y2)",
                self.detect(image),
            )
        return selection.face

    def _chosen_face(self, image: np.ndarray, choice: FaceChoice) -> Face:
        faces = self.detect(image)
        if not faces:
            raise NoFaceError("no face found in the image")
        if choice.index is not None:
            if choice.index >= len(faces):
                raise NoFaceError(
                    f"face {choice.index} was asked for, but the photo holds {len(faces)} "
                    f"(indexes 0 to {len(faces) - 1})",
                    faces,
                )
            return faces[choice.index]
        if (wanted := choice.box) is not None:
            best = max(faces, key=lambda face: box_iou(face.box, wanted))
            overlap = box_iou(best.box, wanted)
            if overlap < BOX_MIN_IOU:
                raise NoFaceError(
                    f"no face found in the box {list(wanted)} (best overlap {overlap:.2f}, "
                    f"{BOX_MIN_IOU} needed)",
                    faces,
                )
            return best
        height, width = image.shape[:2]
        return min(faces, key=lambda face: _distance_to(face, width / 2, height / 2))

    def largest_face(self, image: np.ndarray) -> EmbeddedFace:
        """The largest face only (verification compares one face per photo)."""
        face = self.select_face(image).face
        if face is None:
            raise NoFaceError("no face found in the image")
        return self.embed_face(image, face)

    def embed_face(self, image: np.ndarray, face: Face, *, chip: bool = False) -> EmbeddedFace:
        """`face` of `image` with its embedding (not checked against the quality bounds), and with
        its chip if `chip` (for a face to store)."""
        embedding = self.embedder.embed(image, [face])[0]
        return EmbeddedFace(face, embedding, chip=make_chip(image, face) if chip else None)

    def close(self) -> None:
        """Release the detector's threads; the pipeline cannot be used afterwards. The embedders
        hold only model sessions and weights, which go with the objects."""
        self.detector.close()

    def _problem(self, image: np.ndarray, face: Face) -> str | None:
        return None if self.quality is None else assess(image, face).problem(self.quality)

    def _largest_first(self, image: np.ndarray, params: DetectionParams | None = None) -> list[Face]:
        return sorted(self.detect(image, params), key=lambda face: face.area, reverse=True)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 when either is empty."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _distance_to(face: Face, x: float, y: float) -> float:
    """How far the face box's centre is from (x, y), in pixels."""
    return float(np.hypot((face.box[0] + face.box[2]) / 2 - x, (face.box[1] + face.box[3]) / 2 - y))
