"""The Gradio web UI and HTTP API over one :class:`app.search.SearchService`.

Tabs: Search (text -> tracks, moments, filters, "more like this"), Describe (a clip or a library track
-> tags, descriptions, similar tracks) and Library (counts, errors, model, index). Every result list can
be exported as M3U, CSV or JSON. The API endpoints ``/search``, ``/similar`` and ``/describe`` return
the same JSON as ``muqsearch ... --json``.

Result cards are plain HTML built here (every catalog string escaped) with a native ``<audio>`` whose
URL carries a media fragment (``#t=START``), so playback starts at the matching moment without copying
the file. Audio is served by Gradio's file route, restricted twice: ``allowed_paths`` holds only the
library roots, and :class:`LibraryFileGuard` lets through only files that are indexed tracks.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import html
import logging
import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse

from app import export
from app.filters import FilterError, Filters
from app.search import (
    VERDICT_WORDS,
    Description,
    Result,
    SearchError,
    SearchService,
    parse_weights,
)

log = logging.getLogger(__name__)

FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
MAX_TRACK_CHOICES = 5000
DEFAULT_MAX_UPLOAD_BYTES = 100 * 2**20
DEFAULT_EXAMPLES = (
    "melancholic solo piano for a rainy night",
    "fast energetic drums with a driving bass",
    "calm ambient pads, slow and dreamy",
    "bright acoustic guitar, happy and upbeat",
)


@dataclass(frozen=True)
class AppInfo:
    """What the page says about itself: which model runs, and whether it is the bundled demo world."""

    model_label: str
    notice: str = ""  # markdown shown under the title (the demo model's limits, how to switch)
    examples: tuple[str, ...] = DEFAULT_EXAMPLES


def app_info(setup) -> AppInfo:
    """What the page says for an :class:`app.choose.Setup`: the demo world names itself and its limits."""
    from app.choose import notice

    label = "the bundled demo model" if setup.demo else setup.model
    examples = setup.demo.examples if setup.demo and setup.demo.examples else DEFAULT_EXAMPLES
    return AppInfo(model_label=label, notice=notice(setup, setup.model), examples=examples)


# --------------------------------------------------------------------------------------------------
# Security: only indexed tracks leave the library


class LibraryFileGuard:
    """ASGI middleware in front of Gradio's file routes: a path inside a library root is served only
    when it is an indexed track. Everything else inside the roots (covers, notes, the catalog) gets 403;
    paths outside the roots are left to Gradio, which serves only its own upload and cache folders."""

    def __init__(self, app, service: SearchService):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            path = scope.get("path", "")
            for prefix in FILE_ROUTES:
                if path.startswith(prefix):
                    requested = path[len(prefix):]
                    if self.refuses(requested):
                        await PlainTextResponse("File not allowed", status_code=403)(scope, receive, send)
                        return
        await self.app(scope, receive, send)

    def refuses(self, requested: str) -> bool:
        if "\x00" in requested:
            return True
        # both spellings: the path as written (what a symlink inside a root looks like) and as resolved
        candidates = {os.path.abspath(requested), os.path.realpath(os.path.abspath(requested))}
        folders = [*self.service.roots(), str(self.service.library_dir)]
        in_library = any(_is_within(path, folder) for path in candidates for folder in folders)
        return in_library and self.service.library_file(requested) is None


def _is_within(path: str, root: str) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep)
               for r in {os.path.abspath(root), os.path.realpath(root)})


def audio_url(result: Result) -> str:
    """Gradio's file route for the track, with a media fragment that starts playback at the moment."""
    url = "gradio_api/file=" + urllib.parse.quote(result.path)
    if result.moment is not None:
        url += f"#t={result.moment.start:g}"
    return url


# --------------------------------------------------------------------------------------------------
# HTML


def _clock(seconds: float | None, *, tenths: bool = False) -> str:
    """m:ss; with ``tenths`` also m:ss.t when it matters (a wrapped last clip may end 0.4 s after its start)."""
    if seconds is None:
        return "?"
    units = int(round(seconds * 10)) if tenths else int(round(seconds)) * 10
    minutes, rest = divmod(units, 600)
    return f"{minutes}:{rest // 10:02d}" + (f".{rest % 10}" if rest % 10 else "")


def results_html(results: list[Result]) -> str:
    """Result cards; an artist and album shared by every card (a whole album, the demo world) are said
    once above them, not on each card."""
    e = html.escape
    shared = [x for x in ("artist", "album") if len(results) > 1 and len({getattr(r, x) for r in results}) == 1]
    heading = " · ".join(e(getattr(results[0], x)) for x in shared if getattr(results[0], x))
    cards = []
    for rank, r in enumerate(results, 1):
        facts = " · ".join(e(str(getattr(r, x))) for x in ("artist", "album", "year")
                           if getattr(r, x) and x not in shared)
        scores = dict(r.tag_scores)  # auto-tags show their score; a file's own genres have none
        tags = "".join(f'<span class="mq-tag">{e(t)}'
                       + (f' <span class="mq-tag-score">{scores[t]:.2f}</span>' if t in scores else "")
                       + '</span>' for t in r.tags[:8])
        confidence = ("" if r.confidence is None else
                      f'<div class="mq-confidence">confidence {r.confidence:.2f}</div>')
        moment = ""
        if r.moment is not None:
            moment = (f'<div class="mq-moment">best moment {_clock(r.moment.start, tenths=True)}–{_clock(r.moment.end, tenths=True)}'
                      f' (score {r.moment.score:.3f})</div>')
        cards.append(
            f'<div class="mq-card" data-track-id="{r.track_id}">'
            f'<div class="mq-head"><span class="mq-rank">{rank}</span>'
            f'<span class="mq-title">{e(r.title)}</span><span class="mq-score">{r.score:.3f}</span></div>'
            f'{confidence}'
            f'<div class="mq-facts">{facts + " · " if facts else ""}{_clock(r.duration)}</div>'
            f'{moment}<div class="mq-tags">{tags}</div>'
            f'<audio controls preload="metadata" src="{e(audio_url(r))}"></audio>'
            f'<div class="mq-actions">'
            f'<button class="mq-button" data-action="similar" data-track-id="{r.track_id}">More like this</button>'
            f'<button class="mq-button" data-action="describe" data-track-id="{r.track_id}">Describe</button>'
            f'<button class="mq-button" data-action="liked" data-track-id="{r.track_id}" title="more like this one">Good</button>'
            f'<button class="mq-button" data-action="disliked" data-track-id="{r.track_id}" title="fewer like this one">Bad</button>'
            f'</div></div>'
        )
    shared_line = f'<div class="mq-facts mq-shared">All tracks: {heading}</div>' if heading else ""
    return f'{shared_line}<div class="mq-results">{"".join(cards)}</div>'


def bars_html(matches, *, title: str) -> str:
    """A horizontal bar chart of text matches (bar length relative to the best score shown)."""
    if not matches:
        return ""
    top = max(max(m.score for m in matches), 1e-9)
    rows = []
    for m in matches:
        width = max(2.0, 100.0 * max(m.score, 0.0) / top)
        label = html.escape(m.text) + (f' <span class="mq-cat">{html.escape(m.category)}</span>' if m.category else "")
        rows.append(
            f'<div class="mq-bar-row"><div class="mq-bar-label">{label}</div>'
            f'<div class="mq-bar-track"><div class="mq-bar" style="width:{width:.1f}%"></div></div>'
            f'<div class="mq-bar-score">{m.score:.3f}</div></div>'
        )
    return f'<div class="mq-bars"><h4>{html.escape(title)}</h4>{"".join(rows)}</div>'


CSS = """
.mq-results { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 12px; }
.mq-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 10px 12px;
           background: var(--block-background-fill); }
.mq-head { display: flex; gap: 8px; align-items: baseline; }
.mq-rank { color: var(--body-text-color-subdued); font-size: 0.85em; }
.mq-title { font-weight: 600; flex: 1; }
.mq-score { font-variant-numeric: tabular-nums; color: var(--color-accent); }
.mq-facts, .mq-moment, .mq-confidence { font-size: 0.85em; color: var(--body-text-color-subdued); }
.mq-tag { display: inline-block; font-size: 0.75em; padding: 1px 6px; margin: 2px 3px 2px 0;
          border-radius: 8px; background: var(--background-fill-secondary); }
.mq-tag-score { color: var(--body-text-color-subdued); font-variant-numeric: tabular-nums; }
.mq-card audio { width: 100%; margin-top: 6px; }
.mq-actions { display: flex; gap: 6px; margin-top: 4px; }
.mq-button { font-size: 0.8em; padding: 2px 10px; border-radius: 6px; cursor: pointer;
             border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill); }
.mq-bar-row { display: grid; grid-template-columns: 16em 1fr 4em; gap: 8px; align-items: center; margin: 2px 0; }
.mq-bar-track { background: var(--background-fill-secondary); border-radius: 4px; height: 12px; }
.mq-bar { background: var(--color-accent); border-radius: 4px; height: 12px; }
.mq-bar-score { font-variant-numeric: tabular-nums; font-size: 0.85em; }
.mq-cat { font-size: 0.75em; color: var(--body-text-color-subdued); }
"""

CARD_EVENTS_JS = """
element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-action]');
  if (button) trigger('click', {action: button.dataset.action, track_id: button.dataset.trackId});
});
"""


# --------------------------------------------------------------------------------------------------
# Handlers: every one returns a message instead of raising into the page


def _message(exc: Exception) -> str:
    if isinstance(exc, (SearchError, FilterError)):
        return f"⚠️ {exc}"
    log.exception("unexpected error in the web UI")
    return f"⚠️ Something went wrong ({type(exc).__name__}: {exc}). The server log has the details."


def _filters(artist, album, year_min, year_max, duration_min, duration_max, tags) -> Filters:
    def number(value):  # an untouched number box holds 0 (or nothing): no bound on that side
        return None if value in (None, "") or float(value) == 0 else value

    duration_min, duration_max = number(duration_min), number(duration_max)
    filters = Filters(
        artist=(artist or "").strip() or None,
        album=(album or "").strip() or None,
        year_min=None if number(year_min) is None else int(year_min),
        year_max=None if number(year_max) is None else int(year_max),
        duration_min=None if duration_min is None else float(duration_min),
        duration_max=None if duration_max is None else float(duration_max),
        tags=tuple(tags or ()),
    )
    if filters.year_min is not None and filters.year_max is not None and filters.year_min > filters.year_max:
        raise FilterError("the year range is empty: 'from' is after 'to'")
    return filters


def _cut_query(query, limit: int) -> tuple[str, str]:
    """(the query, at most ``limit`` characters, cut at a word; a sentence saying so when it was cut)."""
    text = " ".join(str(query or "").split())
    if len(text) <= limit:
        return text, ""
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut, (f" Your description was {len(text)} characters long; only its first {len(cut)} were "
                 f"searched (the limit is {limit}).")


def verdict_headline(verdict: str) -> str:
    """What the page says first about a text query's answer: nothing when it is strong."""
    name, meaning = VERDICT_WORDS[verdict]
    return f"**{name.capitalize()}:** {meaning}. " if meaning else ""


def _semicolon_list(text: str | None) -> list[str]:
    """The non-empty ';'-separated entries of a text: a "But not" box, the API's avoid and filters."""
    return [t.strip() for t in (text or "").split(";") if t.strip()]


@dataclass(frozen=True)
class Session:
    """One search on the page and how the user refined it: reference tracks ("More like this") and
    thumbs up/down, all fed to ``SearchService.search`` (app.search.compose documents the arithmetic)."""

    query: str
    filters: Filters
    avoid: tuple[str, ...] = ()  # descriptions to stay away from
    like: tuple[int, ...] = ()
    liked: tuple[int, ...] = ()
    disliked: tuple[int, ...] = ()
    exact: bool = False  # search the words as typed: no spelling correction

    def add(self, field_name: str, track_id: int) -> Session:
        """This session with the track added to one list (and taken out of the opposite thumb)."""
        other = {"liked": "disliked", "disliked": "liked"}.get(field_name)
        changes = {field_name: tuple(dict.fromkeys((*getattr(self, field_name), track_id)))}
        if other:
            changes[other] = tuple(t for t in getattr(self, other) if t != track_id)
        return dataclasses.replace(self, **changes)


@dataclass
class Exports:
    """Files written for the download buttons of a result list; only the newest ``keep`` lists stay on
    disk (Gradio serves its own cached copy of each, which it expires itself)."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="muqsearch-export-")))
    keep: int = 64
    _folders: collections.deque = field(default_factory=collections.deque)

    def write(self, results: list[Result], stem: str) -> list[str | None]:
        if not results:
            return [None, None, None]
        folder = Path(tempfile.mkdtemp(dir=self.directory))
        self._folders.append(folder)
        while len(self._folders) > self.keep:
            shutil.rmtree(self._folders.popleft(), ignore_errors=True)
        return [str(export.write(results, folder / f"{stem}.{fmt}")) for fmt in export.FORMATS]


# --------------------------------------------------------------------------------------------------
# The app


class Page:
    """The page's event handlers, one named method per thing a user does (wired up in :func:`build_app`)."""

    def __init__(self, service: SearchService):
        self.service = service
        self.exports = Exports()

    def answer(self, results: list[Result], headline: str, stem: str):
        files = self.exports.write(results, stem)
        buttons = [gr.DownloadButton(value=f, visible=f is not None) for f in files]
        return (headline, results_html(results), *buttons)

    def run_search(self, query, k, moments, artist, album, year_min, year_max, duration_min, duration_max, tags,
                   avoid="", exact=False):
        """A new search: its answer, and a fresh session (the query that "More like this" and the thumbs refine)."""
        query, cut = _cut_query(query, self.service.limits.max_query_chars)
        try:
            filters = _filters(artist, album, year_min, year_max, duration_min, duration_max, tags)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
            return (*self.answer([], _message(exc), "search"), None)
        session = Session(query, filters, tuple(_semicolon_list(avoid)), exact=bool(exact))
        return (*self.refined(session, k, moments, cut), session)

    def refined(self, session: Session, k, moments, cut: str = ""):
        """The answer to the session's query with its references and feedback (app.search.compose)."""
        try:
            answer = self.service.answer(session.query, int(k), filters=session.filters, moments=bool(moments),
                                         like=session.like, avoid=session.avoid, liked=session.liked,
                                         disliked=session.disliked, exact=session.exact)
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
            return self.answer([], _message(exc), "search")
        results = answer.results
        if not results:
            return self.answer([], html.escape(self.service.no_match_message(session.filters)) + cut, "search")
        where = f" with {html.escape(session.filters.describe())}" if session.filters.active else ""
        headline = f"{len(results)} tracks for “{html.escape(session.query)}”{where}{self.refinements(session)}.{cut}"
        spelling = (f"{html.escape(answer.note())} Tick “Exact wording” to search the words as typed. "
                    if answer.corrections else "")
        return self.answer(results, verdict_headline(answer.verdict) + spelling + headline, "search")

    def refinements(self, session: Session) -> str:
        snapshot = self.service.snapshot()
        titles = [f"“{html.escape(snapshot.tracks.titles[snapshot.row_of[t]])}”" for t in session.like
                  if t in snapshot.row_of]
        parts = ([f"more like {', '.join(titles)}"] if titles else []) + [
            f"not {', '.join(f'“{html.escape(t)}”' for t in session.avoid)}"] * bool(session.avoid) + [
            f"{len(ids)} {name}" for name, ids in (("liked", session.liked), ("disliked", session.disliked)) if ids]
        return f" ({'; '.join(parts)})" if parts else ""

    def run_card_action(self, k, moments, describe_k, session, evt: gr.EventData):
        """A card's "More like this" (refines the current search; without one, tracks that sound like it),
        thumbs up or down (re-rank the current search, Rocchio) or "Describe" (the Describe tab)."""
        action, track_id = getattr(evt, "action", None), str(getattr(evt, "track_id", ""))
        if action == "describe":
            return (gr.Tabs(selected="describe"), *(gr.skip(),) * 5, gr.Dropdown(value=track_id), None,
                    *self.run_describe(None, track_id, describe_k), gr.skip())
        untouched_describe = (gr.skip(),) * 8
        if session is not None and track_id.isdigit():
            track = int(track_id)
            field_name = {"similar": "like", "liked": "liked", "disliked": "disliked"}.get(action)
            if field_name is not None:
                session = session.add(field_name, track)
                return (gr.Tabs(selected="search"), *self.refined(session, k, moments), gr.skip(),
                        *untouched_describe, session)
        if action != "similar":
            return (gr.skip(), gr.Markdown("Search first: the thumbs re-rank a search."), *(gr.skip(),) * 13, gr.skip())
        try:
            results = self.service.similar(int(track_id), int(k), moments=bool(moments))
            snapshot = self.service.snapshot()
            title = snapshot.tracks.titles[snapshot.row_of[int(track_id)]]
            headline = f"{len(results)} tracks that sound like “{html.escape(title)}”."
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
            results, headline = [], _message(exc)
        return (gr.Tabs(selected="search"), *self.answer(results, headline, "similar"), gr.skip(), *untouched_describe,
                gr.skip())

    def run_describe(self, audio_path, track_choice, k):
        """(message, tag bars, description bars, similar cards, 3 export buttons) for a clip or a track."""
        nothing = ("", "", "", *(gr.DownloadButton(visible=False),) * 3)
        source = audio_path or track_choice or None  # choosing one clears the other (see the events below)
        if source is None:
            return ("Upload or record a clip, or pick a library track.", *nothing)
        try:
            description: Description = self.service.describe(source, int(k), similar_k=int(k))
        except Exception as exc:  # noqa: BLE001 - shown to the user, never a traceback
            return (_message(exc), *nothing)
        what = "the uploaded clip " if audio_path else "library "
        headline = f"Best matches for {what}{html.escape(description.source)}."
        if description.note:
            headline += f"\n\n⚠️ {description.note}"
        tags = bars_html(description.tags, title="Tags")
        descriptions = bars_html(description.descriptions, title="Your descriptions") if description.descriptions else (
            "<p class='mq-facts'>Add your own descriptions with <code>muqsearch texts add FILE</code>.</p>")
        _, similar_html, *buttons = self.answer(description.similar, "", "describe")
        similar_block = f"<h4>Similar tracks in the library</h4>{similar_html}" if description.similar else ""
        return (headline, tags, descriptions, similar_block, *buttons)

    def library_markdown(self) -> str:
        s = self.service.status()
        lines = [
            f"**Model:** {html.escape(str(s['running_model']))}" + ("" if s["has_tokenizer"] else " (no tokenizer: text search is off)"),
            f"**Library:** `{s['library']}`",
            f"**Tags:** the {html.escape(s['vocabulary']['name'])} vocabulary ({s['vocabulary']['tags']} tags); "
            "a tag shows only when it beats 95 % of unrelated texts on the track",
            "**Spelling:** " + (f"misspelt query words are read as the nearest of the model's {s['spelling_words']} "
                                "caption words" if s["spelling_words"] else "queries are searched as typed"),
            f"**Tracks:** {s['tracks']} · **segments:** {s['segments']} · **audio:** {round(s['audio_hours'], 2)} h",
            f"**Index:** {s['index_type'] or 'none yet'} (generation {s['serving_generation'] or '–'}; "
            f"segments: {s.get('segment_index_type') or '–'})",
            f"**Folders:** {', '.join(f'`{r}`' for r in s['roots']) or '–'}",
            "**Text collections:** " + (", ".join(f"{html.escape(c['name'])} ({c['count']})"
                                                   for c in s.get("text_collections", [])) or "–"),
            f"**Query cache:** {s['query_cache']['size']} queries, {s['query_cache']['hits']} hits",
        ]
        if s.get("problem"):
            lines.append(f"⚠️ {html.escape(s['problem'])}")
        if s.get("domain") and s["domain"]["warning"]:
            lines.append(f"⚠️ {html.escape(s['domain']['warning'])}")
        return "  \n".join(lines)

    def domain_banner(self):
        report = self.service.domain_report()
        if report is None or report.ok:
            return gr.Markdown("", visible=False)
        return gr.Markdown(f"⚠️ **Wrong model for this music:** {html.escape(report.warning())}", visible=True)

    def library_errors(self):
        errors = self.service.status()["error_list"]
        return [[e["path"], e["stage"], e["message"]] for e in errors]

    def track_choices(self):
        try:
            snapshot = self.service.snapshot()
        except SearchError:
            return []
        t = snapshot.tracks
        return [(f"{t.titles[i]} — {t.artists[i] or 'unknown artist'} (#{t.ids[i]})", str(t.ids[i]))
                for i in range(min(len(t.ids), MAX_TRACK_CHOICES))]

    def tag_choices(self):
        try:
            snapshot = self.service.snapshot()
        except SearchError:
            return []
        return sorted({tag for tags in snapshot.tracks.tags for tag in tags}, key=str.casefold)

    def refresh_library(self):
        """The Library tab, the Describe tab's track list, the tag filter and the domain banner, fresh."""
        return (self.library_markdown(), self.library_errors(), gr.Dropdown(choices=self.track_choices()),
                gr.Dropdown(choices=self.tag_choices()), self.domain_banner())


def build_app(service: SearchService, info: AppInfo) -> gr.Blocks:
    """The page: its layout, then which :class:`Page` handler each event calls."""
    page = Page(service)
    limits = service.limits
    # delete_cache: Gradio's copies of uploads and exports older than an hour go, checked every hour
    with gr.Blocks(title="MuQ Search", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(f"# MuQ Search\nFind music by describing it. Model: **{html.escape(info.model_label)}**")
        if info.notice:
            gr.Markdown(info.notice, elem_id="model-notice")
        domain_warning = gr.Markdown(visible=False, elem_id="domain-warning")
        with gr.Tabs() as tabs:
            with gr.Tab("Search", id="search"):
                with gr.Row():
                    # longer than the model reads (bounded for the payload): Page.run_search cuts it and says so
                    query = gr.Textbox(label="Describe the music", placeholder=info.examples[0], scale=5,
                                       max_length=10 * limits.max_query_chars, elem_id="query")
                    search_button = gr.Button("Search", variant="primary", scale=1, elem_id="search-button")
                gr.Examples([[e] for e in info.examples], inputs=[query], label="Try")
                with gr.Accordion("Options and filters", open=False):
                    with gr.Row():
                        k = gr.Slider(1, min(50, limits.max_k), value=10, step=1, label="Results")
                        moments = gr.Checkbox(value=True, label="Moments (start at the best 10 s)",
                                              elem_id="moments")
                        exact = gr.Checkbox(value=False, label="Exact wording (no spelling correction)",
                                            elem_id="exact")
                    with gr.Row():
                        artist = gr.Textbox(label="Artist contains")
                        album = gr.Textbox(label="Album contains")
                        tags = gr.Dropdown(choices=page.tag_choices(), multiselect=True, label="Tags (all of)")
                        avoid = gr.Textbox(label="But not (descriptions, separated by ;)", elem_id="avoid")
                    with gr.Row():
                        year_min = gr.Number(label="Year from", precision=0)
                        year_max = gr.Number(label="Year to", precision=0)
                        duration_min = gr.Number(label="Duration from (s)")
                        duration_max = gr.Number(label="Duration to (s)")
                search_message = gr.Markdown(elem_id="search-message")
                results = gr.HTML("", elem_id="results", js_on_load=CARD_EVENTS_JS)
                with gr.Row():
                    search_exports = [
                        gr.DownloadButton(f"Export {fmt.upper()}", visible=False, size="sm", elem_id=f"export-{fmt}")
                        for fmt in export.FORMATS
                    ]
            with gr.Tab("Describe", id="describe"):
                with gr.Row():
                    clip = gr.Audio(sources=["upload", "microphone"], type="filepath", label="A clip",
                                    elem_id="describe-audio")
                    with gr.Column():
                        track = gr.Dropdown(choices=page.track_choices(), label="…or a library track", value=None,
                                            filterable=True, elem_id="describe-track")
                        describe_k = gr.Slider(1, 30, value=10, step=1, label="How many")
                        describe_button = gr.Button("Describe", variant="primary", elem_id="describe-button")
                describe_message = gr.Markdown(elem_id="describe-message")
                with gr.Row():
                    tag_bars = gr.HTML(elem_id="describe-tags")
                    description_bars = gr.HTML(elem_id="describe-descriptions")
                similar = gr.HTML(elem_id="describe-similar", js_on_load=CARD_EVENTS_JS)
                with gr.Row():
                    describe_exports = [
                        gr.DownloadButton(f"Export {fmt.upper()}", visible=False, size="sm",
                                          elem_id=f"describe-export-{fmt}")
                        for fmt in export.FORMATS
                    ]
            with gr.Tab("Library", id="library"):
                summary = gr.Markdown(elem_id="library-summary")
                errors = gr.Dataframe(headers=["file", "stage", "problem"], label="Indexing errors",
                                      interactive=False, elem_id="library-errors")
                refresh = gr.Button("Refresh", size="sm")

        session = gr.State(None)  # the search that "More like this" and the thumbs refine
        search_inputs = [query, k, moments, artist, album, year_min, year_max, duration_min, duration_max, tags, avoid,
                         exact]
        search_outputs = [search_message, results, *search_exports]
        for trigger in (search_button.click, query.submit):
            trigger(page.run_search, search_inputs, [*search_outputs, session], api_visibility="private")
        describe_outputs = [describe_message, tag_bars, description_bars, similar, *describe_exports]
        for cards in (results, similar):
            cards.click(page.run_card_action, [k, moments, describe_k, session],
                        [tabs, *search_outputs, track, clip, *describe_outputs, session], api_visibility="private")
        describe_button.click(page.run_describe, [clip, track, describe_k], describe_outputs, api_visibility="private")
        # one source at a time: a new clip unselects the library track, picking a track removes the clip
        for clip_event in (clip.upload, clip.stop_recording):
            clip_event(lambda: None, None, track, api_visibility="private")
        track.input(lambda: None, None, clip, api_visibility="private")

        for trigger in (refresh.click, demo.load):  # on every page load too: a new generation shows up
            trigger(page.refresh_library, None, [summary, errors, track, tags, domain_warning], api_visibility="private")
        _api_endpoints(service)
    return demo


def _api_endpoints(service: SearchService) -> None:
    """``/search``, ``/similar`` and ``/describe``: JSON in, JSON out, errors as gr.Error messages."""

    def guarded(fn: Callable) -> Callable:
        @functools.wraps(fn)  # keeps the signature: the API documents its parameters by these names
        def call(*args):
            try:
                return fn(*args)
            except (SearchError, FilterError) as exc:  # the caller's mistake: one log line, no traceback
                log.warning("/%s refused: %s", fn.__name__, exc)
                raise gr.Error(str(exc), print_exception=False) from None

        return call

    def search(query: str, k: float = 10, moments: bool = False, filters: str = "", like: str = "",
               avoid: str = "", liked: str = "", disliked: str = "", weights: str = "", exact: bool = False) -> dict:
        """{"verdict": strong|weak|none, "searched_for": the query as searched, "avoided": the avoid
        descriptions as searched, "corrections": [{"typed", "read_as"}], "results": [...]}: tracks matching a
        description, each with its calibrated confidence; misspelt words are corrected against the model's
        caption words unless exact; filters like
        "artist=Bach; year=1990..1999; tag=piano". Composed: like = library track ids ("42, 7"), avoid =
        descriptions ("sad; drums"); feedback: liked / disliked track ids (Rocchio); weights like
        "like=0.5, gamma=0.5" (app.search.QueryWeights)."""
        parsed = Filters.parse(_semicolon_list(filters))
        return service.answer(
            query, int(k), filters=parsed, moments=bool(moments), like=_ids(like, "like"),
            avoid=_semicolon_list(avoid), liked=_ids(liked, "liked"),
            disliked=_ids(disliked, "disliked"), weights=parse_weights(weights), exact=bool(exact)).to_dict()

    def similar(audio: str | None, track_id: str = "", k: float = 10) -> list[dict]:
        """Library tracks that sound like an uploaded clip or a library track id (never itself)."""
        return [r.to_dict() for r in service.similar(_api_source(audio, track_id), int(k))]

    def describe(audio: str | None, track_id: str = "", k: float = 10) -> dict:
        """Tags, descriptions and similar tracks for an uploaded clip or a library track id."""
        return service.describe(_api_source(audio, track_id), int(k), similar_k=int(k)).to_dict()

    with gr.Group(visible=False):
        like, avoid, liked, disliked, weights = (gr.Textbox(value="") for _ in range(5))
        text, number = gr.Textbox(), gr.Number(value=10)
        flag, exact, filter_text = gr.Checkbox(value=False), gr.Checkbox(value=False), gr.Textbox(value="")
        audio, track_id = gr.File(file_types=["audio"], type="filepath"), gr.Textbox(value="")
        out, out_dict = gr.JSON(label="results"), gr.JSON(label="description")
        button = gr.Button()
    button.click(guarded(search), [text, number, flag, filter_text, like, avoid, liked, disliked, weights, exact], out,
                 api_name="search")
    button.click(guarded(similar), [audio, track_id, number], out, api_name="similar")
    button.click(guarded(describe), [audio, track_id, number], out_dict, api_name="describe")


def _ids(text: str, name: str) -> list[int]:
    """Track ids from "42, 7" (commas or spaces); SearchError naming the parameter otherwise."""
    parts = [p for p in str(text or "").replace(",", " ").split() if p]
    if not all(p.isdigit() for p in parts):
        raise SearchError(f"{name}: give library track ids (whole numbers), got {text!r}")
    return [int(p) for p in parts]


def _api_source(audio: str | None, track_id: str) -> int | str:
    """An uploaded file (Gradio checked it came from its upload folder) or a whole-number track id."""
    if audio:
        return audio
    track_id = str(track_id or "").strip()
    if not track_id.isdigit():
        raise SearchError("Give an audio file or a library track id (a whole number).")
    return int(track_id)


def launch(
    service: SearchService, info: AppInfo, *, host: str = "127.0.0.1", port: int | None = 7860,
    auth: tuple[str, str] | None = None, block: bool = True, quiet: bool = False,
):
    """Serve the UI and API; returns (blocks, url). Binds to ``host`` only, never opens a share tunnel."""
    if service.limits.max_upload_bytes is None:  # a web app always bounds uploads
        service.limits.max_upload_bytes = DEFAULT_MAX_UPLOAD_BYTES
    demo = build_app(service, info)
    demo.queue(default_concurrency_limit=2)
    service.on_reload = lambda snapshot: _allow_roots(demo, snapshot.roots)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        share=False,
        allowed_paths=service.roots(),
        max_file_size=service.limits.max_upload_bytes,
        app_kwargs={"middleware": [Middleware(LibraryFileGuard, service=service)]},
        enable_monitoring=False,
        mcp_server=False,
        prevent_thread_lock=not block,
        quiet=quiet,
        footer_links=["api"],
        css=CSS,
        theme=gr.themes.Soft(),
    )
    return demo, url


def _allow_roots(demo: gr.Blocks, roots) -> None:
    """Folders indexed after start-up become servable too (the guard still checks every file)."""
    demo.allowed_paths = sorted(set(demo.allowed_paths) | set(roots))
