"""What a library holds: the one status report, shown by `muqsearch status`, the page's Library tab
and the API (the search service adds what only a running model knows)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from indexer import ann
from indexer.autotag import vocabulary_info
from indexer.catalog import IndexRun
from indexer.domain import DomainReport, check_library, declared_domain
from muq_model.spelling import read_caption_words

_LIBRARY_MODEL = object()  # domain default: the one the library's recorded model declares


def library_status(library, *, check_index: bool = True, domain: DomainReport | None | object = _LIBRARY_MODEL) -> dict:
    """Counts, errors, model, index and its sizes, the last run, as a JSON-ready dict.

    ``check_index=False`` skips comparing the index with the catalog (``consistent`` and ``problems`` are
    None then): the page refreshes its status often. ``domain`` replaces the domain check of the library's
    recorded model (the search service passes the running model's, checked once per generation).
    """
    catalog = library.catalog
    counts = catalog.counts()
    consistency = library.check() if check_index else None
    generation_dir = library.generation_dir(library.generation)
    sizes = {"catalog": _size(Path(catalog.url.removeprefix("sqlite:///")))}
    for kind in ("tracks", "segments"):
        sizes[f"{kind}_index"] = _size(generation_dir / f"{kind}.faiss")
    index_type = catalog.get_meta("index_type")
    advised = ann.index_kind_for(counts["tracks"])
    advice = None
    if index_type and index_type != advised:
        advice = f"{counts['tracks']} tracks: a {advised} index would suit better; run `muqsearch index --optimize`"
    with catalog.session() as s:
        run = s.scalar(select(IndexRun).order_by(IndexRun.id.desc()).limit(1))
        last_run = None if run is None else {
            "id": run.id, "status": run.status, "started": run.started.isoformat(timespec="seconds"),
            "indexed": run.indexed, "skipped": run.skipped, "failed": run.failed, "removed": run.removed,
        }
    errors = [e.to_dict() for e in catalog.errors()]
    model = catalog.get_meta("model_name")
    if domain is _LIBRARY_MODEL:
        domain = check_library(catalog, declared_domain(model)) if model else None
    return {
        "library": str(library.directory),
        "tracks": counts["tracks"],
        "segments": counts["segments"],
        "audio_hours": round(counts["audio_seconds"] / 3600, 4),
        "errors": len(errors),
        "error_list": errors,
        "model": model,
        "domain": domain and domain.to_dict(),
        "vocabulary": vocabulary_info(model) if model else None,  # what its auto-tags are drawn from
        # words its queries are spell-corrected against (muq_model.spelling); 0: searched as typed
        "spelling_words": len(read_caption_words(model)) if model and Path(model).is_dir() else 0,
        "fingerprint": catalog.fingerprint,
        "index_type": index_type,
        "segment_index_type": catalog.get_meta("segment_index_type"),
        "generation": library.generation,
        "sizes_bytes": sizes,
        "consistent": None if consistency is None else consistency.ok,
        "problems": None if consistency is None else consistency.problems,
        "advice": advice,
        "last_run": last_run,
    }


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
