"""End to end in a real Chromium (Debian's, driven by Playwright): the page a listener uses.

Screenshots land in a temporary artifacts folder (printed), or in $MUQSEARCH_SCREENSHOTS when set.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmarks.audio_files import write_audio

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing: apt-get install chromium "
                       "(scripts/install.sh --dev does it)"),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, app_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(app_server[0] + "/")
    page.wait_for_selector("#query textarea")
    yield page
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("MUQSEARCH_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


def search(page, text: str, *, expect: str | None = None):
    """Run a search and wait for its answer: result cards, or a message containing ``expect``."""
    page.fill("#query textarea", text)
    page.click("#search-button")
    if expect is None:
        page.locator("#results .mq-card").first.wait_for()
    else:  # (while the query runs, the message area shows Gradio's timer: wait for the real text)
        page.wait_for_function(f"document.querySelector('#search-message')?.innerText.includes({expect!r})")


def test_search_shows_cards_with_playable_audio_at_the_moment(page, app_server, app_library, shots):
    search(page, "slow sad piano")
    cards = page.locator("#results .mq-card")
    assert cards.count() == len(app_library.paths)  # 8 tracks, 10 asked for
    first = cards.first
    assert first.locator(".mq-title").inner_text().strip()
    assert "best moment" in first.inner_text()
    # the player loads real audio from the library and stands at the moment's start
    page.evaluate("document.querySelector('#results audio').play()")
    page.wait_for_function("(() => { const a = document.querySelector('#results audio');"
                           " return a.readyState >= 2 && !a.error && a.duration > 0; })()")
    src = first.locator("audio").get_attribute("src")
    start = float(src.rsplit("#t=", 1)[1])
    current = page.evaluate("document.querySelector('#results audio').currentTime")
    assert start <= current < start + 5
    page.evaluate("document.querySelector('#results audio').pause()")
    page.screenshot(path=str(shots / "search.png"), full_page=True)


def test_more_like_this_refines_the_query_and_excludes_the_track(page):
    search(page, "drums")
    first = page.locator("#results .mq-card").first
    track_id = first.get_attribute("data-track-id")
    title = first.locator(".mq-title").inner_text()
    first.locator("button[data-action=similar]").click()
    page.wait_for_function("document.querySelector('#search-message').innerText.includes('more like')")
    message = page.inner_text("#search-message")
    assert title in message and "“drums”" in message  # the query stays: the track is added to it
    ids = page.locator("#results .mq-card").evaluate_all("cards => cards.map(c => c.dataset.trackId)")
    assert ids and track_id not in ids


def test_but_not_subtracts_a_description(page, app_server):
    page.click("text=Options and filters")
    page.get_by_label("But not (descriptions, separated by ;)").fill("drums")
    search(page, "bright strings", expect="not “drums”")
    ids = page.locator("#results .mq-card").evaluate_all("cards => cards.map(c => c.dataset.trackId)")
    assert ids == [str(r.track_id) for r in app_server[1].search("bright strings", 10, avoid=["drums"])]


def test_thumbs_re_rank_the_current_search(page, app_server):
    search(page, "bright strings")
    cards = page.locator("#results .mq-card")
    disliked = cards.first.get_attribute("data-track-id")
    cards.first.locator("button[data-action=disliked]").click()
    page.wait_for_function("document.querySelector('#search-message').innerText.includes('1 disliked')")
    ids = page.locator("#results .mq-card").evaluate_all("cards => cards.map(c => c.dataset.trackId)")
    assert ids and disliked not in ids
    last = page.locator("#results .mq-card").last
    liked = last.get_attribute("data-track-id")
    last.locator("button[data-action=liked]").click()
    page.wait_for_function("document.querySelector('#search-message').innerText.includes('1 liked')")
    ids_after = page.locator("#results .mq-card").evaluate_all("cards => cards.map(c => c.dataset.trackId)")
    expected = app_server[1].search("bright strings", 10, liked=[int(liked)], disliked=[int(disliked)])
    assert ids_after == [str(r.track_id) for r in expected]  # the service's Rocchio re-ranking, on the page
    assert "“bright strings”" in page.inner_text("#search-message")


def test_export_m3u_downloads_the_result_list(page):
    search(page, "bright strings")
    paths = [p.strip() for p in page.locator("#results .mq-card audio").evaluate_all(
        "els => els.map(e => decodeURIComponent(e.getAttribute('src').split('file=')[1].split('#')[0]))")]
    with page.expect_download() as download:
        page.click("#export-m3u")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    assert [line for line in lines if not line.startswith("#")] == paths


def test_describe_an_uploaded_clip_shows_tags(page, app_library, shots, tmp_path):
    clip = shutil.copy(app_library.paths[2], tmp_path / "my clip.wav")
    page.get_by_role("tab", name="Describe").click()
    page.set_input_files("#describe-audio input[type=file]", clip)
    page.wait_for_selector("#describe-audio audio, #describe-audio .waveform-container, #describe-audio button",
                           state="attached")
    page.click("#describe-button")
    page.wait_for_selector("#describe-tags .mq-bar-row")
    assert page.locator("#describe-tags .mq-bar-row").count() == 10
    message = page.inner_text("#describe-message")
    assert "the uploaded clip my clip.wav" in message
    # the clip is a library track: said so, and it does not list itself as most similar at 1.000
    assert "which is library track 3: Sunday Strings" in message
    similar_titles = page.locator("#describe-similar .mq-title").all_inner_texts()
    assert similar_titles and "Sunday Strings" not in similar_titles
    page.screenshot(path=str(shots / "describe.png"), full_page=True)


def test_describe_uses_the_source_chosen_last(page, app_library, tmp_path):
    """An upload and a library track were both kept and the upload silently won: choosing one now
    clears the other, and the answer says which was described."""
    clip = write_audio(tmp_path / "new tune.wav", seconds=5.0, seed=77)  # not in the library
    page.get_by_role("tab", name="Describe").click()
    page.set_input_files("#describe-audio input[type=file]", str(clip))
    page.locator("#describe-audio audio[controls]").wait_for(state="attached")
    page.click("#describe-track input")
    page.keyboard.type("Waltz")
    page.locator("ul[role=listbox] li", has_text="Waltz").first.click()
    page.locator("#describe-audio audio[controls]").wait_for(state="detached")  # the upload went
    page.click("#describe-button")
    page.wait_for_function("document.querySelector('#describe-message')?.innerText.includes('Best matches')")
    assert "library track 5: Waltz" in page.inner_text("#describe-message")
    page.set_input_files("#describe-audio input[type=file]", str(clip))  # and back: the track choice goes
    page.locator("#describe-audio audio[controls]").wait_for(state="attached")
    page.wait_for_function("document.querySelector('#describe-track input').value === ''")
    page.click("#describe-button")
    page.wait_for_function("document.querySelector('#describe-message')?.innerText.includes('new tune.wav')")
    assert "the uploaded clip new tune.wav." in page.inner_text("#describe-message")

def test_opening_the_filters_untouched_does_not_filter(page, app_library):
    """The number boxes show 0 when the panel opens: that used to filter every track out."""
    page.click("text=Options and filters")
    page.get_by_label("Year from").wait_for()
    search(page, "slow sad piano")
    assert page.locator("#results .mq-card").count() == len(app_library.paths)
    assert "with" not in page.inner_text("#search-message")  # no filter in force


def test_filters_sharing_an_artist_and_album_say_them_once(page):
    page.click("text=Options and filters")
    page.get_by_label("Artist contains").fill("Ada")
    page.get_by_label("Album contains").fill("First")
    search(page, "piano")
    assert page.locator("#results .mq-card").count() == 2  # Rain Piano and Night Drive
    assert page.inner_text("#results").count("Ada · First") == 1
    assert all("Ada" not in facts for facts in page.locator("#results .mq-card .mq-facts").all_inner_texts())


def test_an_over_long_query_says_it_was_cut(page):
    words = ("slow sad piano with soft strings and rain " * 20).strip()  # 839 characters
    search(page, words)
    message = page.inner_text("#search-message")
    assert "839 characters long; only its first" in message and "the limit is 500" in message


def test_library_tab_and_helpful_messages(page, app_library, shots):
    search(page, "piano")
    page.click("text=Options and filters")
    page.get_by_label("Artist contains").fill("nobody by that name")
    page.click("#search-button")
    page.wait_for_function("document.querySelector('#search-message').innerText.includes('No tracks match')")
    assert "no track has artist=nobody by that name" in page.inner_text("#search-message")
    assert page.locator("#results .mq-card").count() == 0
    page.get_by_role("tab", name="Library").click()
    summary = page.locator("#library-summary")
    summary.wait_for()
    assert f"Tracks: {len(app_library.paths)}" in summary.inner_text().replace("**", "")
    page.screenshot(path=str(shots / "library.png"), full_page=True)


def test_oversized_upload_gets_a_size_message(page, tmp_path):
    big = tmp_path / "big.wav"
    sf.write(big, np.zeros(24000 * 60, np.float32), 24000, subtype="FLOAT")  # 5.8 MB, the test limit is 2 MB
    page.get_by_role("tab", name="Describe").click()
    page.set_input_files("#describe-audio input[type=file]", big)
    page.get_by_text("exceed the maximum allowed size").wait_for()
    assert "Traceback" not in page.inner_text("body")


@pytest.fixture(scope="module")
def empty_server(tiny_model, tmp_path_factory):
    from app.search import SearchService
    from app.ui import AppInfo, launch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    service = SearchService(tmp_path_factory.mktemp("empty") / "library", tiny_model)
    demo, url = launch(service, AppInfo("tiny"), port=port, block=False, quiet=True)
    yield url
    demo.close()


def test_an_empty_library_explains_how_to_index(browser, empty_server):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(120_000)
    try:
        page.goto(empty_server)
        search(page, "slow sad piano", expect="no indexed tracks yet")
        assert "muqsearch index" in page.inner_text("#search-message")
        page.get_by_role("tab", name="Library").click()
        page.get_by_text("Tracks: 0").wait_for()
    finally:
        context.close()


def test_card_buttons_move_between_tabs(page):
    search(page, "strings")
    first = page.locator("#results .mq-card").first
    title = first.locator(".mq-title").inner_text()
    first.locator("button[data-action=describe]").click()
    page.locator("#describe-tags .mq-bar-row").first.wait_for()
    assert title in page.inner_text("#describe-message")
    similar = page.locator("#describe-similar .mq-card").first
    similar_title = similar.locator(".mq-title").inner_text()
    similar.locator("button[data-action=similar]").click()  # back on the Search tab: "strings", more like it
    page.wait_for_function("document.querySelector('#search-message')?.innerText.includes('more like')")
    assert similar_title in page.inner_text("#search-message")
    assert page.locator("#results .mq-card").first.is_visible()


@pytest.fixture(scope="module")
def domain_server(app_library, tiny_model_dir, tmp_path_factory):
    """The app library served as `muqsearch serve --library L --model M` would, with a model that
    declares (like the demo model) that it only knows the demo world: a non-demo page."""
    import json

    from app.choose import Setup
    from app.search import SearchService
    from app.ui import app_info, launch
    from muq_model import MuQMuLan

    model_dir = tmp_path_factory.mktemp("domain") / "demo-like-model"
    shutil.copytree(tiny_model_dir, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "domain": "MuQ Search demo world"}))
    model = MuQMuLan.from_pretrained(model_dir).eval()  # the tiny model's weights: it may read the library
    setup = Setup(app_library.directory, str(model_dir))
    service = SearchService(setup.library_dir, model, model_name=setup.model)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo, url = launch(service, app_info(setup), port=port, block=False, quiet=True)
    yield url, str(model_dir)
    demo.close()
    service.close()


def test_a_model_used_outside_its_domain_gets_a_banner_and_the_model_is_named_once(browser, domain_server):
    url, model_dir = domain_server
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(120_000)
    try:
        page.goto(url)
        banner = page.locator("#domain-warning")
        banner.get_by_text("Wrong model for this music").wait_for()
        text = banner.inner_text()
        assert "only knows the MuQ Search demo world, but 8 of its 8 tracks are other music" in text
        assert "--model OpenMuQ/MuQ-MuLan-large" in text
        assert page.inner_text("body").count(model_dir) == 1  # the title names the model; the notice does not
        page.get_by_role("tab", name="Library").click()
        assert "only knows the MuQ Search demo world" in page.inner_text("#library-summary")
    finally:
        context.close()
