"""Face chips kept in the gallery (migration 5, FACEGATE_KEEP_FACES) and `facegate reembed`, which
moves a gallery to another model from them: real models, real embedded PostgreSQL, the real CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient

from facegate.config import Settings
from facegate.embedding import Embedder, create_embedder
from facegate.gallery import EmbeddedServer, GalleryError
from facegate.gallery.errors import MissingChipsError, PersonRef, ReembedError
from facegate.gallery.reembed import Reembedding
from facegate.gallery.store import chip_from_row
from facegate.imaging import load_image_file
from facegate.recognition import cosine_distance
from facegate.services import Core, build_core
from tests.data import FACES
from tests.servers import API_START_TIMEOUT, clean_env
from tests.support import API_KEY, app_settings, services, unique, upload

PORTRAITS = FACES / "portraits"
# The model a gallery moves to, with the settings it needs: the default, calibrated, needs none.
TARGETS: dict[str, dict[str, Any]] = {"mobilefacenet512": {}}
# Per person: the photos enrolled, then one photo of them never enrolled.
PEOPLE = {
    "Barack Obama": ("fr_obama1.jpg", "fr_obama3.jpg", "fr_obama2.jpg"),
    "Angelina Jolie": ("deepface_img1.jpg", "deepface_img2.jpg", "deepface_img5.jpg"),
    "Katy Perry": ("deepface_img27.jpg", "deepface_img28.jpg", "deepface_img42.jpg"),
    "Matt Damon": ("deepface_img29.jpg", "deepface_img30.jpg", "deepface_img31.jpg"),
}
STRANGER = PORTRAITS / "Amy_Adams" / "openface_adams.jpg"


def photos(person: str) -> list[Path]:
    folder = PORTRAITS / person.replace(" ", "_")
    return [folder / name for name in PEOPLE[person]]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FACEGATE_DATA_DIR of every test here: the converted models are cached once for the module."""
    return tmp_path_factory.mktemp("facegate-home")


@pytest.fixture(scope="module")
def people_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`facegate enroll`'s folder: one sub-folder per person with the photos to enrol."""
    root = tmp_path_factory.mktemp("people")
    for person in PEOPLE:
        folder = root / person.replace(" ", "_")
        folder.mkdir()
        for photo in photos(person)[:-1]:
            shutil.copy(photo, folder / photo.name)
    return root


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def settings_for(server: EmbeddedServer, home: Path, **values: Any) -> Settings:
    return app_settings(server, home, face_embedder="onnx", **values)


def on_model(settings: Settings, embedder: str) -> Settings:
    """`settings` with FACE_EMBEDDER=`embedder` and the settings that model needs."""
    return settings.model_copy(update={"face_embedder": embedder, **TARGETS.get(embedder, {})})


@pytest.fixture
def dlib_settings(pg_server: EmbeddedServer, home: Path) -> Settings:
    """dlib's model (FACE_EMBEDDER=onnx, the default before mobilefacenet512) on a new database."""
    return settings_for(pg_server, home)


def fetch(dsn: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()


def faces_and_chips(dsn: str) -> tuple[int, int]:
    ((faces, chips),) = fetch(dsn, "SELECT (SELECT count(*) FROM faces), (SELECT count(*) FROM face_chips)")
    return int(faces), int(chips)


def stored_faces(dsn: str) -> list[tuple[Any, ...]]:
    """Every face's id, vector (as text, exactly) and model, and the gallery's model and dimension."""
    return fetch(dsn, "SELECT id, embedding::text, model FROM faces ORDER BY id") + fetch(
        dsn, "SELECT model, dim FROM gallery_meta"
    )


def enrol(core: Core, people: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Register each person with their photos but the last, as the API does; their ids."""
    ids = {}
    for person in people:
        first, *more = (core.pipeline.single_face(load_image_file(path)) for path in photos(person)[:-1])
        ids[person] = core.enrolment.register(person, first).id
        for face in more:
            core.enrolment.add_face(ids[person], face)
    return ids


def named(core: Core, path: Path) -> str | None:
    person = core.recognizer.identify(core.pipeline.analyse(load_image_file(path))).largest.person
    return None if person is None else person.name


@contextmanager
def core_on(settings: Settings) -> Iterator[Core]:
    """The service's models, gallery and rules on `settings`' database, as the API builds them."""
    core = build_core(settings, str(settings.database_url))
    try:
        yield core
    finally:
        core.close()


def facegate(home: Path, dsn: str, embedder: str, *args: str) -> subprocess.CompletedProcess[str]:
    settings = {
        "FACE_EMBEDDER": embedder,
        **{k.upper(): str(v) for k, v in TARGETS.get(embedder, {}).items()},
    }
    env = clean_env(APP_TOKEN=API_KEY, DATABASE_URL=dsn, FACEGATE_DATA_DIR=str(home), **settings)
    return subprocess.run(
        [sys.executable, "-m", "facegate", *args],
        env=env, cwd=home, capture_output=True, text=True, timeout=API_START_TIMEOUT,
    )  # fmt: skip


# --- chips at registration ----------------------------------------------------------------------


def test_register_and_add_face_store_chips_that_deleting_removes(
    client: TestClient, api_settings: Settings
) -> None:
    dsn = str(api_settings.database_url)
    obama = photos("Barack Obama")
    registered = client.post("/register", data={"name": unique("Obama")}, files=upload(obama[0], "image"))
    assert registered.status_code == 201, registered.text
    user_id = registered.json()["user_id"]
    added = client.post(f"/users/{user_id}/faces", files=upload(obama[1], "image"))
    assert added.status_code == 201, added.text

    rows = fetch(
        dsn,
        "SELECT f.id, f.embedding, c.jpeg, c.box, c.keypoints, c.score FROM faces f "
        "JOIN face_chips c ON c.face_id = f.id WHERE f.user_id = %s ORDER BY f.id",
        (user_id,),
    )
    listed = client.get(f"/users/{user_id}/faces").json()["faces"]
    assert [row[0] for row in rows] == [face["id"] for face in listed]  # a chip for each face
    embedder = services(client).pipeline.embedder
    for _, vector, *columns in rows:
        chip = chip_from_row(*columns)
        assert chip is not None and chip.pixels().shape == (256, 256, 3)
        # The model sees in the chip the face whose vector is stored.
        stored = np.array(vector.strip("[]").split(","), np.float32)
        assert cosine_distance(embedder.embed(chip.pixels(), [chip.face])[0], stored) < 0.02

    chips_left = partial(
        fetch, dsn, "SELECT face_id FROM face_chips WHERE face_id = ANY(%s)", ([r[0] for r in rows],)
    )
    assert client.delete(f"/users/{user_id}/faces/{added.json()['face_id']}").status_code == 200
    assert chips_left() == [(rows[0][0],)]
    assert client.delete(f"/users/{user_id}").status_code == 200
    assert chips_left() == []


def test_deleting_a_collection_deletes_its_chips(dlib_settings: Settings) -> None:
    dsn = str(dlib_settings.database_url)
    with core_on(dlib_settings) as core:
        core.gallery.create_collection("lobby")
        face = core.pipeline.single_face(load_image_file(photos("Katy Perry")[0]))
        core.enrolment.register("Katy Perry", face, "lobby")
        assert faces_and_chips(dsn) == (1, 1)
        core.gallery.delete_collection("lobby")
    assert faces_and_chips(dsn) == (0, 0)


def test_keep_faces_false_stores_no_chip(pg_server: EmbeddedServer, home: Path) -> None:
    settings = settings_for(pg_server, home, facegate_keep_faces=False)
    with core_on(settings) as core:
        enrol(core, {"Barack Obama": PEOPLE["Barack Obama"]})
    assert faces_and_chips(str(settings.database_url)) == (2, 0)


# --- facegate reembed ------------------------------------------------------------------------------


def test_a_dlib_gallery_moves_to_another_model_and_the_same_people_are_named(
    dlib_settings: Settings, home: Path, people_dir: Path, target: str
) -> None:
    dsn = str(dlib_settings.database_url)
    enrolled = facegate(home, dsn, "onnx", "enroll", str(people_dir))
    assert enrolled.returncode == 0, enrolled.stderr
    faces, chips = faces_and_chips(dsn)
    assert faces == chips == 2 * len(PEOPLE)  # `facegate enroll` keeps every face's chip
    ((old_model, old_dim),) = fetch(dsn, "SELECT model, dim FROM gallery_meta")
    assert old_model.startswith("dlib") and old_dim == 128

    refused = facegate(home, dsn, target, "recognize", str(STRANGER))
    assert refused.returncode != 0 and "facegate reembed" in refused.stderr  # the error names the fix

    moved = facegate(home, dsn, target, "reembed", "--batch-size", "3")
    assert moved.returncode == 0, moved.stderr
    embedder: Embedder = create_embedder(on_model(dlib_settings, target))
    assert f"moved from {old_model} (128-D) to {embedder.name} ({embedder.dim}-D)" in moved.stdout
    assert "re-embedding" in moved.stderr and f"{faces}/{faces}" in moved.stderr  # the progress bar
    assert fetch(dsn, "SELECT model, dim FROM gallery_meta") == [(embedder.name, embedder.dim)]
    assert fetch(dsn, "SELECT DISTINCT model, vector_dims(embedding) FROM faces") == [
        (embedder.name, embedder.dim)
    ]
    assert fetch(dsn, "SELECT count(*) FROM reembed_vectors") == [(0,)]

    with core_on(on_model(dlib_settings, target)) as core:  # opens: the gallery is on the configured model
        for person in PEOPLE:
            assert named(core, photos(person)[-1]) == person
        assert named(core, STRANGER) is None
    assert facegate(home, dsn, target, "reembed").stdout.startswith("the gallery is already on")


def test_an_interrupted_reembed_leaves_the_old_gallery_working_and_resumes(
    dlib_settings: Settings, target: str
) -> None:
    dsn = str(dlib_settings.database_url)
    with core_on(dlib_settings) as core:
        ids = enrol(core, PEOPLE)
    # A real fault half-way: the chip of Obama's second face (the second face stored) is cut short.
    ((bad_face,),) = fetch(dsn, "SELECT max(id) FROM faces WHERE user_id = %s", (ids["Barack Obama"],))
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE face_chips SET jpeg = substring(jpeg FROM 1 FOR 600) WHERE face_id = %s", (bad_face,)
        )
    before = stored_faces(dsn)
    embedder = create_embedder(on_model(dlib_settings, target))

    with Reembedding.open(dsn, embedder, batch_size=1) as job:
        assert (job.pending, job.resumed) == (2 * len(PEOPLE), 0)
        with pytest.raises(ReembedError, match=f"face {bad_face} .*cannot be read"):
            for _ in job.batches():
                pass
    assert stored_faces(dsn) == before  # the old vectors, their model and the gallery's, untouched
    assert fetch(dsn, "SELECT count(*) FROM reembed_vectors") == [(1,)]  # the batch done before
    with core_on(dlib_settings) as old:
        assert named(old, photos("Matt Damon")[-1]) == "Matt Damon"  # the old gallery still works
        old.gallery.delete_face(ids["Barack Obama"], bad_face)

    with Reembedding.open(dsn, embedder, batch_size=4) as job:
        assert (job.pending, job.resumed) == (2 * len(PEOPLE) - 2, 1)
        assert sum(job.batches()) == job.pending
        summary = job.switch()
    assert summary.changed and (summary.faces, summary.resumed) == (2 * len(PEOPLE) - 1, 1)
    with core_on(on_model(dlib_settings, target)) as core:
        assert named(core, photos("Barack Obama")[-1]) == "Barack Obama"


def test_a_gallery_without_chips_is_refused_with_the_people_to_enrol_again(
    dlib_settings: Settings, home: Path, target: str
) -> None:
    dsn = str(dlib_settings.database_url)
    with core_on(dlib_settings) as core:
        core.gallery.create_collection("lobby")
        enrol(core, {"Katy Perry": PEOPLE["Katy Perry"]})
    # The same database with chips no longer kept (or a gallery from before chips existed).
    with core_on(dlib_settings.model_copy(update={"facegate_keep_faces": False})) as private:
        lost = enrol(private, {"Matt Damon": PEOPLE["Matt Damon"]})
        face = private.pipeline.single_face(load_image_file(photos("Barack Obama")[0]))
        obama = private.enrolment.register("Barack Obama", face, "lobby").id
    before = stored_faces(dsn)

    refused = facegate(home, dsn, target, "reembed")
    assert refused.returncode == 2
    assert "2 people have faces without a stored chip" in refused.stderr
    assert f"  default: {lost['Matt Damon']} Matt Damon\n  lobby: {obama} Barack Obama" in refused.stderr
    assert "Katy Perry" not in refused.stderr  # her faces have chips
    assert stored_faces(dsn) == before
    assert fetch(dsn, "SELECT count(*) FROM reembed_vectors") == [(0,)]
    with (
        pytest.raises(MissingChipsError) as caught,
        Reembedding.open(dsn, create_embedder(on_model(dlib_settings, target))),
    ):
        pass
    assert caught.value.people == [
        PersonRef("default", lost["Matt Damon"], "Matt Damon"),
        PersonRef("lobby", obama, "Barack Obama"),
    ]


def test_reembed_refuses_while_the_gallery_is_in_use(dlib_settings: Settings, target: str) -> None:
    """A service still on the old model would compare its vectors with the new model's."""
    dsn = str(dlib_settings.database_url)
    embedder = create_embedder(on_model(dlib_settings, target))
    with core_on(dlib_settings) as core:
        enrol(core, {"Katy Perry": PEOPLE["Katy Perry"]})
        with pytest.raises(GalleryError, match="the gallery is in use"), Reembedding.open(dsn, embedder):
            pass
        assert fetch(dsn, "SELECT model FROM gallery_meta") == [(core.gallery.model,)]


def test_the_command_line_batch_size_is_the_service_default() -> None:
    """`facegate reembed`'s parser starts without the database's libraries, so it repeats the default."""
    from facegate.cli import _parser
    from facegate.gallery.reembed import DEFAULT_BATCH_SIZE

    assert _parser().parse_args(["reembed"]).batch_size == DEFAULT_BATCH_SIZE
