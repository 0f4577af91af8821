"""The search service: the one place the CLI, the web UI and the HTTP API ask questions of a library.

text -> music     rank tracks by the track index; with ``moments`` each result also carries its best
                  10 s segment (start/end seconds), scored against that track's segment vectors
music -> music    a library track (by id) or any audio file; the query track never returns itself
music -> text     the built-in tag vocabulary and the user's text collections, scored against the audio
filters           metadata (artist, album, year, duration, tags) become a set of allowed track ids that
                  the vector search is restricted to (``indexer.ann.search(allowed_ids=...)``): exact for
                  small sets, widened ANN for large ones, so a filter never drops a better match

A :class:`Snapshot` is everything one index generation needs (FAISS indexes plus the catalog metadata
of the tracks they hold). Queries take the current snapshot once and use only it; when the indexer
commits a newer generation the service builds a new snapshot and swaps the reference, so in-flight
queries finish on the old one and no query fails or restarts the server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.exc import SQLAlchemyError

from app.cache import LRUCache
from app.filters import Filters, TrackColumns
from app.texts import TextBank, TextCollections, TextsUnavailable, require_tokenizer
from indexer.ann import index_kind
from indexer.calibration import Calibration, embed_texts, null_bank, verdict
from indexer.catalog import VOCABULARY_COLLECTION
from indexer.layout import has_catalog
from indexer.vectors import Library, LibraryError, VectorIndexes
from muq_model.identity import precision_conflict, same_vectors
from muq_model.spelling import Correction, Speller

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 500
MAX_K = 200
MAX_AUDIO_SECONDS = 600.0  # an uploaded query is analysed for at most its first 10 minutes
RELOAD_CHECK_SECONDS = 1.0


class SearchError(Exception):
    """A question the service cannot answer; the message is meant for the person who asked."""


# --------------------------------------------------------------------------------------------------
# Answers


@dataclass(frozen=True)
class Moment:
    start: float  # seconds into the track
    end: float
    score: float


@dataclass(frozen=True)
class Result:
    track_id: int
    path: str
    title: str
    artist: str
    album: str
    year: int | None
    duration: float | None
    tags: tuple[str, ...]
    score: float
    moment: Moment | None = None
    confidence: float | None = None  # text queries: calibrated against unrelated texts (indexer.calibration)
    tag_scores: tuple[tuple[str, float], ...] = ()  # (auto-tag, its score): the tags that passed their bar

    def to_dict(self) -> dict:
        out = {
            "track_id": self.track_id,
            "path": self.path,
            "title": self.title,
            "artist": self.artist,
            "album": self.album,
            "year": self.year,
            "duration": self.duration,
            "score": round(self.score, 6),
            "tags": list(self.tags),
        }
        if self.confidence is not None:
            out["confidence"] = round(self.confidence, 4)
        out["tag_scores"] = {t: round(v, 4) for t, v in self.tag_scores}
        if self.moment is not None:
            out.update(start=self.moment.start, end=self.moment.end, moment_score=round(self.moment.score, 6))
        return out


@dataclass(frozen=True)
class QueryWeights:
    """The arithmetic of a composed query, in the shared embedding space (every vector unit length):

        q  = unit(text * t + like * mean(reference tracks) - avoid * mean(avoided descriptions))
        q' = unit(alpha * q + beta * mean(liked tracks) - gamma * mean(disliked tracks))   (Rocchio)

    An empty group adds nothing. Defaults: the description and the references count alike, what to
    avoid half as much; Rocchio's classic 1, 0.75, 0.25."""

    text: float = 1.0
    like: float = 1.0
    avoid: float = 0.5
    alpha: float = 1.0
    beta: float = 0.75
    gamma: float = 0.25


def parse_weights(text: str) -> QueryWeights:
    """QueryWeights from "like=0.5, avoid=1" (names of its fields); SearchError naming a bad entry."""
    values = {}
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in QueryWeights.__dataclass_fields__:
            raise SearchError(f"weight {part!r}: unknown name {name!r} (known: "
                              f"{', '.join(QueryWeights.__dataclass_fields__)})")
        try:
            values[name] = float(value)
        except ValueError:
            raise SearchError(f"weight {part!r}: {value.strip()!r} is not a number") from None
    return QueryWeights(**values)


def compose(text: np.ndarray, like: np.ndarray, avoid: np.ndarray, liked: np.ndarray, disliked: np.ndarray,
            weights: QueryWeights) -> np.ndarray:
    """The query vector of :class:`QueryWeights` (each group a (n, dim) array, possibly empty)."""
    def mean(rows: np.ndarray) -> np.ndarray:
        return _unit(rows.mean(axis=0)) if len(rows) else np.zeros_like(text)

    query = _unit(weights.text * text + weights.like * mean(like) - weights.avoid * mean(avoid))
    return _unit(weights.alpha * query + weights.beta * mean(liked) - weights.gamma * mean(disliked))


def _unit(vector: np.ndarray) -> np.ndarray:
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


VERDICT_WORDS = {  # verdict -> (its name, what it means), as the CLI and the page say it
    "strong": ("strong match", ""),
    "weak": ("weak match", "the best results fit only a little better than unrelated descriptions do"),
    "none": ("no good match", "nothing in this library fits better than unrelated descriptions do; "
                              "these are only the closest tracks"),
}


def answer_verdict(results: Sequence[Result]) -> str:
    """strong | weak | none for a text query's results: their best calibrated confidence decides."""
    confidences = [r.confidence for r in results if r.confidence is not None]
    return verdict(max(confidences) if confidences else None)


@dataclass(frozen=True)
class Reading:
    """A text as the search reads it: the words it searched for, and which typed words it corrected
    (muq_model.spelling; none when the text is searched exactly as typed)."""

    text: str
    corrections: tuple[Correction, ...] = ()


@dataclass(frozen=True)
class Answer:
    """A text query's answer: the query and each description to avoid as they were read, and the results."""

    reading: Reading
    avoided: tuple[Reading, ...]
    results: list[Result]

    @property
    def verdict(self) -> str:
        return answer_verdict(self.results)

    @property
    def corrections(self) -> tuple[Correction, ...]:
        """Every word read otherwise than typed, in the query and in the descriptions to avoid, once each."""
        return tuple(dict.fromkeys(c for r in (self.reading, *self.avoided) for c in r.corrections))

    def note(self) -> str:
        """What the CLI and the page say about a corrected query; empty when nothing was corrected."""
        if not self.corrections:
            return ""
        avoiding = (", not " + ", ".join(f"“{r.text}”" for r in self.avoided)
                    if any(r.corrections for r in self.avoided) else "")
        fixed = ", ".join(f"“{c.typed}” as “{c.read_as}”" for c in self.corrections)
        return f"Searched for “{self.reading.text}”{avoiding} (read {fixed})."

    def to_dict(self) -> dict:
        """The answer as `search --json` and the ``/search`` API give it."""
        return {"verdict": self.verdict, "searched_for": self.reading.text,
                "avoided": [r.text for r in self.avoided],
                "corrections": [c.to_dict() for c in self.corrections],
                "results": [r.to_dict() for r in self.results]}


@dataclass(frozen=True)
class TextMatch:
    text: str
    score: float
    collection: str
    category: str | None = None

    def to_dict(self) -> dict:
        return {"text": self.text, "score": round(self.score, 6), "collection": self.collection, "category": self.category}


@dataclass(frozen=True)
class Description:
    """What fits a piece of audio: vocabulary tags, the user's descriptions, and library tracks like it."""

    source: str  # a file name or "track N"
    tags: list[TextMatch]
    descriptions: list[TextMatch]
    similar: list[Result]
    note: str | None = None  # why tags/descriptions are missing, when they are

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "tags": [t.to_dict() for t in self.tags],
            "descriptions": [d.to_dict() for d in self.descriptions],
            "similar": [r.to_dict() for r in self.similar],
            "note": self.note,
        }


# --------------------------------------------------------------------------------------------------
# One index generation


@dataclass(frozen=True)
class Snapshot:
    indexes: VectorIndexes
    tracks: TrackColumns  # the tracks the track index holds and the catalog still describes
    row_of: dict[int, int]  # track id -> row in `tracks`
    searchable: np.ndarray | None  # (n_index,) ids of `tracks` when the index holds ids the catalog lost
    segments_of: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]  # track id -> (segment ids, starts, ends)
    roots: tuple[str, ...]  # the folders the library was indexed from
    id_of_path: dict[str, int]  # every servable audio file (absolute, as stored) -> track id
    index_type: str
    segment_index_type: str
    id_of_audio: dict[str, int] = field(default_factory=dict)  # decoded-audio hash (as indexed) -> track id
    auto_scores: dict[int, tuple[tuple[str, float], ...]] = field(default_factory=dict)  # track id -> auto-tags

    @property
    def generation(self) -> int:
        return self.indexes.generation


def load_snapshot(library: Library) -> Snapshot:
    """Read the current generation's indexes and the catalog rows of every track they hold (rows the
    index does not hold yet are left out)."""
    indexes = library.load()
    held = library.rows_held(indexes)
    rows, tag_rows, segment_rows, roots = held.tracks, held.tags, held.segments, held.roots
    # auto-tags by score, then the file's own genres
    by_track: dict[int, list[tuple[int, float, str]]] = {}
    for track_id, tag, source, score in tag_rows:
        rank = (0, -(score or 0.0)) if source == "auto" else (1, 0.0)
        by_track.setdefault(track_id, []).append((*rank, tag))
    tags = [tuple(dict.fromkeys(t for *_, t in sorted(by_track.get(r.id, [])))) for r in rows]
    tracks = TrackColumns(
        ids=np.array([r.id for r in rows], dtype=np.int64),
        paths=[r.path for r in rows],
        titles=[r.title or Path(r.path).stem for r in rows],
        artists=[r.artist or "" for r in rows],
        albums=[r.album or "" for r in rows],
        years=np.array([np.nan if r.year is None else r.year for r in rows], dtype=np.float64),
        durations=np.array([np.nan if r.duration is None else r.duration for r in rows], dtype=np.float64),
        tags=tags,
        tag_sets=[frozenset(t.casefold() for t in ts) for ts in tags],
    )
    segments: dict[int, list[tuple[int, float, float]]] = {}
    for seg_id, track_id, start, end in segment_rows:
        segments.setdefault(track_id, []).append((seg_id, start, end))
    segments_of = {
        t: (np.array([s[0] for s in rows_], np.int64), np.array([s[1] for s in rows_]), np.array([s[2] for s in rows_]))
        for t, rows_ in segments.items()
    }
    if not roots:  # a catalog filled without index runs: the folders holding the tracks
        roots = sorted({str(Path(p).parent) for p in tracks.paths})
    return Snapshot(
        indexes=indexes,
        tracks=tracks,
        row_of={int(t): i for i, t in enumerate(tracks.ids)},
        searchable=None if len(rows) == int(indexes.tracks.ntotal) else tracks.ids,
        segments_of=segments_of,
        roots=tuple(roots),
        id_of_path={p: int(t) for p, t in zip(tracks.paths, tracks.ids, strict=True)},
        index_type=index_kind(indexes.tracks),
        segment_index_type=index_kind(indexes.segments),
        id_of_audio={r.audio_hash: r.id for r in rows},
        auto_scores={track_id: tuple((tag, -negative) for first, negative, tag in sorted(entries) if first == 0)
                     for track_id, entries in by_track.items()},
    )


# --------------------------------------------------------------------------------------------------
# The service


@dataclass
class ServiceLimits:
    max_query_chars: int = MAX_QUERY_CHARS
    max_k: int = MAX_K
    max_upload_bytes: int | None = None  # the web app sets its upload cap; the CLI reads any local file
    max_audio_seconds: float = MAX_AUDIO_SECONDS


@dataclass
class SearchService:
    """Answers text->music, music->music and music->text questions about one library with one model."""

    library_dir: Path
    model: object  # muq_model.MuQMuLan (typed loosely: importing torch here would slow `--help`)
    model_name: str = ""
    limits: ServiceLimits = field(default_factory=ServiceLimits)
    query_cache_size: int = 1024
    reload_check_seconds: float = RELOAD_CHECK_SECONDS
    on_reload: Callable[[Snapshot], None] | None = None  # e.g. the UI widening its servable folders

    def __post_init__(self):
        self.library_dir = Path(self.library_dir)
        self.query_cache: LRUCache[np.ndarray] = LRUCache(self.query_cache_size)
        self._library: Library | None = None
        self._snapshot: Snapshot | None = None
        self._problem: str | None = None  # why there is no snapshot to serve, when it is not just "empty"
        self._reload_lock = threading.Lock()
        self._model_lock = threading.Lock()  # one forward pass at a time: two cores, no oversubscription
        self._checked_at = 0.0
        self._domain_report: tuple = (None, None)  # ((domain, generation), DomainReport)
        self._refused_generation: int | None = None
        self.texts = TextCollections(self.model, self._model_lock)
        self.speller = Speller.for_model(self.model)  # None: the model keeps no caption words, nothing is corrected
        self._calibration: Calibration | None = None
        self._fingerprint = self.model.fingerprint()
        self._fingerprint_key = json.dumps(self._fingerprint, sort_keys=True)
        from muq_model.runtime import serve_numpy_blas_on_one_thread  # torch is loaded with the model by now

        serve_numpy_blas_on_one_thread()
        self.reload()

    # ---- the library and its generations ----------------------------------------------------------

    @property
    def library(self) -> Library:
        if self._library is None:
            self._library = Library.open(self.library_dir)
        return self._library

    def close(self) -> None:
        if self._library is not None:
            self._library.close()
            self._library = None

    def reload(self) -> bool:
        """Load the current generation if it is newer than the one in use; True when it swapped.

        Never raises: a failed load (no library yet, a generation of another model, an index that cannot
        be read) keeps serving the previous snapshot and records why for :meth:`snapshot` to report.
        """
        with self._reload_lock:
            self._checked_at = time.monotonic()
            try:
                if not has_catalog(self.library_dir):
                    return False
                current, generation = self._snapshot, self.library.generation
                if generation == 0 or (current is not None and generation <= current.generation):
                    return False
                if generation == self._refused_generation:
                    return False  # this generation's model does not match ours: no point reading it again
                snapshot = load_snapshot(self.library)
            except (LibraryError, RuntimeError, OSError, SQLAlchemyError) as exc:
                log.warning("library not (re)loaded: %s", exc)
                if self._snapshot is None:
                    self._problem = (f"The library's vector index could not be read ({exc}). "
                                     "Run `muqsearch index` on it to repair the index from the catalog.")
                return False
            if not same_vectors(snapshot.indexes.fingerprint, self._fingerprint):
                self._refused_generation = snapshot.generation
                conflict = precision_conflict(snapshot.indexes.fingerprint, self.model.precision)
                self._problem = conflict or (
                    f"This library was indexed with model {self.library.catalog.get_meta('model_name')!r}, "
                    f"but the running model is {self.model_name or self._fingerprint.get('model_id')!r}; "
                    "vectors of different models cannot be compared. Start with the library's model "
                    "(--model) or index the music again with this one."
                )
                return False
            self._snapshot, self._problem = snapshot, None
            if self.on_reload is not None:
                self.on_reload(snapshot)
            log.info("serving index generation %d (%d tracks)", snapshot.generation, len(snapshot.tracks.ids))
            return True

    def snapshot(self) -> Snapshot:
        """The generation to answer from, checking (at most every ``reload_check_seconds``) for a newer one."""
        if time.monotonic() - self._checked_at >= self.reload_check_seconds and not self._reload_lock.locked():
            self.reload()
        snapshot = self._snapshot
        if snapshot is None or len(snapshot.tracks.ids) == 0:
            raise SearchError(self._problem or (
                f"The library at {self.library_dir} has no indexed tracks yet. Index a music folder with "
                f"`muqsearch index ~/Music --library {self.library_dir}`; the search picks the new tracks up "
                "without a restart."
            ))
        return snapshot

    # ---- text -> music -----------------------------------------------------------------------------

    def read_query(self, text: str, *, exact: bool = False) -> Reading:
        """The query as it will be searched: whitespace normalised, length checked, misspelt words corrected
        against the model's caption words unless ``exact``."""
        text = check_query(text, self.limits.max_query_chars)
        if exact or self.speller is None:
            return Reading(text)
        corrected, corrections = self.speller.correct(text)
        return Reading(corrected, tuple(corrections))

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) unit vector of a text query, from the LRU cache when this model has seen it before."""
        return self._query_vectors(check_query(text, self.limits.max_query_chars))[0]

    def _query_vectors(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(shared-space vector, text-encoder sentence vector) of a query already checked (by ``embed_query``
        or ``read_query``, whose correction may make it a little longer than typed), cached; one encoder pass."""
        try:
            require_tokenizer(self.model)
        except TextsUnavailable as exc:
            raise SearchError(str(exc)) from exc

        def compute():
            with self._model_lock:
                shared, sentence = embed_texts(self.model, [text])
            return shared[0], sentence[0]

        return self.query_cache.get_or_compute((self._fingerprint_key, text), compute)

    def answer(
        self, query: str, k: int = 10, *, filters: Filters | None = None, moments: bool = False,
        like: Sequence = (), avoid: Sequence[str] = (), liked: Sequence[int] = (), disliked: Sequence[int] = (),
        weights: QueryWeights | None = None, exact: bool = False,
    ) -> Answer:
        """Tracks matching a description, best first, each with its calibrated confidence, and the verdict on
        the whole answer. The description, and each one to avoid, is searched as :meth:`read_query` reads it
        (``exact``: as typed); the answer says how it read them.

        A composed query adds reference tracks or files (``like``) and subtracts descriptions to stay away
        from (``avoid``); relevance feedback then moves it towards the tracks marked ``liked`` and away from
        the ``disliked`` ones (:func:`compose`). References and disliked tracks are not returned."""
        reading = self.read_query(query, exact=exact)
        avoided = tuple(self.read_query(text, exact=exact) for text in avoid)
        weights = weights or QueryWeights()
        vector, sentence = self._query_vectors(reading.text)
        snapshot = self.snapshot()
        exclude: list[int] = []
        references = []
        for source in like:
            reference, excluded, _ = self._audio_query(snapshot, source)
            references.append(reference)
            exclude.extend(excluded)
        avoided_vectors = [self._query_vectors(r.text)[0] for r in avoided]
        feedback = {}
        for name, ids in (("liked", liked), ("disliked", disliked)):
            ids = [int(t) for t in ids]
            missing = [t for t in ids if t not in snapshot.row_of]
            if missing:
                raise SearchError(f"There is no track {missing[0]} in this library ({name}).")
            feedback[name] = snapshot.indexes.track_vectors(ids) if ids else np.zeros((0, len(vector)), np.float32)
        exclude.extend(int(t) for t in disliked)
        vector = compose(vector, np.array(references).reshape(-1, len(vector)),
                         np.array(avoided_vectors).reshape(-1, len(vector)), feedback["liked"], feedback["disliked"],
                         weights)
        results = self._search_vector(snapshot, vector, k, filters, moments, exclude=tuple(dict.fromkeys(exclude)))
        calibration = self.calibration()
        confidences = calibration.confidences(
            calibration.known(sentence), snapshot.indexes.track_vectors([r.track_id for r in results]),
            [r.score for r in results])
        return Answer(reading, avoided,
                      [dataclasses.replace(r, confidence=float(c)) for r, c in zip(results, confidences, strict=True)])

    def search(self, query: str, k: int = 10, **options) -> list[Result]:
        """The results of :meth:`answer` alone, for callers that need neither the reading nor the verdict."""
        return self.answer(query, k, **options).results

    def calibration(self) -> Calibration:
        """The null distributions of the running model (its null bank embedded once per model and library)."""
        if self._calibration is None:
            with self._model_lock:
                bank = null_bank(self.model, self.library.catalog if has_catalog(self.library_dir) else None)
            self._calibration = Calibration.build(bank)
        return self._calibration

    def no_match_message(self, filters: Filters | None) -> str:
        """What to say when a question found no track: which filters exclude everything, and why."""
        if filters is None or not filters.active:
            return "No tracks match: the library holds no other track."
        return filters.explain_empty(self.snapshot().tracks)

    # ---- music -> music ----------------------------------------------------------------------------

    def similar(
        self, source: int | str | os.PathLike, k: int = 10, *, filters: Filters | None = None,
        moments: bool = False,
    ) -> list[Result]:
        """Library tracks that sound like a library track (by id) or an audio file; never the track itself."""
        snapshot = self.snapshot()
        vector, exclude, _ = self._audio_query(snapshot, source)
        return self._search_vector(snapshot, vector, k, filters, moments, exclude=exclude)

    # ---- music -> text -----------------------------------------------------------------------------

    def describe(self, source: int | str | os.PathLike, k: int = 10, *, similar_k: int = 5) -> Description:
        """The vocabulary tags and user descriptions that fit the audio best, and library tracks like it."""
        snapshot = self._snapshot_or_none()
        if snapshot is None and _as_track_id(source) is not None:
            self.snapshot()  # raises the empty-library message
        vector, exclude, label = self._audio_query(snapshot, source)
        k = self._check_k(k)
        tags: list[TextMatch] = []
        descriptions: list[TextMatch] = []
        note = None
        try:
            banks = self.text_banks()
        except SearchError as exc:  # a model without a tokenizer: no texts to rank, similar tracks still work
            banks, note = [], str(exc)
        for bank in banks:
            scores = bank.vectors @ vector
            best = np.argsort(-scores, kind="stable")[:k]
            matches = [TextMatch(bank.texts[i], float(scores[i]), bank.name, bank.categories[i]) for i in best]
            (tags if bank.name == VOCABULARY_COLLECTION else descriptions).extend(matches)
        descriptions.sort(key=lambda m: -m.score)
        similar = []
        if snapshot is not None and similar_k > 0:
            similar = self._search_vector(snapshot, vector, similar_k, None, False, exclude=exclude)
        return Description(label, tags, descriptions[:k], similar, note)

    def text_banks(self) -> list[TextBank]:
        """The vocabulary and every user collection, embedded with the running model (cached in the catalog)."""
        try:
            return self.texts.banks(self.library.catalog if has_catalog(self.library_dir) else None)
        except TextsUnavailable as exc:
            raise SearchError(str(exc)) from exc

    # ---- helpers -----------------------------------------------------------------------------------

    def _snapshot_or_none(self) -> Snapshot | None:
        try:
            return self.snapshot()
        except SearchError:
            return None

    def _check_k(self, k) -> int:
        try:
            k = int(k)
        except (TypeError, ValueError) as exc:
            raise SearchError(f"k must be a whole number of results, got {k!r}") from exc
        if not 1 <= k <= self.limits.max_k:
            raise SearchError(f"k must be between 1 and {self.limits.max_k}, got {k}")
        return k

    def embed_file(self, path: str | os.PathLike) -> np.ndarray:
        """(dim,) unit vector of an audio file's first ``max_audio_seconds`` (the track embedding, renormalised)."""
        return self._embed_samples(self._decode_file(path)[0])

    def _decode_file(self, path: str | os.PathLike) -> tuple[np.ndarray, str | None]:
        """(samples at the model's rate, up to ``max_audio_seconds``; the audio hash the indexer would
        record for the file, or None when the file is longer than what is read)."""
        from indexer.audio import AudioDecodeError, stream_audio
        from indexer.decode import AudioHasher

        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise SearchError(f"Cannot read {path.name}: {exc.strerror or exc}") from exc
        if self.limits.max_upload_bytes is not None and size > self.limits.max_upload_bytes:
            raise SearchError(
                f"{path.name} is {size / 2**20:.1f} MB; the limit is {self.limits.max_upload_bytes / 2**20:.0f} MB. "
                "Use a shorter excerpt of the track."
            )
        budget = int(self.limits.max_audio_seconds * self.model.sample_rate)
        chunks, taken, hasher, whole = [], 0, AudioHasher(), True
        try:
            for chunk in hasher.wrap(stream_audio(path, self.model.sample_rate)):
                chunks.append(chunk[: budget - taken])
                taken += len(chunks[-1])
                if taken >= budget:
                    whole = False
                    break
        except AudioDecodeError as exc:
            raise SearchError(f"Cannot decode {path.name} as audio: {exc.reason}") from exc
        if not chunks:
            raise SearchError(f"{path.name} holds no audio samples.")
        return np.concatenate(chunks), hasher.hexdigest() if whole else None

    def _embed_samples(self, samples: np.ndarray) -> np.ndarray:
        with self._model_lock:
            vector = self.model.embed_audio([samples], sample_rate=self.model.sample_rate)[0]
        vector = vector.numpy().astype(np.float32)
        return vector / max(float(np.linalg.norm(vector)), 1e-12)

    def _audio_query(self, snapshot: Snapshot | None, source) -> tuple[np.ndarray, tuple[int, ...], str]:
        """(query vector, track ids to exclude, label) for a track id, a library path or an audio file."""
        track_id = _as_track_id(source)
        if track_id is None and snapshot is not None:
            track_id = self.track_id_of_path(snapshot, source)
        if track_id is not None:
            if snapshot is None or track_id not in snapshot.row_of:
                raise SearchError(f"There is no track {track_id} in this library.")
            vector = snapshot.indexes.track_vectors([track_id])[0]
            return vector, (track_id,), f"track {track_id}: {snapshot.tracks.titles[snapshot.row_of[track_id]]}"
        path = Path(source)
        samples, audio_hash = self._decode_file(path)
        track_id = snapshot.id_of_audio.get(audio_hash) if snapshot is not None else None
        if track_id is not None:  # the same audio as a library track (a copy, an upload): answer for it
            vector = snapshot.indexes.track_vectors([track_id])[0]
            title = snapshot.tracks.titles[snapshot.row_of[track_id]]
            return vector, (track_id,), f"{path.name}, which is library track {track_id}: {title}"
        return self._embed_samples(samples), (), path.name

    @staticmethod
    def track_id_of_path(snapshot: Snapshot, source) -> int | None:
        if not isinstance(source, (str, os.PathLike)):
            return None
        return snapshot.id_of_path.get(os.fspath(source))

    def _search_vector(
        self, snapshot: Snapshot, vector: np.ndarray, k, filters: Filters | None, moments: bool,
        exclude: tuple[int, ...],
    ) -> list[Result]:
        k = self._check_k(k)
        track_ids, scores = rank_tracks(snapshot, vector, k, filters, exclude)
        return [self._result(snapshot, int(t), float(s), vector if moments else None) for t, s in zip(track_ids, scores, strict=True)]

    def _result(self, snapshot: Snapshot, track_id: int, score: float, query: np.ndarray | None) -> Result:
        row = snapshot.row_of[track_id]
        t = snapshot.tracks
        year, duration = t.years[row], t.durations[row]
        return Result(
            track_id=track_id,
            path=t.paths[row],
            title=t.titles[row],
            artist=t.artists[row],
            album=t.albums[row],
            year=None if np.isnan(year) else int(year),
            duration=None if np.isnan(duration) else round(float(duration), 3),
            tags=t.tags[row],
            score=score,
            moment=None if query is None else best_moment(snapshot, track_id, query),
            tag_scores=snapshot.auto_scores.get(track_id, ()),
        )

    # ---- files the UI may serve --------------------------------------------------------------------

    def library_file(self, path: str | os.PathLike) -> str | None:
        """The stored path if ``path`` names an indexed track, else None (nothing else is ever served)."""
        snapshot = self._snapshot
        if snapshot is None:
            return None
        text = os.path.abspath(os.fspath(path))
        if text in snapshot.id_of_path:
            return text
        resolved = os.path.realpath(text)
        return resolved if resolved in snapshot.id_of_path else None

    def roots(self) -> list[str]:
        snapshot = self._snapshot
        return list(snapshot.roots) if snapshot is not None else []

    # ---- facts for the Library tab and `status` ----------------------------------------------------

    def domain_report(self):
        """The library's tracks outside the running model's declared domain (None: it declares none),
        checked once per index generation."""
        from indexer.domain import check_library, declared_domain

        domain, snapshot = declared_domain(self.model), self._snapshot
        if domain is None or snapshot is None:
            return None
        key = (domain, snapshot.generation)
        if self._domain_report[0] != key:
            self._domain_report = (key, check_library(self.library.catalog, domain))
        return self._domain_report[1]

    def status(self) -> dict:
        """The library's status (``indexer.status.library_status``, without the index check) and what the
        running model and the served generation add: what the Library tab shows."""
        from app.texts import list_collections
        from indexer.autotag import vocabulary_info
        from indexer.status import library_status

        snapshot = self._snapshot_or_none()
        if has_catalog(self.library_dir):
            out = library_status(self.library, check_index=False, domain=self.domain_report())
            out["text_collections"] = [c.to_dict() for c in list_collections(self.library.catalog, self._fingerprint)]
        else:
            out = {"library": str(self.library_dir), "tracks": 0, "segments": 0, "audio_hours": 0.0, "errors": 0,
                   "error_list": [], "model": None, "generation": 0, "index_type": None, "domain": None,
                   "text_collections": []}
        out.update(
            running_model=self.model_name or self._fingerprint.get("model_id"),
            vocabulary=vocabulary_info(self.model),
            running_fingerprint=self._fingerprint,
            has_tokenizer=bool(getattr(self.model, "has_tokenizer", False)),
            spelling_words=len(self.speller.counts) if self.speller else 0,  # 0: queries are searched as typed
            query_cache={"size": len(self.query_cache), "hits": self.query_cache.hits, "misses": self.query_cache.misses},
            problem=self._problem,
            serving_generation=snapshot and snapshot.generation,
            roots=list(snapshot.roots) if snapshot else [],
            searchable_tracks=len(snapshot.tracks.ids) if snapshot else 0,
        )
        return out


# --------------------------------------------------------------------------------------------------
# Ranking (pure functions over a snapshot)


def rank_tracks(
    snapshot: Snapshot, query: np.ndarray, k: int, filters: Filters | None = None, exclude: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """(track ids, scores) of the k best tracks that pass the filters, excluding ``exclude``.

    Without filters the index is searched directly, over-fetching by the excluded count. With filters
    the allowed ids go to ``indexer.ann.search``, which ranks exactly among them (or widens the ANN
    search by the inverse of their share), so filtering never trades away a better allowed match.
    """
    allowed = snapshot.searchable
    if filters is not None and filters.active:
        mask = filters.mask(snapshot.tracks)
        allowed = snapshot.tracks.ids[mask] if allowed is None else np.intersect1d(allowed, snapshot.tracks.ids[mask])
    fetch = k
    if allowed is not None:
        allowed = np.setdiff1d(allowed, np.asarray(exclude, dtype=np.int64))
        if allowed.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
    else:
        fetch = min(k + len(exclude), int(snapshot.indexes.tracks.ntotal))
    scores, ids = snapshot.indexes.search_tracks(query[None, :], fetch, allowed_ids=allowed)
    keep = (ids[0] >= 0) & ~np.isin(ids[0], np.asarray(exclude, dtype=np.int64))
    return ids[0][keep][:k], scores[0][keep][:k]


def best_moment(snapshot: Snapshot, track_id: int, query: np.ndarray) -> Moment | None:
    """The playable span of the track's clip closest to the query (None for a track without segments).

    A moment is always a whole clip inside the track: the last clip of a track that does not divide into
    clips is its tail wrapped around to the track's start, and plays as the track's last clip length;
    a track shorter than a clip has the whole track as its moment.
    """
    segment_ids, starts, ends = snapshot.segments_of.get(track_id, (None, None, None))
    if segment_ids is None or segment_ids.size == 0:
        return None
    scores = snapshot.indexes.segment_vectors(segment_ids) @ query
    best = int(np.argmax(scores))
    clip, track_end = float(np.max(ends - starts)), float(np.max(ends))  # the first clip is a whole one
    start = max(0.0, min(float(starts[best]), track_end - clip))
    return Moment(start=round(start, 3), end=round(min(start + clip, track_end), 3), score=float(scores[best]))


def check_query(text: str, max_chars: int = MAX_QUERY_CHARS) -> str:
    """The query with its whitespace normalised; SearchError for an empty or over-long one."""
    text = " ".join(str(text).split())
    if not text:
        raise SearchError("Type a description of the music you are looking for.")
    if len(text) > max_chars:
        raise SearchError(
            f"The query is {len(text)} characters long; the limit is {max_chars}. "
            "Describe the music in a sentence or two."
        )
    return text


def check_source(source) -> None:
    """SearchError unless ``source`` is a track id or names an existing file (checked before any model loads)."""
    if _as_track_id(source) is None and not Path(source).is_file():
        what = "is a folder, not an audio file" if Path(source).is_dir() else "does not exist"
        raise SearchError(f"{source} {what}: give an audio file or the id of a library track.")


def _as_track_id(source) -> int | None:
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return int(source)
    if isinstance(source, str) and source.strip().isdigit():
        return int(source.strip())
    return None

