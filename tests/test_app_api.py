"""The HTTP API through gradio_client, against the real app on 127.0.0.1: /search, /similar, /describe."""

from __future__ import annotations

import json
import shutil

import pytest
from gradio_client import Client, handle_file


@pytest.fixture(scope="module")
def client(app_server):
    # download_files=False: gradio_client would otherwise take every dict with a "path" key for a file
    # to download and replace the result with a local copy of the track
    return Client(app_server[0] + "/", verbose=False, download_files=False)


def test_api_lists_exactly_the_three_public_endpoints(client):
    assert set(client.view_api(return_format="dict", print_info=False)["named_endpoints"]) == {
        "/search", "/similar", "/describe"}


def test_search_endpoint_matches_the_service(client, app_server):
    service = app_server[1]
    got = client.predict(query="slow sad piano", k=3, moments=True, api_name="/search")
    json.dumps(got)  # JSON-serialisable as is
    expected = [r.to_dict() for r in service.search("slow sad piano", 3, moments=True)]
    assert [r["track_id"] for r in got] == [r["track_id"] for r in expected]
    assert {"track_id", "path", "title", "artist", "score", "tags", "start", "end"} <= got[0].keys()
    filtered = client.predict("slow sad piano", 10, False, "artist=bob; year=2000..2009", api_name="/search")
    assert filtered and all(r["artist"] == "Bob" and 2000 <= r["year"] <= 2009 for r in filtered)


def test_similar_endpoint_by_track_id_and_by_upload(client, app_library, tmp_path):
    by_id = client.predict(None, "3", 4, api_name="/similar")
    assert len(by_id) == 4 and 3 not in [r["track_id"] for r in by_id]
    clip = shutil.copy(app_library.paths[5], tmp_path / "query.wav")
    by_upload = client.predict(audio=handle_file(str(clip)), k=2, api_name="/similar")
    assert by_upload[0]["path"] == app_library.paths[5] and by_upload[0]["score"] > 0.999


def test_describe_endpoint(client, app_library):
    out = client.predict(None, "1", 5, api_name="/describe")
    assert len(out["tags"]) == 5 and all({"text", "score", "category"} <= t.keys() for t in out["tags"])
    assert out["similar"] and 1 not in [r["track_id"] for r in out["similar"]]


def test_api_errors_are_messages(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="limit is 500"):
        client.predict("x" * 600, 3, False, "", api_name="/search")
    with pytest.raises(AppError, match="unknown key"):
        client.predict("piano", 3, False, "colour=red", api_name="/search")
    with pytest.raises(AppError, match="track id"):
        client.predict(None, "../../etc/passwd", 3, api_name="/similar")
