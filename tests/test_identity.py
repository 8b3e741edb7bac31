"""Identity changes over the API (issue 28): the guards hold under concurrency, the face to enrol can
be chosen in a photo of several, and two records of one person can be merged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from facegate.enrolment import AlreadyEnrolledError
from facegate.imaging import load_image_file
from tests.data import FACES
from tests.support import services
from tests.test_collections_api import BIDEN, OBAMA, new_collection, photo, recognize, register

TWO_PEOPLE = FACES / "groups" / "fr_obama_and_biden.jpg"


def subjects(client: TestClient) -> dict[int, list[float]]:
    """The two people of TWO_PEOPLE: their indexes in /detect's answer and their boxes (the photo
    also holds a small background face)."""
    boxes = client.post("/detect", files=photo(TWO_PEOPLE)).json()["boxes"]
    largest = sorted(
        range(len(boxes)), key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
    )
    return {index: boxes[index] for index in largest[-2:]}


@pytest.fixture
def collection(client: TestClient) -> Iterator[str]:
    name = new_collection(client, "identity")
    yield name
    client.delete(f"/collections/{name}")


def people(client: TestClient, collection: str) -> list[dict]:
    response = client.get("/users", params={"collection": collection})
    assert response.status_code == 200, response.text
    return response.json()["users"]


# --- the guards under concurrency ----------------------------------------------------------------


def test_concurrent_registrations_of_one_new_face_store_one_person(
    client: TestClient, collection: str
) -> None:
    """The duplicate check and the insert are one step: ten names for one new face, sent at once,
    leave exactly one person, and the nine others are told who it is."""
    image = (OBAMA / "fr_obama.jpg").read_bytes()

    def attempt(n: int) -> tuple[int, str]:
        response = client.post(
            "/register",
            params={"collection": collection},
            data={"name": f"Person {chr(ord('A') + n)}"},
            files={"image": ("face.jpg", image, "image/jpeg")},
        )
        return response.status_code, response.json().get("detail", "")

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(attempt, range(10)))

    codes = sorted(code for code, _ in answers)
    assert codes == [201] + [409] * 9, answers
    stored = people(client, collection)
    assert len(stored) == 1 and stored[0]["face_count"] == 1
    assert all(stored[0]["name"] in detail for code, detail in answers if code == 409)


def test_concurrent_add_face_and_merge_keep_every_face(client: TestClient, collection: str) -> None:
    """Photos added to a person while they are merged into another end up with the one kept."""
    kept = register(client, collection, "Barack Obama", OBAMA / "fr_obama.jpg")["user_id"]
    merged = register(client, collection, "Obama", OBAMA / "fr_obama1.jpg", allow_duplicate="true")["user_id"]

    def add(path_name: str) -> int:
        return client.post(
            f"/users/{merged}/faces", params={"collection": collection}, files=photo(OBAMA / path_name)
        ).status_code

    with ThreadPoolExecutor(max_workers=3) as pool:
        added = [pool.submit(add, name) for name in ("fr_obama2.jpg", "fr_obama3.jpg")]
        merge = pool.submit(
            lambda: client.post(
                f"/users/{kept}/merge", params={"collection": collection}, json={"from": merged}
            )
        )
        codes = [future.result() for future in added]
        assert merge.result().status_code == 200, merge.result().text

    # An add that came after the merge finds no such person (404); every other face was moved.
    assert set(codes) <= {201, 404}
    (person,) = people(client, collection)
    assert person["id"] == kept and person["face_count"] == 2 + codes.count(201)


def test_concurrent_enrolments_of_one_face_pass_the_check_one_at_a_time(
    client: TestClient, collection: str
) -> None:
    """The same race without the API's inference in front (which spaces requests out): ten threads
    released together with one embedded face. Without the lock, several pass the check."""
    core = services(client)
    face = core.pipeline.single_face(load_image_file(OBAMA / "fr_obama.jpg"))
    start = threading.Barrier(10)

    def attempt(n: int) -> str:
        start.wait()
        try:
            core.enrolment.register(f"Person {chr(ord('A') + n)}", face, collection)
        except AlreadyEnrolledError:
            return "refused"
        return "stored"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = sorted(pool.map(attempt, range(10)))
    assert outcomes == ["refused"] * 9 + ["stored"]
    assert len(people(client, collection)) == 1


# --- choosing the face to enrol ------------------------------------------------------------------


def test_a_two_person_photo_without_a_choice_lists_both_faces(client: TestClient, collection: str) -> None:
    response = client.post(
        "/register", params={"collection": collection}, data={"name": "Someone"}, files=photo(TWO_PEOPLE)
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert "faces of similar size" in body["detail"] and "face=" in body["detail"]
    detected = client.post("/detect", files=photo(TWO_PEOPLE)).json()["boxes"]
    assert len(body["faces"]) == len(detected) >= 2
    for index, (listed, box) in enumerate(zip(body["faces"], detected, strict=True)):
        assert listed["index"] == index
        assert listed["box"] == pytest.approx(box, abs=0.06)
    assert people(client, collection) == []


@pytest.mark.parametrize("by", ["face", "box"])
def test_the_chosen_face_of_a_two_person_photo_is_registered(
    client: TestClient, collection: str, by: str
) -> None:
    """Each of the two faces, chosen by index or by box, registers that person: a portrait of each
    is then recognised as the name given to their face."""
    for index, box in subjects(client).items():
        choice = {"face": index} if by == "face" else {"box": ",".join(f"{v + 3:.1f}" for v in box)}
        register(client, collection, f"Face {index}", TWO_PEOPLE, **choice)
    names = {
        portrait: recognize(client, collection, portrait)["faces"][0]["matched_user"]["name"]
        for portrait in (OBAMA / "fr_obama.jpg", BIDEN / "fr_biden.jpg")
    }
    assert sorted(names.values()) == sorted(f"Face {index}" for index in subjects(client)), names


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"face": 9}, "face 9 was asked for, but the photo holds"),
        ({"box": "0,0,20,20"}, "no face found in the box"),
        ({"box": "1,2,3"}, "box is four numbers"),
        ({"box": "10,10,5,50"}, "box is four numbers"),
        ({"box": "nan,1,2,3"}, "box is four numbers"),
        ({"face": 0, "box": "1,2,3,4"}, "not both"),
        ({"face": -1}, "face"),
    ],
)
def test_a_choice_that_picks_no_face_is_refused(
    client: TestClient, collection: str, params: dict, detail: str
) -> None:
    response = client.post(
        "/register",
        params={"collection": collection, **params},
        data={"name": "Someone"},
        files=photo(TWO_PEOPLE),
    )
    assert response.status_code == 422, response.text
    assert detail in response.json()["detail"]
    assert people(client, collection) == []


def test_add_face_takes_the_chosen_face(client: TestClient, collection: str) -> None:
    """Biden's face of the two-person photo is added to Biden; Obama's is refused as someone else."""
    biden = register(client, collection, "Joe Biden", BIDEN / "fr_biden.jpg")["user_id"]
    verdicts = [
        client.post(
            f"/users/{biden}/faces", params={"collection": collection, "face": index}, files=photo(TWO_PEOPLE)
        ).status_code
        for index in subjects(client)
    ]
    assert sorted(verdicts) == [201, 422]


# --- merge ---------------------------------------------------------------------------------------


def test_merge_moves_every_face_and_keeps_the_targets_name(client: TestClient, collection: str) -> None:
    kept = register(client, collection, "Barack Obama", OBAMA / "fr_obama.jpg")["user_id"]
    other = register(client, collection, "B. Obama", OBAMA / "fr_obama1.jpg", allow_duplicate="true")[
        "user_id"
    ]
    assert (
        client.post(
            f"/users/{other}/faces", params={"collection": collection}, files=photo(OBAMA / "fr_obama2.jpg")
        ).status_code
        == 201
    )

    response = client.post(f"/users/{kept}/merge", params={"collection": collection}, json={"from": other})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["faces_moved"] == 2 and body["merged_from"] == other
    assert body["user"]["name"] == "Barack Obama" and body["user"]["face_count"] == 3
    assert client.get(f"/users/{other}", params={"collection": collection}).status_code == 404
    assert [p["id"] for p in people(client, collection)] == [kept]
    faces = client.get(f"/users/{kept}/faces", params={"collection": collection}).json()["faces"]
    assert len(faces) == 3
    (face,) = recognize(client, collection, OBAMA / "fr_obama3.jpg")["faces"]
    assert face["matched_user"]["name"] == "Barack Obama"


def test_merge_refuses_one_person_twice_and_other_collections(client: TestClient, collection: str) -> None:
    kept = register(client, collection, "Barack Obama", OBAMA / "fr_obama.jpg")["user_id"]
    elsewhere = new_collection(client, "identity")
    try:
        stranger = register(client, elsewhere, "Joe Biden", BIDEN / "fr_biden.jpg")["user_id"]
        across = client.post(
            f"/users/{kept}/merge", params={"collection": collection}, json={"from": stranger}
        )
        assert across.status_code == 404 and f"no user with id {stranger}" in across.json()["detail"]
        assert len(people(client, elsewhere)) == 1
    finally:
        client.delete(f"/collections/{elsewhere}")
    itself = client.post(f"/users/{kept}/merge", params={"collection": collection}, json={"from": kept})
    assert itself.status_code == 422 and "themselves" in itself.json()["detail"]
    missing = client.post(f"/users/{kept}/merge", params={"collection": collection}, json={})
    assert missing.status_code == 422
    assert people(client, collection)[0]["face_count"] == 1
