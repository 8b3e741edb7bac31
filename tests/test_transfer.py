"""Export and import of collections (facegate.gallery.transfer) between real embedded databases."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psycopg
import pytest

from facegate.chips import CHIP_SIZE, FaceChip, encode_jpeg, make_chip
from facegate.detection import MTCNN
from facegate.gallery import (
    ConfusableNameError,
    EmbeddedServer,
    Gallery,
    PortableFace,
    PortablePerson,
    TransferFileError,
    TransferModelError,
    UnknownCollectionError,
)
from facegate.gallery.transfer import export_bytes, export_file, import_bytes, import_file, read_export
from facegate.imaging import load_image_file
from facegate.runtime import RuntimeOptions
from tests.data import FACES
from tests.support import GALLERY_TEST_DIM, GALLERY_TEST_MODEL, create_database, unit

DIM = GALLERY_TEST_DIM


@pytest.fixture
def second(pg_server: EmbeddedServer) -> Iterator[Gallery]:
    """Another empty gallery of the same model, in its own database."""
    opened = Gallery.open(create_database(pg_server), GALLERY_TEST_MODEL, DIM, timeout=2.0)
    yield opened
    opened.close()


def populate(gallery: Gallery, collection: str = "site-a", seed: int = 30) -> None:
    """Three people, one with three faces, in `collection`, and someone else in `default`."""
    rng = np.random.default_rng(seed)
    gallery.create_collection(collection)
    ada = gallery.add_user("Ada Lovelace", unit(rng, 1, DIM)[0], (1, 2, 101, 132), collection=collection)
    for box in ((5, 5, 69, 85), (0.5, 0.25, 40.75, 50)):
        gallery.add_face(ada.id, unit(rng, 1, DIM)[0], box, collection=collection)
    gallery.add_user("علی‌رضا", unit(rng, 1, DIM)[0], (0, 0, 10, 10), collection=collection)
    gallery.add_user("Grace", unit(rng, 1, DIM)[0], (3, 3, 33, 33), collection=collection)
    gallery.add_user("Not exported", unit(rng, 1, DIM)[0], (0, 0, 1, 1))


def snapshot(gallery: Gallery, collection: str) -> dict[str, object]:
    """Everything an export carries, by name: the person's date and each face's bytes, box and date."""
    return {
        person.name: (
            person.created_at,
            [(face.embedding.tobytes(), face.box, face.created_at) for face in person.faces],
        )
        for person in gallery.export_people(collection)
    }


@pytest.mark.slow
def test_export_to_a_fresh_data_directory_and_back_gives_the_same_people(
    gallery: Gallery, pgdata_dir: Path, tmp_path: Path
) -> None:
    populate(gallery)
    path = tmp_path / "site-a.jsonl"
    summary = export_file(gallery, path, "site-a")
    assert (summary.people, summary.faces) == (3, 5)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # biometric data: the owner's only
    assert [p.name for p in tmp_path.iterdir()] == ["site-a.jsonl"]  # no partial file left

    server = EmbeddedServer(pgdata_dir / "pg")
    server.start()
    try:
        fresh = Gallery.open(create_database(server), GALLERY_TEST_MODEL, DIM, timeout=5.0)
        try:
            imported = import_file(fresh, path)
            assert (imported.collection, imported.people_added, imported.faces_added) == ("site-a", 3, 5)
            assert snapshot(fresh, "site-a") == snapshot(gallery, "site-a")
            assert fresh.list_users(0, 10)[1] == 0  # `default` untouched: "Not exported" stayed behind
            # The same people are recognised: each face finds its owner at distance 0.
            for person in gallery.export_people("site-a"):
                for face in person.faces:
                    (match,) = fresh.search(face.embedding, k=1, collection="site-a")[0]
                    assert match.name == person.name and match.distance < 1e-6
        finally:
            fresh.close()
    finally:
        server.release()


def test_importing_twice_adds_nothing_the_second_time(gallery: Gallery, second: Gallery) -> None:
    populate(gallery)
    data, _ = export_bytes(gallery, "site-a")
    import_bytes(second, data)
    again = import_bytes(second, data)
    assert (again.people_added, again.people_merged, again.faces_added, again.faces_skipped) == (0, 3, 0, 5)
    stats = second.stats("site-a")
    assert (stats.total_users, stats.total_faces) == (3, 5)
    assert snapshot(second, "site-a") == snapshot(gallery, "site-a")


def test_import_merges_by_name_into_an_existing_collection(gallery: Gallery, second: Gallery) -> None:
    populate(gallery)
    rng = np.random.default_rng(31)
    existing_face = unit(rng, 1, DIM)[0]
    ada = second.add_user("Ada Lovelace", existing_face, (0, 0, 9, 9))  # already in `default`
    second.add_user("Someone else", unit(rng, 1, DIM)[0], (0, 0, 9, 9))
    data, _ = export_bytes(gallery, "site-a")

    merged = import_bytes(second, data, collection="default")

    assert (merged.collection, merged.people_added, merged.people_merged) == ("default", 2, 1)
    assert (merged.faces_added, merged.faces_skipped) == (5, 0)
    users, total = second.list_users(0, 10)
    assert total == 4 and sorted(u.name for u in users).count("Ada Lovelace") == 1
    assert second.get_user(ada.id).face_count == 4  # her own face and the three exported ones
    assert [c.name for c in second.list_collections()] == ["default"]


def test_a_look_alike_name_rolls_the_whole_import_back(gallery: Gallery, second: Gallery) -> None:
    populate(gallery)
    second.add_user("Gr\u0430ce", unit(np.random.default_rng(32), 1, DIM)[0], (0, 0, 9, 9))  # Cyrillic а
    data, _ = export_bytes(gallery, "site-a")
    with pytest.raises(ConfusableNameError, match="'Grace'"):
        import_bytes(second, data, collection="default")
    assert second.stats().total_users == 1
    assert second.stats().total_faces == 1


def _edit(data: bytes, line: int, change: dict[str, object], *, fix_checksum: bool) -> bytes:
    lines = data.split(b"\n")
    value = json.loads(lines[line])
    value.update(change)
    lines[line] = json.dumps(value).encode()
    if fix_checksum:
        body = b"\n".join(lines[:-2]) + b"\n"
        lines[-2] = json.dumps({"sha256": hashlib.sha256(body).hexdigest()}).encode()
    return b"\n".join(lines)


def test_a_tampered_file_is_refused_and_nothing_is_imported(gallery: Gallery, second: Gallery) -> None:
    populate(gallery)
    data, _ = export_bytes(gallery, "site-a")
    person = json.loads(data.split(b"\n")[1])
    vector = np.frombuffer(base64.b64decode(person["faces"][0]["embedding"]), "<f4").copy()
    vector[0] += 0.25  # someone else's face under this name
    tampered = _edit(
        data,
        1,
        {"faces": [{**person["faces"][0], "embedding": base64.b64encode(vector.tobytes()).decode()}]},
        fix_checksum=False,
    )
    with pytest.raises(TransferFileError, match="damaged or edited after export; nothing was imported"):
        import_bytes(second, tampered)
    with pytest.raises(TransferFileError, match="damaged or edited"):
        import_bytes(second, data.replace(b"Grace", b"Grade"))
    with pytest.raises(TransferFileError, match=r"incomplete|does not end"):
        import_bytes(second, data[: data.rindex(b"{")])  # the checksum line cut off
    assert [c.name for c in second.list_collections()] == ["default"]
    assert second.stats().total_users == 0


# A valid face of an export file, and a chip valid but for what a case changes (a 256 × 256 JPEG).
_FACE = {
    "embedding": base64.b64encode(np.ones(DIM, "<f4").tobytes()).decode(),
    "box": [0, 0, 1, 1],
    "created_at": "2026-01-01T00:00+00:00",
}
_CHIP = {
    "jpeg": base64.b64encode(encode_jpeg(np.zeros((CHIP_SIZE, CHIP_SIZE, 3), np.uint8))).decode(),
    "box": [60, 60, 196, 196],
    "keypoints": [[100, 110], [156, 110], [128, 140], [105, 170], [151, 170]],
    "score": 0.99,
}


@pytest.mark.parametrize(
    ("line", "change", "message"),
    [
        (1, {"faces": [{"embedding": "AAAA", "box": [0, 0, 1, 1], "created_at": "2026-01-01T00:00+00:00"}]},
         "an embedding has 3 bytes, not 64"),
        (1, {"faces": []}, "has no faces"),
        (1, {"faces": [{**_FACE, "chip": {**_CHIP, "jpeg": "bm90IGEgSlBFRw=="}}]}, "jpeg is not an image"),
        (1, {"faces": [{**_FACE, "chip": {**_CHIP, "keypoints": [[1, 2]] * 4}}]}, "keypoints must be 5"),
        (1, {"faces": [{**_FACE, "chip": {**_CHIP, "score": "high"}}]}, "score must be a finite number"),
        (1, {"faces": [{**_FACE, "chip": "a face"}]}, "a chip must be a JSON object or null"),
        (1, {"name": "a\u202eb"}, "control or invisible"),
        (1, {"created_at": "2026-01-01T00:00:00"}, "needs its UTC offset"),
        (0, {"people": 7}, "counts 7 people"),
        (0, {"collection": "a:b"}, "invalid collection name"),
    ],
)  # fmt: skip
def test_invalid_content_is_refused_even_with_a_valid_checksum(
    gallery: Gallery, second: Gallery, line: int, change: dict[str, object], message: str
) -> None:
    populate(gallery)
    data, _ = export_bytes(gallery, "site-a")
    with pytest.raises(TransferFileError, match=message):
        import_bytes(second, _edit(data, line, change, fix_checksum=True))
    assert second.stats().total_users == 0


def test_another_format_or_version_is_refused(gallery: Gallery) -> None:
    populate(gallery)
    data, _ = export_bytes(gallery, "site-a")
    with pytest.raises(TransferFileError, match="not a FaceGate gallery export"):
        read_export(b'{"name": "x"}\n{}\n{}\n', GALLERY_TEST_MODEL, DIM)
    with pytest.raises(TransferFileError, match="not a FaceGate gallery export"):
        read_export(b"\x80\x03 pickled", GALLERY_TEST_MODEL, DIM)
    with pytest.raises(TransferFileError, match=r"version 3 .* reads versions 1, 2"):
        read_export(_edit(data, 0, {"version": 3}, fix_checksum=True), GALLERY_TEST_MODEL, DIM)


@pytest.mark.parametrize(("model", "dim"), [("other-model", DIM), (GALLERY_TEST_MODEL, 32)])
def test_a_file_of_another_model_is_refused(
    gallery: Gallery, pg_server: EmbeddedServer, model: str, dim: int
) -> None:
    populate(gallery)
    data, _ = export_bytes(gallery, "site-a")
    foreign = Gallery.open(create_database(pg_server), model, dim, timeout=2.0)
    try:
        with pytest.raises(TransferModelError, match=f"model '{GALLERY_TEST_MODEL}' \\({DIM}-D\\)"):
            import_bytes(foreign, data)
        assert [c.name for c in foreign.list_collections()] == ["default"]
    finally:
        foreign.close()


def test_the_file_is_documented_json_lines(gallery: Gallery) -> None:
    """What the module's docstring promises a reader in another language."""
    populate(gallery)
    data, _ = export_bytes(gallery, "site-a")
    header, *people, trailer = (json.loads(line) for line in data.decode().splitlines())
    assert {k: header[k] for k in ("format", "version", "model", "dim", "collection", "people", "faces")} == {
        "format": "facegate-gallery", "version": 2, "model": GALLERY_TEST_MODEL, "dim": DIM,
        "collection": "site-a", "people": 3, "faces": 5,
    }  # fmt: skip
    assert "biometric" in header["notice"]
    assert trailer == {"sha256": hashlib.sha256(data[: data.rindex(b"{")]).hexdigest()}
    ada = next(p for p in people if p["name"] == "Ada Lovelace")
    assert [face["box"] for face in ada["faces"]] == [
        [1, 2, 101, 132],
        [5, 5, 69, 85],
        [0.5, 0.25, 40.75, 50],
    ]
    vectors = [np.frombuffer(base64.b64decode(face["embedding"]), "<f4") for face in ada["faces"]]
    stored = next(p for p in gallery.export_people("site-a") if p.name == "Ada Lovelace")
    assert all(np.array_equal(v, f.embedding) for v, f in zip(vectors, stored.faces, strict=True))


def test_exporting_an_unknown_collection_is_refused(gallery: Gallery, tmp_path: Path) -> None:
    with pytest.raises(UnknownCollectionError):
        export_file(gallery, tmp_path / "x.jsonl", "nowhere")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_large_import_refreshes_the_planner_statistics(gallery: Gallery) -> None:
    """The search plan depends on how many faces a collection has: a bulk import must not leave
    the planner believing the new collection empty until autovacuum comes by."""
    now = datetime.now(UTC)
    vectors = unit(np.random.default_rng(33), 1000, DIM)
    people = [
        PortablePerson(f"p{i}", now, (PortableFace(v, (0, 0, 1, 1), now),)) for i, v in enumerate(vectors)
    ]
    assert gallery.merge_people(people, "bulk", create=True).faces_added == 1000
    with psycopg.connect(gallery._dsn) as conn:
        row = conn.execute("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'faces'").fetchone()
    assert row is not None and row[0] is not None


# --- face chips ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chips() -> list[FaceChip]:
    """Real chips: the largest face of two portraits."""
    detector, made = MTCNN(RuntimeOptions(threads=1)), []
    for name in ("Angelina_Jolie/deepface_img1.jpg", "Barack_Obama/fr_obama1.jpg"):
        image = load_image_file(FACES / "portraits" / name)
        made.append(make_chip(image, max(detector.detect(image), key=lambda face: face.area)))
    return made


def chip_rows(gallery: Gallery) -> int:
    with psycopg.connect(gallery._dsn) as conn:
        row = conn.execute("SELECT count(*) FROM face_chips").fetchone()
    assert row is not None
    return int(row[0])


def test_chips_travel_with_their_faces(gallery: Gallery, second: Gallery, chips: list[FaceChip]) -> None:
    rng = np.random.default_rng(34)
    gallery.create_collection("site-c")
    ada = gallery.add_user("Ada", unit(rng, 1, DIM)[0], (1, 2, 3, 4), "site-c", chip=chips[0])
    gallery.add_face(ada.id, unit(rng, 1, DIM)[0], (5, 6, 7, 8), "site-c", chip=chips[1])
    gallery.add_user("Grace", unit(rng, 1, DIM)[0], (0, 0, 9, 9), "site-c")  # stored without a chip
    data, _ = export_bytes(gallery, "site-c")
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert lines[0]["version"] == 2 and "pictures" in lines[0]["notice"]
    assert [face["chip"] is None for person in lines[1:-1] for face in person["faces"]] == [
        False,
        False,
        True,
    ]
    assert base64.b64decode(lines[1]["faces"][0]["chip"]["jpeg"]) == chips[0].jpeg

    assert import_bytes(second, data).faces_added == 3
    assert chip_rows(second) == 2
    imported = {person.name: person for person in second.export_people("site-c")}
    for face, chip in zip(imported["Ada"].faces, chips, strict=True):
        assert face.chip is not None
        assert face.chip.jpeg == chip.jpeg
        np.testing.assert_allclose(face.chip.face.box, chip.face.box, rtol=1e-6)  # stored as real[]
        assert face.chip.face.score == pytest.approx(chip.face.score)
        np.testing.assert_allclose(face.chip.face.keypoints, chip.face.keypoints, rtol=1e-6)
    assert imported["Grace"].faces[0].chip is None


def test_a_version_1_file_imports_without_chips(
    gallery: Gallery, second: Gallery, chips: list[FaceChip]
) -> None:
    """Files written before chips were exported (version 1: no "chip" key) still import."""
    rng = np.random.default_rng(35)
    gallery.add_user("Ada", unit(rng, 1, DIM)[0], (1, 2, 3, 4), chip=chips[0])
    data, _ = export_bytes(gallery)
    person = json.loads(data.split(b"\n")[1])
    old_faces = [{key: value for key, value in face.items() if key != "chip"} for face in person["faces"]]
    old = _edit(
        _edit(data, 0, {"version": 1}, fix_checksum=False), 1, {"faces": old_faces}, fix_checksum=True
    )
    summary = import_bytes(second, old)
    assert (summary.people_added, summary.faces_added) == (1, 1)
    assert second.export_people()[0].faces[0].chip is None and chip_rows(second) == 0


def test_a_gallery_that_keeps_no_faces_imports_no_chips(
    gallery: Gallery, pg_server: EmbeddedServer, chips: list[FaceChip]
) -> None:
    """FACEGATE_KEEP_FACES=false (Gallery.keep_chips) holds for imports too."""
    gallery.add_user("Ada", unit(np.random.default_rng(36), 1, DIM)[0], (1, 2, 3, 4), chip=chips[0])
    data, _ = export_bytes(gallery)
    private = Gallery.open(create_database(pg_server), GALLERY_TEST_MODEL, DIM, timeout=2.0, keep_chips=False)
    try:
        assert import_bytes(private, data).faces_added == 1
        assert chip_rows(private) == 0
    finally:
        private.close()
