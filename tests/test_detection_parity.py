"""Our MTCNN against the reference implementation's recorded detections (same weights).

See ../shared/data/reference/README.md: `default` and `strict` are expectations; the reference's
`large` entries (min_face_size=60) are its bug, so that setting is checked against `default`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from functools import cache

import numpy as np
import pytest

from facegate.detection import MTCNN, DetectionParams
from facegate.faces import KEYPOINT_NAMES, Face
from facegate.imaging import load_image_file
from tests.data import FACES, REFERENCE
from tests.support import iou

MATCH_IOU = 0.85

pytestmark = pytest.mark.skipif(not REFERENCE.is_dir(), reason="shared reference data not present")


@cache
def reference() -> dict:
    return json.loads((REFERENCE / "mtcnn_tf.json").read_text())


@cache
def detector() -> MTCNN:
    return MTCNN()


@cache
def image(path: str) -> np.ndarray:
    return load_image_file(FACES / path)


@cache
def detections(setting: str, min_face_size: int | None = None) -> dict[str, list[Face]]:
    params = DetectionParams(**reference()["meta"]["settings"][setting])
    if min_face_size is not None:
        params = replace(params, min_face_size=min_face_size)
    return {entry["path"]: detector().detect(image(entry["path"]), params) for entry in reference()["images"]}


@dataclass
class Comparison:
    expected: int = 0
    found: int = 0
    ours: int = 0
    unmatched_ours: int = 0
    max_score_diff: float = 0.0
    max_keypoint_diff: float = 0.0  # in box widths

    def add(self, expected: list[dict], ours: list[Face], min_iou: float = MATCH_IOU) -> None:
        """One-to-one matching, best overlaps first."""
        overlaps = [(iou(r["box"], f.box), i, j) for i, r in enumerate(expected) for j, f in enumerate(ours)]
        used_ref, used_ours = set(), set()
        for overlap, i, j in sorted(overlaps, reverse=True):
            if overlap < min_iou or i in used_ref or j in used_ours:
                continue
            used_ref.add(i)
            used_ours.add(j)
            self._compare(expected[i], ours[j])
        self.expected += len(expected)
        self.found += len(used_ref)
        self.ours += len(ours)
        self.unmatched_ours += len(ours) - len(used_ours)

    def _compare(self, ref: dict, face: Face) -> None:
        if "score" in ref:
            self.max_score_diff = max(self.max_score_diff, abs(face.score - ref["score"]))
        if "keypoints" in ref:
            points = np.asarray([ref["keypoints"][name] for name in KEYPOINT_NAMES])
            width = ref["box"][2] - ref["box"][0]
            self.max_keypoint_diff = max(
                self.max_keypoint_diff, np.abs(points - face.keypoints).max() / width
            )


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["default", "strict"])
def test_matches_reference(setting: str) -> None:
    ours = detections(setting)
    comparison = Comparison()
    for entry in reference()["images"]:
        comparison.add(entry["results"][setting], ours[entry["path"]])
    print(setting, comparison)  # shown with -s / on failure: the parity numbers
    assert comparison.expected > 100
    assert comparison.found >= 0.98 * comparison.expected, comparison
    assert comparison.unmatched_ours <= 0.02 * comparison.ours, comparison
    assert comparison.max_score_diff <= 0.05, comparison
    assert comparison.max_keypoint_diff <= 0.05, comparison


@pytest.mark.slow
def test_results_are_sorted_with_keypoints_in_order() -> None:
    for faces in detections("default").values():
        assert [face.score for face in faces] == sorted((face.score for face in faces), reverse=True)
    # Frontal faces: image-left eye and mouth corner are `left_*` (viewer's side, as the reference).
    faces = detections("default")["portraits/Barack_Obama/fr_obama_small.jpg"]
    left_eye, right_eye, _, mouth_left, mouth_right = faces[0].keypoints
    assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]


@pytest.mark.slow
def test_no_face_images_give_no_face() -> None:
    with (FACES / "MANIFEST.csv").open(newline="") as manifest:
        paths = [row["path"] for row in csv.DictReader(manifest) if row["kind"] == "noface"]
    assert paths
    for path in paths:
        assert detector().detect(image(path)) == [], path


@pytest.mark.slow
def test_min_face_size_60_finds_the_default_faces_of_60_px_and_more() -> None:
    # Sizes are uncertain by a few pixels and the pyramid levels differ from the default's, so
    # faces within 15 % of the limit may go either way: only clear cases count as expected.
    expected_large, found = Comparison(), Comparison()
    for entry in reference()["images"]:
        faces = detections("default", min_face_size=60)[entry["path"]]
        default = entry["results"]["default"]
        clear = [face for face in default if face["box"][2] - face["box"][0] >= 60 * 1.15]
        expected_large.add(clear, faces, min_iou=0.7)
        found.add(default, faces, min_iou=0.7)
        assert all(face.width >= 60 * 0.7 for face in faces), entry["path"]
    print(expected_large, found)
    assert expected_large.expected > 100
    assert expected_large.found >= 0.98 * expected_large.expected, expected_large
    # Faces found at 60 px are ones the default setting finds too, give or take a few that the
    # different pyramid levels see (4 of 155 when written).
    assert found.unmatched_ours <= 0.05 * found.ours, found
