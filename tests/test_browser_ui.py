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


def test_more_like_this_excludes_the_track(page):
    search(page, "drums")
    first = page.locator("#results .mq-card").first
    track_id = first.get_attribute("data-track-id")
    title = first.locator(".mq-title").inner_text()
    first.locator("button[data-action=similar]").click()
    page.wait_for_function("document.querySelector('#search-message').innerText.includes('sound like')")
    assert title in page.inner_text("#search-message")
    ids = page.locator("#results .mq-card").evaluate_all("cards => cards.map(c => c.dataset.trackId)")
    assert ids and track_id not in ids


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
    assert "my clip.wav" in page.inner_text("#describe-message")
    similar_titles = page.locator("#describe-similar .mq-title").all_inner_texts()
    assert similar_titles and similar_titles[0] == "Sunday Strings"  # the clip's own track comes first
    page.screenshot(path=str(shots / "describe.png"), full_page=True)


def test_library_tab_and_helpful_messages(page, app_library, shots):
    search(page, "piano")
    page.click("text=Options and filters")
    page.get_by_label("Artist contains").fill("nobody by that name")
    page.click("#search-button")
    page.wait_for_function("document.querySelector('#search-message').innerText.includes('No tracks match')")
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
    similar.locator("button[data-action=similar]").click()  # back on the Search tab, tracks like that one
    page.wait_for_function("document.querySelector('#search-message')?.innerText.includes('sound like')")
    assert similar_title in page.inner_text("#search-message")
    assert page.locator("#results .mq-card").first.is_visible()
