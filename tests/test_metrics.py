"""The Prometheus metrics at `/metrics`: requests, inference stages, the gallery, bounded labels."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.data import FACES
from tests.support import gallery_size, scoped_headers, upload

OBAMA = FACES / "portraits" / "Barack_Obama"


def test_metrics_report_requests_stages_and_gallery_size(secured: TestClient) -> None:
    recognized = secured.post(
        "/recognize", headers=scoped_headers("recognize"), files=upload(OBAMA / "fr_obama_small.jpg", "image")
    )
    assert recognized.status_code == 200
    assert secured.get("/metrics").status_code == 401
    response = secured.get("/metrics", headers=scoped_headers("detect"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = dict(
        line.rsplit(" ", 1) for line in response.text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples['facegate_http_requests_total{method="POST",route="/recognize",status="200"}']) >= 1
    assert (
        'facegate_http_request_duration_seconds_bucket{le="+Inf",method="POST",route="/recognize",status="200"}'
        in samples
    )
    for stage in ("decode", "detect", "embed", "search"):
        assert float(samples[f'facegate_inference_stage_seconds_count{{stage="{stage}"}}']) >= 1
    users, faces = gallery_size(secured, "admin")
    assert (
        float(samples["facegate_gallery_users"]) == users
        and float(samples["facegate_gallery_faces"]) == faces
    )
    assert samples["facegate_database_up"] == "1.0"
    assert not any("/users/1" in key or "nowhere" in key for key in samples)  # templates only


def test_unmatched_paths_share_one_metrics_label(secured: TestClient) -> None:
    secured.get("/some/random/path-123")
    secured.request("BREW", "/coffee-456")
    text = secured.get("/metrics", headers=scoped_headers("detect")).text
    assert 'method="GET",route="unmatched",status="404"' in text
    assert 'method="other",route="unmatched",status="404"' in text
    assert "path-123" not in text and "BREW" not in text
