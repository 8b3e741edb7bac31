"""Identification on the shared portraits: the whole pipeline against a real pgvector gallery."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from facegate.config import Settings
from facegate.gallery import EmbeddedServer, Gallery
from facegate.imaging import load_image_file
from facegate.pipeline import NoFaceError, Pipeline
from facegate.recognition import MatchPolicy
from tests.data import FACES
from tests.support import create_database

Enrolled = tuple[Gallery, dict[str, list[Path]]]


def portraits_by_identity() -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = defaultdict(list)
    with (FACES / "MANIFEST.csv").open() as manifest:
        for row in csv.DictReader(manifest):
            if row["kind"] == "portrait" and row["identity"]:
                people[row["identity"]].append(FACES / row["path"])
    return people


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    return Pipeline.from_settings(
        Settings(facegate_data_dir=tmp_path_factory.mktemp("models"), _env_file=None)
    )


@pytest.fixture(scope="module")
def policy(pipeline: Pipeline) -> MatchPolicy:
    return MatchPolicy.from_settings(Settings(_env_file=None), pipeline.embedder.name)


def named(policy: MatchPolicy, gallery: Gallery, embedding: object) -> tuple[str, float, bool]:
    """The nearest person's name and distance, and whether the policy names them."""
    found = gallery.search(embedding[None, :], k=2)[0]  # type: ignore[index]
    second = found[1].distance if len(found) > 1 else None
    threshold = policy.threshold(gallery.size())
    return found[0].name, found[0].distance, policy.is_match(found[0].distance, second, threshold)


@pytest.fixture(scope="module")
def enrolled(pipeline: Pipeline, pg_server: EmbeddedServer) -> Iterator[Enrolled]:
    """A gallery with one photo of each person who has two or more; returns the photos left to probe."""
    gallery = Gallery.open(create_database(pg_server), pipeline.embedder.name, pipeline.embedder.dim)
    probes: dict[str, list[Path]] = {}
    for identity, photos in sorted(portraits_by_identity().items()):
        if len(photos) < 2:
            continue
        for index, photo in enumerate(photos):
            try:
                face = pipeline.single_face(load_image_file(photo))
            except NoFaceError:
                continue  # try the person's next photo for enrolment
            gallery.add_user(identity, face.embedding, face.face.box)
            probes[identity] = photos[:index] + photos[index + 1 :]
            break
    yield gallery, probes
    gallery.close()


@pytest.mark.slow
def test_rank1_identification_of_enrolled_people(
    pipeline: Pipeline, policy: MatchPolicy, enrolled: Enrolled
) -> None:
    gallery, probes = enrolled
    assert len(probes) == 20  # every person with two or more photos could be enrolled
    correct = matched = total = 0
    misses = []
    for identity, photos in probes.items():
        for photo in photos:
            face = pipeline.largest_face(load_image_file(photo))
            name, distance, is_match = named(policy, gallery, face.embedding)
            total += 1
            correct += name == identity
            matched += name == identity and is_match
            if name != identity:
                misses.append(f"{photo.name}: {name} at {distance:.3f}")
    assert total >= 55
    assert correct / total >= 0.95, misses
    # Informative floor for the policy at 20 people: most genuine probes are also named.
    assert matched / total >= 0.8, f"{matched}/{total} named"


@pytest.mark.slow
def test_people_never_enrolled_are_no_match(
    pipeline: Pipeline, policy: MatchPolicy, enrolled: Enrolled
) -> None:
    gallery, _ = enrolled
    strangers = [photos[0] for photos in portraits_by_identity().values() if len(photos) == 1]
    assert len(strangers) == 3
    for photo in strangers:
        face = pipeline.largest_face(load_image_file(photo))
        name, distance, is_match = named(policy, gallery, face.embedding)
        assert not is_match, f"{photo.name} matched {name} at {distance:.3f}"


def test_group_photos_give_one_result_per_face(pipeline: Pipeline) -> None:
    expected = {"fr_two_people.jpg": 2, "deepface_couple.jpg": 2, "facenetpytorch_multiface.jpg": 6}
    for name, count in expected.items():
        faces = pipeline.analyse(load_image_file(FACES / "groups" / name))
        assert len(faces) == count, name
        assert [f.face.area for f in faces] == sorted((f.face.area for f in faces), reverse=True)
        assert all(abs(float((f.embedding**2).sum()) - 1) < 1e-4 for f in faces)
