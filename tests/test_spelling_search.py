"""Query spelling on the demo world through the real service, CLI and HTTP API: a misspelt word is searched
as the caption word it slipped from, the answer says so, and exact searches the words as typed."""

from __future__ import annotations

import json

from app.cli import main
from app.search import SearchService, rank_tracks
from tests.helpers import needs_demo

pytestmark = needs_demo


def test_the_service_reads_a_slip_as_the_caption_word_and_exact_keeps_it(demo_library):
    setup, model = demo_library
    service = SearchService(setup.library_dir, model, model_name=setup.model)
    try:
        reading = service.read_query("fast  gitar")
        assert (reading.text, [c.to_dict() for c in reading.corrections]) == (
            "fast guitar", [{"typed": "gitar", "read_as": "guitar"}])
        assert service.read_query("fast gitar", exact=True).text == "fast gitar"
        answer = service.answer("fast gitar", 10)
        assert answer.reading == reading and answer.note() == "Searched for “fast guitar” (read “gitar” as “guitar”)."
        ids = [r.track_id for r in answer.results]
        assert ids == [r.track_id for r in service.search("fast guitar", 10)]
        as_typed = [r.track_id for r in service.search("fast gitar", 10, exact=True)]
        by_vector, _ = rank_tracks(service.snapshot(), service.embed_query("fast gitar"), 10)  # the raw words' vector
        assert as_typed == by_vector.tolist()
        assert service.status()["spelling_words"] == len(model.caption_words) > 100
    finally:
        service.close()


def test_a_query_at_the_length_limit_is_searched_even_when_its_correction_is_longer(demo_library):
    """The limit bounds what the user types: "gitar" read as "guitar" must not push it over."""
    from app.search import ServiceLimits

    setup, model = demo_library
    query = "fast gitar"
    service = SearchService(setup.library_dir, model, model_name=setup.model,
                            limits=ServiceLimits(max_query_chars=len(query)))
    try:
        answer = service.answer(query, 3, avoid=["sad pianno"[: len(query)]])
        assert answer.reading.text == "fast guitar" and [r.text for r in answer.avoided] == ["sad piano"]
        assert len(answer.results) == 3
    finally:
        service.close()


def test_descriptions_to_avoid_are_read_and_their_corrections_reported(demo_library, capsys):
    setup, model = demo_library
    service = SearchService(setup.library_dir, model, model_name=setup.model)
    try:
        answer = service.answer("fast guitar", 10, avoid=["sad pianno"])
        assert [r.text for r in answer.avoided] == ["sad piano"]
        assert [c.to_dict() for c in answer.corrections] == [{"typed": "pianno", "read_as": "piano"}]
        assert answer.note() == "Searched for “fast guitar”, not “sad piano” (read “pianno” as “piano”)."
        assert [r.track_id for r in answer.results] == [
            r.track_id for r in service.search("fast guitar", 10, avoid=["sad piano"])]
        exact = service.answer("fast guitar", 10, avoid=["sad pianno"], exact=True)
        assert ([r.text for r in exact.avoided], exact.corrections) == (["sad pianno"], ())
    finally:
        service.close()
    assert main(["--library", str(setup.library_dir), "--json", "search", "fast guitar", "--not", "sad pianno"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["searched_for"], out["avoided"]) == ("fast guitar", ["sad piano"])
    assert out["corrections"] == [{"typed": "pianno", "read_as": "piano"}]


def test_the_cli_says_what_it_searched_for(demo_library, capsys):
    setup, _ = demo_library
    library = ["--library", str(setup.library_dir)]
    assert main([*library, "--json", "search", "fast gitar", "-k", "5"]) == 0
    corrected = json.loads(capsys.readouterr().out)
    assert corrected["searched_for"] == "fast guitar"
    assert corrected["corrections"] == [{"typed": "gitar", "read_as": "guitar"}]
    assert main([*library, "--json", "search", "fast guitar", "-k", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == corrected["results"]
    assert main([*library, "--json", "search", "fast gitar", "-k", "5", "--exact"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert (exact["searched_for"], exact["corrections"]) == ("fast gitar", [])
    service = SearchService(setup.library_dir, demo_library[1], model_name=setup.model)
    try:
        as_typed, _ = rank_tracks(service.snapshot(), service.embed_query("fast gitar"), 5)
    finally:
        service.close()
    assert [r["track_id"] for r in exact["results"]] == as_typed.tolist()
    assert main([*library, "search", "fast gitar", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "Searched for “fast guitar” (read “gitar” as “guitar”)" in out and "--exact" in out
    assert main([*library, "search", "fast guitar", "-k", "3"]) == 0
    assert "Searched for" not in capsys.readouterr().out  # nothing corrected, nothing said
    assert main([*library, "status"]) == 0
    words = len(demo_library[1].caption_words)
    assert f"spelling:  misspelt query words are read as the nearest of {words} caption words" in capsys.readouterr().out


def test_the_api_corrects_unless_exact(demo_api):
    client, service = demo_api
    answer = client.predict(query="walts on the orgen", k=5, api_name="/search")
    assert answer["searched_for"] == "waltz on the organ"
    assert answer["corrections"] == [{"typed": "walts", "read_as": "waltz"}, {"typed": "orgen", "read_as": "organ"}]
    assert [r["track_id"] for r in answer["results"]] == [r.track_id for r in service.search("waltz on the organ", 5)]
    exact = client.predict(query="walts on the orgen", k=5, exact=True, api_name="/search")
    assert (exact["searched_for"], exact["corrections"]) == ("walts on the orgen", [])
    assert [r["track_id"] for r in exact["results"]] == [
        r.track_id for r in service.search("walts on the orgen", 5, exact=True)]
