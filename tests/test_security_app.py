"""The web app serves indexed tracks and nothing else: crafted paths, traversal, non-track files inside the
library, forged upload references, oversized uploads, and --auth."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse

import numpy as np
import pytest
import soundfile as sf


def get(url: str, raw_path: str, headers: dict | None = None) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (no client-side '..' normalisation)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", raw_path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_binds_loopback_only(app_server):
    assert urllib.parse.urlsplit(app_server[0]).hostname == "127.0.0.1"


def test_an_indexed_track_is_served_with_ranges(app_server, app_library):
    url = app_server[0]
    status, body = get(url, "/gradio_api/file=" + urllib.parse.quote(app_library.paths[0]))
    assert status == 200 and body[:4] == b"RIFF"
    status, body = get(url, "/gradio_api/file=" + urllib.parse.quote(app_library.paths[0]), {"Range": "bytes=0-99"})
    assert status == 206 and len(body) == 100


@pytest.mark.parametrize("crafted", [
    "/etc/passwd",
    "{root}/../../../../etc/passwd",
    "{root}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "{root}/secret.txt",  # inside the library folder, but not an indexed track
    "{root}/not-indexed.wav",  # audio inside the library folder that was never indexed
    "{library}/catalog.sqlite",
])
@pytest.mark.parametrize("route", ["/gradio_api/file=", "/gradio_api/file/"])
def test_crafted_paths_are_refused(app_server, app_library, crafted, route):
    root = app_library.root
    (root / "secret.txt").write_text("the user's private notes")
    sf.write(root / "not-indexed.wav", np.zeros(2400, np.float32), 24000)
    path = crafted.format(root=urllib.parse.quote(str(root)), library=urllib.parse.quote(str(app_library.directory)))
    status, body = get(app_server[0], route + path)
    assert status in (403, 404), (status, body[:200])
    assert b"root:" not in body and b"private notes" not in body and b"SQLite" not in body


def test_a_forged_upload_reference_is_refused(app_server):
    """An API call naming a server file as if it had been uploaded must not read it."""
    url = app_server[0]
    forged = {"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}, "orig_name": "passwd"}
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("POST", "/gradio_api/call/describe", body=json.dumps({"data": [forged, "", 3]}),
                 headers={"Content-Type": "application/json"})
    event_id = json.loads(conn.getresponse().read())["event_id"]
    conn.close()
    status, stream = get(url, f"/gradio_api/call/describe/{event_id}")
    text = stream.decode()
    assert "event: error" in text and "event: complete" not in text
    assert "root:" not in text


def test_oversized_uploads_are_refused(app_server, tmp_path):
    import httpx

    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(24000 * 60, np.float32), 24000, subtype="FLOAT")  # 5.8 MB > the 2 MB limit
    with big.open("rb") as handle:
        response = httpx.post(app_server[0] + "/gradio_api/upload", files={"files": ("big.wav", handle)}, timeout=60)
    assert response.status_code == 413
    assert "size" in response.text.lower()


def test_auth_protects_page_api_and_files(app_library, tiny_model):
    import httpx

    from app.search import SearchService
    from app.ui import AppInfo, launch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = SearchService(app_library.directory, tiny_model)
    demo, url = launch(service, AppInfo("tiny"), port=port, auth=("ada", "s3cret"), block=False, quiet=True)
    try:
        url = url.rstrip("/")
        track = "/gradio_api/file=" + urllib.parse.quote(app_library.paths[0])
        assert httpx.get(url + "/config").status_code == 401
        assert httpx.get(url + track).status_code == 401
        with httpx.Client(base_url=url) as session:
            assert session.post("/login", data={"username": "ada", "password": "wrong"}).status_code == 400
            assert session.post("/login", data={"username": "ada", "password": "s3cret"}).status_code == 200
            assert session.get("/config").status_code == 200
            assert session.get(track).status_code == 200
    finally:
        demo.close()
        service.close()


def test_auth_option_is_validated():
    from app.commands import parse_auth

    assert parse_auth("ada:pa:ss") == ("ada", "pa:ss")
    for bad in ("ada", ":pw", "ada:"):
        with pytest.raises(ValueError, match="USER:PASSWORD"):
            parse_auth(bad)


def test_tracks_of_a_newly_indexed_folder_become_playable_without_restart(fresh_app_library, tiny_model, tmp_path):
    from app.search import SearchService
    from app.ui import AppInfo, launch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = SearchService(fresh_app_library.directory, tiny_model, reload_check_seconds=0.0)
    demo, url = launch(service, AppInfo("tiny"), port=port, block=False, quiet=True)
    try:
        url = url.rstrip("/")
        new_folder = tmp_path / "new music"
        new_folder.mkdir()
        sibling = new_folder / "cover.jpg"
        sibling.write_bytes(b"\xff\xd8 not really a jpeg")
        new_track = fresh_app_library.add_file(new_folder, seed=42, seconds=7.0, title="Fresh")
        route = "/gradio_api/file=" + urllib.parse.quote(str(new_track))
        assert get(url, route)[0] == 403  # not in the generation being served yet
        assert any(r.path == str(new_track) for r in service.search("fresh", k=20))  # the next query reloads
        assert get(url, route)[0] == 200
        assert get(url, "/gradio_api/file=" + urllib.parse.quote(str(sibling)))[0] == 403
    finally:
        demo.close()
        service.close()
