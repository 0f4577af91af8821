"""Composed queries (text + reference tracks - descriptions to avoid) and relevance feedback (Rocchio):
the documented arithmetic through the service, the CLI and the HTTP API."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.search import QueryWeights, SearchError, compose, parse_weights


def _unit(v):
    return v / np.linalg.norm(v)


def _exact(service, vector, k):
    snapshot = service.snapshot()
    ids = snapshot.tracks.ids
    scores = snapshot.indexes.track_vectors(ids) @ vector
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(ids[i]) for i in order]


def test_a_composed_query_ranks_by_the_documented_vector(service):
    snapshot = service.snapshot()
    reference = int(snapshot.tracks.ids[2])
    got = service.search("calm piano", k=4, like=[str(reference)], avoid=["loud drums"])
    text, avoid = service.embed_query("calm piano"), service.embed_query("loud drums")
    ref = snapshot.indexes.track_vectors([reference])[0]
    expected = _unit(_unit(text + _unit(ref) - 0.5 * _unit(avoid)))
    empty = np.zeros((0, len(text)), np.float32)
    np.testing.assert_allclose(compose(text, ref[None], avoid[None], empty, empty, QueryWeights()), expected, atol=1e-6)
    ranked = [t for t in _exact(service, expected, 5) if t != reference][:4]
    assert [r.track_id for r in got] == ranked  # the reference itself is never returned
    assert all(0.0 <= r.confidence <= 1.0 for r in got)


def test_feedback_moves_liked_up_and_drops_disliked(service):
    first = service.search("bright strings", k=8)
    liked, disliked = first[-1].track_id, first[0].track_id
    again = service.search("bright strings", k=8, liked=[liked], disliked=[disliked])
    ids = [r.track_id for r in again]
    assert disliked not in ids
    assert ids.index(liked) < len(first) - 1  # it was last; the liked track's own vector pulls it up
    weights = QueryWeights(alpha=1.0, beta=0.0, gamma=0.0)  # no feedback weight: the plain ranking
    plain = service.search("bright strings", k=7, liked=[liked], disliked=[disliked], weights=weights)
    assert [r.track_id for r in plain] == [r.track_id for r in first if r.track_id != disliked][:7]
    with pytest.raises(SearchError, match="no track 99999"):
        service.search("bright strings", liked=[99999])


def test_weights_parse_and_name_mistakes():
    assert parse_weights("like=0.5, gamma=1") == QueryWeights(like=0.5, gamma=1.0)
    assert parse_weights("") == QueryWeights()
    with pytest.raises(SearchError, match="unknown name 'colour'"):
        parse_weights("colour=1")
    with pytest.raises(SearchError, match="'x' is not a number"):
        parse_weights("like=x")


def test_the_cli_composes_and_refuses_a_missing_reference(app_library, tiny_model_dir, capsys, tmp_path):
    from app.cli import main

    options = ["--library", str(app_library.directory), "--model", str(tiny_model_dir)]
    assert main(["--json", "search", "calm piano", "--like", "3", "--not", "drums", "-k", "3", *options]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["results"]) == 3 and 3 not in [r["track_id"] for r in answer["results"]]
    assert main(["search", "calm piano", "--like", str(tmp_path / "nope.wav"), *options]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["search", "calm piano", "--weights", "like=two", *options]) == 2
    assert "not a number" in capsys.readouterr().err


def test_the_api_takes_references_avoidances_and_feedback(app_server):
    from gradio_client import Client

    url, service = app_server
    client = Client(url, verbose=False, download_files=False)
    answer = client.predict(query="calm piano", k=3, like="3", avoid="drums", api_name="/search")
    expected = service.search("calm piano", 3, like=[3], avoid=["drums"])
    assert [r["track_id"] for r in answer["results"]] == [r.track_id for r in expected]
    first = client.predict(query="bright strings", k=5, api_name="/search")["results"]
    disliked = first[0]["track_id"]
    again = client.predict(query="bright strings", k=5, liked=str(first[-1]["track_id"]), disliked=str(disliked),
                           api_name="/search")["results"]
    assert disliked not in [r["track_id"] for r in again]
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="liked: give library track ids"):
        client.predict(query="piano", liked="abc", api_name="/search")
