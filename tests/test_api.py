"""The REST API end to end through FastAPI's test client, on the embedded PostgreSQL and real models."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from facegate.config import Settings
from tests.data import FACES
from tests.support import API_KEY, BAD_UPLOAD_CASES, bad_upload, gallery_size, unique, upload

PORTRAITS = FACES / "portraits"
GROUPS = FACES / "groups"
OBAMA = PORTRAITS / "Barack_Obama"
BIDEN = PORTRAITS / "Joe_Biden"


# --- open endpoints and auth ---------------------------------------------------------------------


def test_the_app_under_test_has_no_rate_limit(client: TestClient) -> None:
    """However fast the machine, the suite's own requests never run into the default limit."""
    over_the_default_burst = Settings.model_fields["rate_limit_burst"].default + 1
    codes = {client.get("/stats").status_code for _ in range(over_the_default_burst)}
    assert codes == {200}


def test_root_lists_endpoints_without_a_key(anonymous: TestClient) -> None:
    body = anonymous.get("/").json()
    assert body["service"] == "FaceGate"
    assert {"/detect", "/recognize", "/register", "/users/{user_id}"} <= set(body["endpoints"])


def test_health_reports_the_database_and_model(anonymous: TestClient) -> None:
    response = anonymous.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["database"] == "connected"
    assert body["embedding_dimension"] == 512 and body["embedding_model"].startswith("mobilefacenet512")
    # No fixed threshold by default: each search's follows the gallery's size (FACE_MATCH_FPIR).
    assert body["threshold"] is None and body["fpir_target"] == 0.01
    assert body["instance"] == socket.gethostname()  # which replica answered (INSTANCE_NAME unset)


def test_health_reports_which_runtime_each_model_runs_on(anonymous: TestClient) -> None:
    providers = anonymous.get("/health").json()["providers"]
    assert set(providers) == {"detector", "embedder"}
    for names in providers.values():
        assert names and names[-1] == "CPUExecutionProvider"  # this build and these tests: CPU


def test_a_trailing_slash_redirect_is_relative_and_echoes_no_host(client: TestClient) -> None:
    response = client.get("/users/?limit=5", headers={"Host": "attacker.example"}, follow_redirects=False)
    assert response.status_code == 307 and response.headers["Location"] == "/users?limit=5"


def test_docs_and_openapi_are_open(anonymous: TestClient) -> None:
    assert anonymous.get("/docs").status_code == 200
    spec = anonymous.get("/openapi.json").json()
    assert "X-API-Key" in str(spec["components"]["securitySchemes"])


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/detect"), ("post", "/detect/annotated"), ("post", "/register"), ("post", "/recognize"),
     ("post", "/verify"), ("get", "/users"), ("get", "/users/1"), ("delete", "/users/1"),
     ("post", "/users/1/faces"), ("get", "/stats")],
)  # fmt: skip
@pytest.mark.parametrize("key", [None, "wrong-key", API_KEY + "x", ""])
def test_protected_endpoints_need_the_right_key(
    anonymous: TestClient, method: str, path: str, key: str | None
) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    response = anonymous.request(method, path, headers=headers)
    assert response.status_code == 401
    assert "API key" in response.json()["detail"]


# --- detection -----------------------------------------------------------------------------------


def test_detect_finds_every_face_of_a_group(client: TestClient) -> None:
    response = client.post("/detect", files=upload(GROUPS / "fr_two_people.jpg"))
    assert response.status_code == 200
    body = response.json()
    assert len(body["boxes"]) == len(body["scores"]) == len(body["keypoints"]) == 2
    assert body["scores"] == sorted(body["scores"], reverse=True)
    for box, points in zip(body["boxes"], body["keypoints"], strict=True):
        x1, y1, x2, y2 = box
        assert x1 < x2 and y1 < y2
        assert set(points) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
        assert points["left_eye"][0] < points["right_eye"][0]  # viewer's left
        assert x1 <= points["nose"][0] <= x2 and y1 <= points["nose"][1] <= y2


def test_detect_parameters_change_the_result(client: TestClient) -> None:
    path = GROUPS / "deepface_selfie-many-people.jpg"
    default = client.post("/detect", files=upload(path)).json()
    strict = client.post("/detect", params={"threshold_onet": 0.99}, files=upload(path)).json()
    large = client.post("/detect", params={"min_face_size": 150}, files=upload(path)).json()
    assert len(default["boxes"]) >= 5
    assert len(strict["boxes"]) < len(default["boxes"])
    assert all(s >= 0.99 for s in strict["scores"])
    assert len(large["boxes"]) < len(default["boxes"])


def test_detect_on_a_photo_without_faces_returns_empty_lists(client: TestClient) -> None:
    body = client.post("/detect", files=upload(FACES / "noface" / "skimage_coffee.png")).json()
    assert body == {"boxes": [], "scores": [], "keypoints": []}


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_detect_annotated_returns_the_image_with_marks(client: TestClient, fmt: str) -> None:
    path = GROUPS / "fr_two_people.jpg"
    response = client.post("/detect/annotated", params={"format": fmt}, files=upload(path))
    assert response.status_code == 200
    assert response.headers["content-type"] == f"image/{fmt}"
    drawn = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    original = np.asarray(Image.open(path).convert("RGB"))
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100  # something was drawn


@pytest.mark.parametrize(
    "params",
    [{"min_face_size": -1}, {"min_face_size": 0}, {"min_face_size": "big"}, {"threshold_pnet": 1.5},
     {"threshold_rnet": -0.1}, {"threshold_onet": "nan"}, {"threshold_pnet": "inf"}],
)  # fmt: skip
def test_detect_parameters_out_of_range_are_422(client: TestClient, params: dict) -> None:
    response = client.post("/detect", params=params, files=upload(OBAMA / "fr_obama_small.jpg"))
    assert response.status_code == 422
    assert response.json()["detail"]


def test_detect_without_a_file_is_422(client: TestClient) -> None:
    response = client.post("/detect")
    assert response.status_code == 422
    assert "'image' or 'file'" in response.json()["detail"]


@pytest.mark.parametrize("field", ["image", "file"])
def test_detect_takes_the_photo_as_image_or_file(client: TestClient, field: str) -> None:
    for path in ("/detect", "/detect/annotated"):
        response = client.post(path, files=upload(OBAMA / "fr_obama_small.jpg", field))
        assert response.status_code == 200, (path, response.text)
    boxes = client.post("/detect", files=upload(OBAMA / "fr_obama_small.jpg", field)).json()["boxes"]
    assert len(boxes) == 1


def test_detect_refuses_two_photos_at_once(client: TestClient) -> None:
    photo = OBAMA / "fr_obama_small.jpg"
    response = client.post("/detect", files={**upload(photo, "image"), **upload(photo, "file")})
    assert response.status_code == 422 and "got both" in response.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/detect", {"params": {"min_face_size": 0}}),
        ("post", "/recognize", {}),
        ("post", "/register", {"data": {"name": ""}}),
        ("get", "/users/not-a-number", {}),
        ("delete", "/users/999999999", {}),
        ("get", "/no/such/path", {}),
        ("put", "/detect", {}),
    ],
)
def test_every_error_has_one_sentence_in_detail(
    client: TestClient, method: str, path: str, kwargs: dict
) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert 400 <= response.status_code < 500
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert set(body) <= {"detail", "errors"}
    if "errors" in body:  # validation: FastAPI's field list beside the sentence
        assert all({"loc", "msg", "type"} <= set(error) for error in body["errors"])


# --- bad uploads: the documented 4xx, and the gallery unchanged ---------------------------------


@pytest.mark.parametrize("case", BAD_UPLOAD_CASES)
@pytest.mark.parametrize(
    ("path", "field"), [("/detect", "file"), ("/recognize", "image"), ("/register", "image")]
)
def test_bad_uploads_get_the_documented_status(client: TestClient, case: str, path: str, field: str) -> None:
    data, expected = bad_upload(case)
    before = gallery_size(client)
    form = {"name": unique("bad upload")} if path == "/register" else None
    response = client.post(path, data=form, files={field: ("photo.jpg", data, "image/jpeg")})
    assert response.status_code == expected, response.text
    assert response.json()["detail"]
    assert gallery_size(client) == before


def test_upload_over_the_byte_limit_is_413(client: TestClient) -> None:
    data = b"\xff\xd8\xff" + b"\x00" * (21 * 1024 * 1024)
    response = client.post("/detect", files={"file": ("big.jpg", data, "image/jpeg")})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


# --- registration and the gallery --------------------------------------------------------------


def test_register_then_recognise_another_photo(client: TestClient) -> None:
    # fr_obama.jpg also holds a small (56 px vs 244 px) background detection: not a rival face.
    name = unique("Barack Obama")
    response = client.post("/register", data={"name": name}, files=upload(OBAMA / "fr_obama.jpg", "image"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "success" and body["name"] == name and body["embedding_dimension"] == 512

    result = client.post("/recognize", files=upload(OBAMA / "fr_obama2.jpg", "image")).json()
    assert result["status"] == "match"
    assert result["matched_user"] == {"id": body["user_id"], "name": name}
    assert 0 <= result["distance"] <= result["threshold"]
    assert result["confidence"] == pytest.approx(1 - result["distance"])
    assert len(result["faces"]) == 1 and result["faces"][0]["matched_user"]["name"] == name
    # Why this threshold: the false-accept target at the gallery's size.
    assert result["threshold_source"] == "fpir" and result["fpir_target"] == 0.01
    assert result["gallery_size"] == client.get("/stats").json()["total_users"] >= 1
    assert 0.5 < result["similarity"] <= 1 and result["similarity"] == result["faces"][0]["similarity"]
    client.delete(f"/users/{body['user_id']}")


def blurred_upload(path: Path) -> dict:
    image = Image.open(path).convert("RGB")
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(image.width / 60)).save(buffer, format="JPEG")
    return {"image": ("blurred.jpg", buffer.getvalue(), "image/jpeg")}


def test_a_blurred_face_is_not_searched_nor_enrolled(client: TestClient) -> None:
    before = gallery_size(client)
    refused = client.post(
        "/register", data={"name": unique("Blurred")}, files=blurred_upload(OBAMA / "fr_obama.jpg")
    )
    assert refused.status_code == 422 and "blurred" in refused.json()["detail"]
    assert gallery_size(client) == before
    result = client.post("/recognize", files=blurred_upload(OBAMA / "fr_obama.jpg")).json()
    face = result["faces"][0]
    assert (result["status"], face["status"], face["matched_user"], face["distance"]) == (
        "low_quality",
        "low_quality",
        None,
        None,
    )
    assert "blurred" in face["quality"] and "blurred" in result["message"]


def test_every_face_has_a_similarity_between_0_and_1(client: TestClient) -> None:
    user_id = client.post(
        "/register", data={"name": unique("Biden")}, files=upload(BIDEN / "fr_biden.jpg", "image")
    ).json()["user_id"]
    result = client.post("/recognize", files=upload(GROUPS / "facenetpytorch_multiface.jpg", "image")).json()
    similarities = [face["similarity"] for face in result["faces"] if face["status"] != "low_quality"]
    assert similarities and all(0.0 <= value <= 1.0 for value in similarities)
    client.delete(f"/users/{user_id}")


def test_register_refuses_a_duplicate_name_and_keeps_the_first(client: TestClient) -> None:
    name = unique("Joe Biden")
    first = client.post("/register", data={"name": name}, files=upload(BIDEN / "fr_biden.jpg", "image"))
    assert first.status_code == 201
    before = gallery_size(client)
    again = client.post(
        "/register", data={"name": f"  {name} "}, files=upload(BIDEN / "fr_biden2.jpg", "image")
    )
    assert again.status_code == 409
    assert name in again.json()["detail"]
    assert gallery_size(client) == before
    assert client.get(f"/users/{first.json()['user_id']}").json()["face_count"] == 1
    client.delete(f"/users/{first.json()['user_id']}")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (FACES / "noface" / "skimage_chelsea.png", "no face"),
        (GROUPS / "fr_two_people.jpg", "2 faces"),
        (PORTRAITS / "_unlabelled" / "mtcnn_ivan.jpg", "2 faces"),  # a second face of similar size
    ],
)
def test_register_needs_exactly_one_face(client: TestClient, path: Path, reason: str) -> None:
    before = gallery_size(client)
    response = client.post("/register", data={"name": unique("nobody")}, files=upload(path, "image"))
    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert gallery_size(client) == before


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "bad\x00name", "tab\tname", "bidi\u202ename"])
def test_register_refuses_bad_names(client: TestClient, name: str) -> None:
    before = gallery_size(client)
    response = client.post(
        "/register", data={"name": name}, files=upload(OBAMA / "fr_obama_small.jpg", "image")
    )
    assert response.status_code == 422
    assert gallery_size(client) == before


def test_unicode_names_are_normalised(client: TestClient) -> None:
    composed = unique("Zoë")
    decomposed = composed.replace("ë", "e\u0308")
    first = client.post("/register", data={"name": decomposed}, files=upload(BIDEN / "fr_biden.jpg", "image"))
    assert first.status_code == 201 and first.json()["name"] == composed
    second = client.post("/register", data={"name": composed}, files=upload(BIDEN / "fr_biden2.jpg", "image"))
    assert second.status_code == 409
    client.delete(f"/users/{first.json()['user_id']}")


def test_users_pages_get_add_face_and_delete(client: TestClient) -> None:
    name = unique("Kit Harington")
    user_id = client.post(
        "/register", data={"name": name}, files=upload(PORTRAITS / "Kit_Harington" / "fr_john2.jpeg", "image")
    ).json()["user_id"]

    added = client.post(
        f"/users/{user_id}/faces", files=upload(PORTRAITS / "Kit_Harington" / "fr_john1.jpeg", "image")
    )
    assert added.status_code == 201, added.text
    assert added.json()["face_count"] == 2
    user = client.get(f"/users/{user_id}").json()
    assert user["name"] == name and user["face_count"] == 2

    total = client.get("/users", params={"limit": 1}).json()["total"]
    seen = []
    for offset in range(total):
        page = client.get("/users", params={"offset": offset, "limit": 1}).json()
        assert len(page["users"]) == 1 and page["total"] == total
        seen.append(page["users"][0]["id"])
    assert user_id in seen and len(set(seen)) == total

    users_before, faces_before = gallery_size(client)
    assert client.delete(f"/users/{user_id}").status_code == 200
    assert gallery_size(client) == (users_before - 1, faces_before - 2)  # both faces went with the user
    assert client.get(f"/users/{user_id}").status_code == 404
    assert client.delete(f"/users/{user_id}").status_code == 404


def test_unknown_ids_are_404_and_nothing_changes(client: TestClient) -> None:
    before = gallery_size(client)
    assert client.get("/users/987654321").status_code == 404
    assert client.delete("/users/987654321").status_code == 404
    response = client.post("/users/987654321/faces", files=upload(OBAMA / "fr_obama_small.jpg", "image"))
    assert response.status_code == 404
    assert "987654321" in response.json()["detail"]
    assert client.get("/users/0").status_code == 422
    assert client.get("/users/abc").status_code == 422
    assert gallery_size(client) == before


def test_add_face_needs_exactly_one_face(client: TestClient) -> None:
    user_id = client.post(
        "/register", data={"name": unique("Joe Biden")}, files=upload(BIDEN / "fr_biden.jpg", "image")
    ).json()["user_id"]
    response = client.post(f"/users/{user_id}/faces", files=upload(GROUPS / "fr_two_people.jpg", "image"))
    assert response.status_code == 422
    assert client.get(f"/users/{user_id}").json()["face_count"] == 1
    client.delete(f"/users/{user_id}")


# --- recognition and verification --------------------------------------------------------------


def test_recognize_a_group_gives_one_result_per_face_largest_first(client: TestClient) -> None:
    obama = client.post(
        "/register", data={"name": unique("Obama")}, files=upload(OBAMA / "fr_obama3.jpg", "image")
    ).json()
    result = client.post("/recognize", files=upload(GROUPS / "fr_obama_and_biden.jpg", "image")).json()
    faces = result["faces"]
    assert len(faces) >= 2
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert areas == sorted(areas, reverse=True)
    assert result["status"] == faces[0]["status"] and result["distance"] == faces[0]["distance"]
    matched = [f["matched_user"]["id"] for f in faces if f["matched_user"]]
    assert matched.count(obama["user_id"]) == 1
    client.delete(f"/users/{obama['user_id']}")


def test_recognize_an_unknown_person_is_no_match(client: TestClient) -> None:
    result = client.post(
        "/recognize", files=upload(PORTRAITS / "Steve_Carell" / "openface_carell.jpg", "image")
    )
    assert result.status_code == 200
    body = result.json()
    assert body["status"] == "no_match" and body["matched_user"] is None


def test_recognize_threshold_parameter(client: TestClient) -> None:
    user_id = client.post(
        "/register", data={"name": unique("Obama")}, files=upload(OBAMA / "fr_obama.jpg", "image")
    ).json()["user_id"]
    photo = upload(OBAMA / "fr_obama1.jpg", "image")
    assert client.post("/recognize", params={"threshold": 2.0}, files=photo).json()["status"] == "match"
    zero = client.post("/recognize", params={"threshold": 0.0}, files=photo).json()
    assert zero["status"] == "no_match" and zero["threshold"] == 0.0
    assert zero["threshold_source"] == "request" and zero["fpir_target"] is None
    assert client.post("/recognize", params={"threshold": -1}, files=photo).status_code == 422
    client.delete(f"/users/{user_id}")


def test_recognize_without_a_face_is_422(client: TestClient) -> None:
    response = client.post("/recognize", files=upload(FACES / "noface" / "skimage_rocket.jpg", "image"))
    assert response.status_code == 422
    assert "no face" in response.json()["detail"]


def test_verify_same_and_different_people(client: TestClient) -> None:
    same = client.post(
        "/verify",
        files={**upload(OBAMA / "fr_obama.jpg", "image1"), **upload(OBAMA / "fr_obama1.jpg", "image2")},
    ).json()
    different = client.post(
        "/verify",
        files={**upload(OBAMA / "fr_obama.jpg", "image1"), **upload(BIDEN / "fr_biden2.jpg", "image2")},
    ).json()
    assert same["verified"] is True and different["verified"] is False
    assert same["distance"] < same["threshold"] < different["distance"]


def test_verify_without_a_face_is_422(client: TestClient) -> None:
    files = {
        **upload(OBAMA / "fr_obama.jpg", "image1"),
        **upload(FACES / "noface" / "skimage_grass.png", "image2"),
    }
    assert client.post("/verify", files=files).status_code == 422
