"""Collections in the gallery: the migration, isolation, top-K distinct people, per-photo management."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from facegate.gallery import (
    DEFAULT_COLLECTION,
    ConfusableNameError,
    DuplicateCollectionError,
    DuplicateNameError,
    Gallery,
    GalleryError,
    InvalidCollectionNameError,
    LastFaceError,
    ProtectedCollectionError,
    UnknownCollectionError,
    UnknownFaceError,
    UnknownUserError,
    schema,
)
from facegate.gallery.schema import MIGRATIONS, migrate
from tests.support import BOX, cosine_distances, unit

DIM = 16


def near(vector: np.ndarray, rng: np.random.Generator, spread: float = 0.05) -> np.ndarray:
    return vector + spread * unit(rng, 1, len(vector))[0]


# --- the migration -------------------------------------------------------------------------------


def test_a_gallery_of_the_previous_schema_opens_with_its_people_in_default(
    gallery_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database of the schema before collections (migrations 1-3, people and faces) opens with
    every later migration; everyone is in `default`, searchable, and the name rules now hold per
    collection."""
    (collections,) = [migration for migration in MIGRATIONS if migration.version == 4]
    assert collections.description.startswith("collections")
    rng = np.random.default_rng(20)
    vectors = unit(rng, 3, DIM)
    monkeypatch.setattr(schema, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version < 4))
    with psycopg.connect(gallery_dsn) as conn:
        migrate(conn, "test-model", DIM)
        register_vector(conn)
        ada, bob = (
            conn.execute(
                "INSERT INTO users (name, name_skeleton) VALUES (%s, %s) RETURNING id", (name, name)
            ).fetchone()[0]  # type: ignore[index]
            for name in ("Ada", "Bob")
        )
        for user_id, vector in ((ada, vectors[0]), (ada, vectors[1]), (bob, vectors[2])):
            conn.execute(
                "INSERT INTO faces (user_id, embedding, model, box) VALUES (%s, %s, 'test-model', %s)",
                (user_id, vector, list(BOX)),
            )
        conn.commit()
    monkeypatch.undo()

    gallery = Gallery.open(gallery_dsn, "test-model", DIM)
    try:
        (default,) = gallery.list_collections()
        assert (default.name, default.people, default.faces) == (DEFAULT_COLLECTION, 2, 3)
        assert [u.name for u in gallery.list_users(0, 10)[0]] == ["Ada", "Bob"]
        assert gallery.get_user(ada).face_count == 2
        assert [m.user_id for m in gallery.search(vectors[2], k=2)[0]] == [bob, ada]
        with pytest.raises(DuplicateNameError):
            gallery.add_user("Ada", vectors[0], BOX)
        gallery.create_collection("site-b")
        assert gallery.add_user("Ada", vectors[0], BOX, collection="site-b").name == "Ada"
        new = gallery.add_user("Carol", vectors[1], BOX)  # a new person after the migration
        assert gallery.get_user(new.id).name == "Carol"
    finally:
        gallery.close()


# --- collections ---------------------------------------------------------------------------------


def test_create_list_and_delete_collections(gallery: Gallery) -> None:
    rng = np.random.default_rng(21)
    created = gallery.create_collection("site-a")
    assert (created.name, created.people, created.faces) == ("site-a", 0, 0)
    ada = gallery.add_user("Ada", unit(rng, 1, DIM)[0], BOX, collection="site-a")
    gallery.add_face(ada.id, unit(rng, 1, DIM)[0], BOX, collection="site-a")
    gallery.add_user("Bob", unit(rng, 1, DIM)[0], BOX)

    listed = {c.name: (c.people, c.faces) for c in gallery.list_collections()}
    assert listed == {"default": (1, 1), "site-a": (1, 2)}
    assert gallery.get_collection("site-a").id == created.id

    gallery.delete_collection("site-a")

    assert [c.name for c in gallery.list_collections()] == ["default"]
    with psycopg.connect(gallery._dsn) as conn:  # its people and faces went with it
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM faces").fetchone() == (1,)
    with pytest.raises(UnknownCollectionError):
        gallery.delete_collection("site-a")
    assert gallery.create_collection("site-a").people == 0  # the name is free again


def test_collection_name_errors(gallery: Gallery) -> None:
    gallery.create_collection("Site_1.b")
    with pytest.raises(DuplicateCollectionError, match=r"'Site_1\.b' exists already"):
        gallery.create_collection("Site_1.b")
    with pytest.raises(DuplicateCollectionError):
        gallery.create_collection(DEFAULT_COLLECTION)
    for bad in ("", "-a", "a:b", "a|b", "a,b", "*", "a b", "é", "x" * 65):
        with pytest.raises(InvalidCollectionNameError, match="1 to 64 characters"):
            gallery.create_collection(bad)
    with pytest.raises(ProtectedCollectionError, match="cannot be deleted"):
        gallery.delete_collection(DEFAULT_COLLECTION)
    assert {c.name for c in gallery.list_collections()} == {DEFAULT_COLLECTION, "Site_1.b"}


def _calls(gallery: Gallery, vector: np.ndarray, collection: str) -> dict[str, Callable[[], object]]:
    return {
        "add_user": lambda: gallery.add_user("x", vector, BOX, collection=collection),
        "add_face": lambda: gallery.add_face(1, vector, BOX, collection=collection),
        "rename_user": lambda: gallery.rename_user(1, "y", collection=collection),
        "get_user": lambda: gallery.get_user(1, collection=collection),
        "list_users": lambda: gallery.list_users(0, 10, collection=collection),
        "delete_user": lambda: gallery.delete_user(1, collection=collection),
        "list_faces": lambda: gallery.list_faces(1, collection=collection),
        "delete_face": lambda: gallery.delete_face(1, 1, collection=collection),
        "nearest_face_distance": lambda: gallery.nearest_face_distance(1, vector, collection=collection),
        "size": lambda: gallery.size(collection=collection),
        "search": lambda: gallery.search(vector, collection=collection),
        "stats": lambda: gallery.stats(collection=collection),
        "get_collection": lambda: gallery.get_collection(collection),
        "require_collection": lambda: gallery.require_collection(collection),
        "export_people": lambda: gallery.export_people(collection),
        "merge_people": lambda: gallery.merge_people([], collection),
    }


def test_every_method_refuses_an_unknown_collection(gallery: Gallery) -> None:
    vector = unit(np.random.default_rng(22), 1, DIM)[0]
    gallery.add_user("Ada", vector, BOX)
    for method, call in _calls(gallery, vector, "nowhere").items():
        with pytest.raises(UnknownCollectionError, match="no collection named 'nowhere'"):
            call()
            pytest.fail(method)
    assert isinstance(UnknownCollectionError("x"), GalleryError)
    assert gallery.stats().total_users == 1


def test_collections_are_isolated(gallery: Gallery) -> None:
    """Search, listing, counts and every id-based method see only the collection named."""
    rng = np.random.default_rng(23)
    gallery.create_collection("a")
    gallery.create_collection("b")
    query = unit(rng, 1, DIM)[0]
    in_a = gallery.add_user("Ada", near(query, rng, 0.5), BOX, collection="a")
    # B's person is far nearer the query than anyone in A, and has the same name.
    in_b = gallery.add_user("Ada", near(query, rng, 0.01), BOX, collection="b")
    gallery.add_face(in_b.id, near(query, rng, 0.01), BOX, collection="b")

    assert [m.user_id for m in gallery.search(query, k=5, collection="a")[0]] == [in_a.id]
    assert [m.user_id for m in gallery.search(query, k=5, collection="b")[0]] == [in_b.id]
    assert gallery.search(query, k=5)[0] == []  # default is empty
    assert [u.id for u in gallery.list_users(0, 10, collection="a")[0]] == [in_a.id]
    assert gallery.list_users(0, 10)[1] == 0
    assert (gallery.size("a"), gallery.size("b"), gallery.size()) == (1, 1, 0)
    stats = gallery.stats("b")
    assert (stats.total_users, stats.total_faces) == (1, 2)

    for method, call in _user_calls(gallery, query, in_b.id, "a").items():
        with pytest.raises(UnknownUserError):
            call()
            pytest.fail(method)
    assert gallery.get_user(in_b.id, collection="b").face_count == 2
    assert gallery.nearest_face_distance(in_a.id, query, collection="a") > 0.01
    with pytest.raises(UnknownUserError):
        gallery.nearest_face_distance(in_b.id, query, collection="a")


def _user_calls(
    gallery: Gallery, vector: np.ndarray, user_id: int, collection: str
) -> dict[str, Callable[[], object]]:
    """The methods that take a person's id, asked for `user_id` (of another collection) in `collection`."""
    face_id = gallery.list_faces(user_id, collection="b")[0].id
    return {
        "add_face": lambda: gallery.add_face(user_id, vector, BOX, collection=collection),
        "rename_user": lambda: gallery.rename_user(user_id, "Eve", collection=collection),
        "get_user": lambda: gallery.get_user(user_id, collection=collection),
        "delete_user": lambda: gallery.delete_user(user_id, collection=collection),
        "list_faces": lambda: gallery.list_faces(user_id, collection=collection),
        "delete_face": lambda: gallery.delete_face(user_id, face_id, collection=collection),
    }


def test_names_are_unique_per_collection(gallery: Gallery) -> None:
    vectors = unit(np.random.default_rng(24), 4, DIM)
    gallery.create_collection("b")
    gallery.add_user("Alice", vectors[0], BOX)
    assert gallery.add_user("Alice", vectors[1], BOX, collection="b").name == "Alice"
    with pytest.raises(DuplicateNameError):
        gallery.add_user("Alice", vectors[2], BOX, collection="b")
    with pytest.raises(ConfusableNameError, match="'Alice'"):
        gallery.add_user("\u0410lice", vectors[2], BOX, collection="b")  # Cyrillic А
    assert (gallery.size(), gallery.size("b")) == (1, 1)


# --- top-K ---------------------------------------------------------------------------------------


def test_top_k_is_k_distinct_people_nearest_first_within_the_collection(gallery: Gallery) -> None:
    rng = np.random.default_rng(25)
    gallery.create_collection("other")
    query = unit(rng, 1, DIM)[0]
    owners, vectors = [], []
    for person in range(12):
        user = None
        for _ in range(1 + person % 4 * 5):  # 1, 6, 11 or 16 faces each
            vector = near(query, rng, 0.2 + 0.1 * person)
            if user is None:
                user = gallery.add_user(f"p{person}", vector, BOX)
            else:
                gallery.add_face(user.id, vector, BOX)
            owners.append(user.id)
            vectors.append(vector)
    for i in range(5):  # nearer than anyone, but elsewhere
        gallery.add_user(f"q{i}", near(query, rng, 0.01), BOX, collection="other")

    distances = cosine_distances(query[None], np.stack(vectors))[0]
    per_person: dict[int, float] = {}
    for owner, distance in zip(owners, distances, strict=True):
        per_person[owner] = min(per_person.get(owner, 2.0), float(distance))
    expected = sorted(per_person, key=per_person.__getitem__)

    for k in (1, 3, 7, 12, 50):
        (matches,) = gallery.search(query, k=k)
        ids = [m.user_id for m in matches]
        assert ids == expected[:k]
        assert len(set(ids)) == len(ids)
        np.testing.assert_allclose([m.distance for m in matches], [per_person[i] for i in ids], atol=1e-5)
        assert [m.distance for m in matches] == sorted(m.distance for m in matches)


# --- per-photo management ------------------------------------------------------------------------


def test_list_faces_and_delete_one(gallery: Gallery) -> None:
    rng = np.random.default_rng(26)
    ada = gallery.add_user("Ada", unit(rng, 1, DIM)[0], (10, 20, 110, 150))
    second = gallery.add_face(ada.id, unit(rng, 1, DIM)[0], (0, 0, 64, 80))
    other = gallery.add_user("Bob", unit(rng, 1, DIM)[0], BOX)

    faces = gallery.list_faces(ada.id)
    assert [f.id for f in faces] == sorted(f.id for f in faces) and faces[1] == second
    assert [f.box_size for f in faces] == [(100.0, 130.0), (64.0, 80.0)]
    assert {f.model for f in faces} == {gallery.model} and faces[0].created_at <= faces[1].created_at

    (bobs_face,) = gallery.list_faces(other.id)
    with pytest.raises(UnknownFaceError, match=f"user {ada.id} has no face with id {bobs_face.id}"):
        gallery.delete_face(ada.id, bobs_face.id)
    before = gallery.get_user(ada.id).updated_at
    assert gallery.delete_face(ada.id, faces[0].id) == 1  # faces left
    assert gallery.list_faces(ada.id) == [second]
    assert gallery.get_user(ada.id).updated_at > before
    with pytest.raises(LastFaceError, match="delete the user instead"):
        gallery.delete_face(ada.id, second.id)
    assert gallery.list_faces(ada.id) == [second]
    assert gallery.stats().total_faces == 2


def test_two_concurrent_deletes_cannot_remove_the_last_two_faces(gallery: Gallery) -> None:
    rng = np.random.default_rng(27)
    for attempt in range(5):
        user = gallery.add_user(f"p{attempt}", unit(rng, 1, DIM)[0], BOX)
        gallery.add_face(user.id, unit(rng, 1, DIM)[0], BOX)
        face_ids = [f.id for f in gallery.list_faces(user.id)]
        start = threading.Barrier(2)

        def delete(face_id: int, user_id: int = user.id, barrier: threading.Barrier = start) -> str:
            barrier.wait()
            try:
                gallery.delete_face(user_id, face_id)
            except LastFaceError:
                return "refused"
            return "deleted"

        with ThreadPoolExecutor(2) as pool:
            assert sorted(pool.map(delete, face_ids)) == ["deleted", "refused"]
        assert len(gallery.list_faces(user.id)) == 1


def test_rename_follows_the_name_rules_of_the_collection(gallery: Gallery) -> None:
    vectors = unit(np.random.default_rng(28), 3, DIM)
    gallery.create_collection("b")
    ada = gallery.add_user("Ada", vectors[0], BOX)
    gallery.add_user("Alice", vectors[1], BOX)
    gallery.add_user("Grace", vectors[2], BOX, collection="b")

    renamed = gallery.rename_user(ada.id, "Grace")  # taken in b only
    assert (renamed.name, renamed.face_count) == ("Grace", 1) and renamed.updated_at > ada.updated_at
    assert gallery.get_user(ada.id) == renamed
    assert gallery.rename_user(ada.id, "Grace").name == "Grace"  # its own name again
    with pytest.raises(DuplicateNameError):
        gallery.rename_user(ada.id, "Alice")
    with pytest.raises(ConfusableNameError, match="'Alice'"):
        gallery.rename_user(ada.id, "Alic\u0435")  # Cyrillic е
    with pytest.raises(UnknownUserError):
        gallery.rename_user(12345, "Nobody")
    assert [u.name for u in gallery.list_users(0, 10)[0]] == ["Grace", "Alice"]


def test_nearest_face_distance_is_exact_over_the_persons_faces(gallery: Gallery) -> None:
    rng = np.random.default_rng(29)
    faces = unit(rng, 4, DIM)
    ada = gallery.add_user("Ada", faces[0], BOX)
    for vector in faces[1:]:
        gallery.add_face(ada.id, vector, BOX)
    gallery.add_user("Bob", unit(rng, 1, DIM)[0], BOX)
    for query in unit(rng, 5, DIM) * 2.0:
        expected = cosine_distances(query[None], faces).min()
        np.testing.assert_allclose(gallery.nearest_face_distance(ada.id, query), expected, atol=1e-5)
    with pytest.raises(UnknownUserError):
        gallery.nearest_face_distance(12345, faces[0])
