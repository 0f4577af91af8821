"""The HTTP API through gradio_client, against the real app on 127.0.0.1: /search, /similar, /describe."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request

import pytest
from gradio_client import Client, handle_file

from app.search import answer_verdict
from benchmarks.audio_files import write_audio


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
    answer = client.predict(query="slow sad piano", k=3, moments=True, api_name="/search")
    json.dumps(answer)  # JSON-serialisable as is
    expected = service.search("slow sad piano", 3, moments=True)
    assert answer["verdict"] == answer_verdict(expected)
    got = answer["results"]
    assert [r["track_id"] for r in got] == [r.track_id for r in expected]
    assert {"track_id", "path", "title", "artist", "score", "confidence", "tags", "start", "end"} <= got[0].keys()
    assert [r["confidence"] for r in got] == [round(r.confidence, 4) for r in expected]
    filtered = client.predict("slow sad piano", 10, False, "artist=bob; year=2000..2009", api_name="/search")["results"]
    assert filtered and all(r["artist"] == "Bob" and 2000 <= r["year"] <= 2009 for r in filtered)


def test_search_answers_one_plain_http_post(app_server):
    """No client library and no queue: POST /gradio_api/run/search answers with the JSON itself."""
    url, service = app_server

    def post(*data):
        request = urllib.request.Request(f"{url}/gradio_api/run/search", json.dumps({"data": list(data)}).encode(),
                                         {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    status, body = post("slow sad piano", 3, False, "", "", "", "", "", "", False)
    assert status == 200
    assert [r["track_id"] for r in body["data"][0]["results"]] == [
        r.track_id for r in service.search("slow sad piano", 3)]
    status, body = post("piano", 3, False, "colour=red", "", "", "", "", "", False)
    assert status == 500 and "unknown key" in body["error"]


def test_similar_endpoint_by_track_id_and_by_upload(client, app_library, tmp_path):
    by_id = client.predict(None, "3", 4, api_name="/similar")
    assert len(by_id) == 4 and 3 not in [r["track_id"] for r in by_id]
    clip = write_audio(tmp_path / "query.wav", seconds=7.0, seed=99)  # audio that is not in the library
    by_upload = client.predict(audio=handle_file(str(clip)), k=2, api_name="/similar")
    assert len(by_upload) == 2 and all(r["path"] in app_library.paths for r in by_upload)


def test_an_upload_of_a_library_track_answers_as_that_track(client, app_library, tmp_path):
    """It used to list itself first at 1.000: the copy is recognised by its audio and left out."""
    clip = shutil.copy(app_library.paths[5], tmp_path / "query.wav")
    by_upload = client.predict(audio=handle_file(str(clip)), k=4, api_name="/similar")
    by_id = client.predict(None, "6", 4, api_name="/similar")
    assert [r["track_id"] for r in by_upload] == [r["track_id"] for r in by_id]
    assert app_library.paths[5] not in [r["path"] for r in by_upload]
    about = client.predict(audio=handle_file(str(clip)), k=3, api_name="/describe")
    assert "which is library track 6: Short Bell" in about["source"]
    assert 6 not in [r["track_id"] for r in about["similar"]]


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


def test_each_refused_api_call_logs_one_line_and_no_traceback(client, capfd, caplog):
    """Expected mistakes are the caller's, not the server's: one log line each (it printed ~20-line
    tracebacks, 8 for 8 bad calls)."""
    from gradio_client.exceptions import AppError

    capfd.readouterr()
    bad_calls = [
        dict(query="", k=3, moments=False, filters="", api_name="/search"),
        dict(query="piano", k=3, moments=False, filters="colour=red", api_name="/search"),
        dict(query="piano", k=0, moments=False, filters="", api_name="/search"),
        dict(audio=None, track_id="9999", k=3, api_name="/similar"),
        dict(audio=None, track_id="", k=3, api_name="/describe"),
    ]
    for call in bad_calls:
        with pytest.raises(AppError):
            client.predict(**call)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err, (out + err)[-3000:]
    lines = [r.getMessage() for r in caplog.records if r.name == "app.ui"]
    assert len(lines) == len(bad_calls) and all("refused:" in line and "\n" not in line for line in lines), lines
