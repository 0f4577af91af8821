"""`muqsearch search | similar | describe | texts | serve | demo`: the CLI face of app.search.

Each command opens the same SearchService the web UI uses, so every UI feature can be scripted.
Heavy imports (torch, faiss, gradio) happen inside run_<name>() so `muqsearch --help` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from muq_model.identity import canonical_model_name

DEFAULT_K = 10


# --------------------------------------------------------------------------------------------------
# Shared plumbing


def _fail(command: str, message: str) -> int:
    """Exit status 2: the command cannot run as asked (see the convention in app/cli.py)."""
    print(f"muqsearch {command}: {message}", file=sys.stderr)
    return 2


def _open_service(args, *, index: bool = False):
    """(service, setup) for the library and model the global options (or defaults) name. `index`: bring the
    library up to date with its folders (serve, demo); the other commands set the demo library up only when
    it is missing or made by another model."""
    from app import choose
    from app.search import SearchService, ServiceLimits
    from muq_model import MuQMuLan
    from muq_model.identity import made_in_precision
    from muq_model.runtime import resolve_precision, select_device

    setup = choose.resolve(args.library, args.model)
    setup = dataclasses.replace(setup, model=canonical_model_name(setup.model))
    device, stored = select_device(args.device), choose.library_fingerprint(setup.library_dir)
    precision = resolve_precision(args.precision, device, stored and made_in_precision(stored))
    model = MuQMuLan.from_pretrained(setup.model, device=device, precision=precision).eval()
    if index:
        choose.index_if_needed(setup, model, setup.model)
    elif not choose.demo_library_fits(setup, stored, model):  # a first search before any serve, or a new demo model
        choose.index_if_needed(setup, model, setup.model, notes=sys.stderr)
    limits = ServiceLimits()
    if getattr(args, "max_upload_mb", None):
        limits.max_upload_bytes = int(args.max_upload_mb * 2**20)
    return SearchService(setup.library_dir, model, model_name=setup.model, limits=limits), setup


def _add_result_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", type=int, default=DEFAULT_K, help=f"how many results (default {DEFAULT_K})")
    parser.add_argument("--moments", action="store_true", help="also give each track's best 10 s (start/end)")
    parser.add_argument(
        "--filter", action="append", default=[], metavar="KEY=VALUE",
        help="artist=TEXT, album=TEXT, year=1990..1999, duration=60..300 (seconds), tag=NAME; repeatable",
    )
    parser.add_argument("--m3u", metavar="OUT", help="also write the results as an M3U playlist")
    parser.add_argument("--export", metavar="OUT", help="also write the results as .m3u, .csv or .json (by extension)")


def _print_results(args, results, heading: str, no_match, *, answer=None) -> int:
    """Print (and export) the results; no result exits with status 1 and says why on stderr (like grep).
    A text query's ``answer`` (app.search.Answer) carries its verdict and what was searched for: `--json`
    prints {"verdict", "searched_for", "avoided", "corrections", "results"}, the text output says which words
    were corrected and "no good match" above results that fit no better than unrelated texts."""
    from app import export
    from app.search import VERDICT_WORDS

    if args.m3u:
        export.write(results, args.m3u, "m3u")
    if args.export:
        export.write(results, args.export)
    if args.json:
        out = answer.to_dict() if answer else [r.to_dict() for r in results]
        print(json.dumps(out, indent=2, ensure_ascii=False))
    if not results:
        print(no_match(), file=sys.stderr)
        return 1
    if args.json:
        return 0
    print(heading)
    if answer:
        if answer.corrections:
            print(answer.note(), "Use --exact to search the words as typed.")
        name, meaning = VERDICT_WORDS[answer.verdict]
        print(f"Verdict: {name}" + (f": {meaning}." if meaning else "."))
    for rank, r in enumerate(results, 1):
        who = f" — {r.artist}" if r.artist else ""
        moment = f"  [{r.moment.start:g}–{r.moment.end:g} s]" if r.moment else ""
        confidence = f"  confidence {r.confidence:.2f}" if r.confidence is not None else ""
        print(f"{rank:3d}. {r.score:6.3f}  {r.title}{who}{moment}{confidence}\n      {r.path}")
    return 0


def _check_inputs(args, *, query: str | None = None, source: str | None = None) -> None:
    """Refuse a bad question before the model loads (seconds): an empty or over-long query, a k out of
    range, an audio file that is not there. Filters are parsed by the caller, also before loading."""
    from app.search import MAX_K, check_query, check_source

    if query is not None:
        check_query(query)
    if source is not None:
        check_source(source)
    if hasattr(args, "k") and not 1 <= args.k <= MAX_K:
        from app.search import SearchError

        raise SearchError(f"-k must be between 1 and {MAX_K}, got {args.k}")


def _run(command: str, body) -> int:
    """Run body(); user-facing errors become one line on stderr and exit status 2, never a traceback."""
    from app.choose import SetupError
    from app.filters import FilterError
    from app.search import SearchError
    from app.texts import TextsError
    from indexer.vectors import LibraryError

    try:
        return int(body() or 0)
    except (SearchError, FilterError, SetupError, TextsError, LibraryError, OSError, ValueError) as exc:
        return _fail(command, str(exc))


# --------------------------------------------------------------------------------------------------
# search / similar / describe


def add_arguments_search(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help='a description, e.g. "melancholic solo piano for a rainy night"')
    _add_result_options(parser)
    parser.add_argument("--like", action="append", default=[], metavar="ID_OR_FILE",
                        help="also sound like this library track or audio file (repeatable; never returned)")
    parser.add_argument("--not", dest="avoid", action="append", default=[], metavar="TEXT",
                        help="but not like this description (repeatable)")
    parser.add_argument("--weights", metavar="K=V,...",
                        help="composition weights text, like, avoid (default 1, 1, 0.5), e.g. like=0.5")
    parser.add_argument("--exact", action="store_true",
                        help="search the words as typed: no spelling correction against the model's caption words")


def run_search(args) -> int:
    return _run_ranked("search", args, f"Tracks matching “{args.query}”:", query=args.query)


def add_arguments_similar(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FILE_OR_TRACK_ID", help="an audio file, or the id of a library track")
    _add_result_options(parser)


def run_similar(args) -> int:
    return _run_ranked("similar", args, f"Tracks that sound like {args.source}:", source=args.source)


def _run_ranked(command: str, args, heading: str, *, query: str | None = None, source: str | None = None) -> int:
    """`search` (a query) or `similar` (a source): filters and inputs checked, then the ranked tracks."""
    def body():
        from app.filters import Filters

        filters = Filters.parse(args.filter)
        _check_inputs(args, query=query, source=source)
        weights = None
        if query is not None:
            from app.search import check_query, check_source, parse_weights

            for reference in args.like:
                check_source(reference)
            for text in args.avoid:
                check_query(text)
            weights = parse_weights(args.weights or "")
        service, _ = _open_service(args)
        answer = None
        if query is not None:
            answer = service.answer(query, args.k, filters=filters, moments=args.moments, like=args.like,
                                    avoid=args.avoid, weights=weights, exact=args.exact)
            results = answer.results
        else:
            results = service.similar(source, args.k, filters=filters, moments=args.moments)
        return _print_results(args, results, heading, lambda: service.no_match_message(filters), answer=answer)

    return _run(command, body)


def add_arguments_describe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="FILE_OR_TRACK_ID", help="an audio file, or the id of a library track")
    parser.add_argument("-k", type=int, default=DEFAULT_K, help=f"how many tags/descriptions (default {DEFAULT_K})")
    parser.add_argument("--similar", type=int, default=5, metavar="N", help="also list N similar library tracks")


def run_describe(args) -> int:
    def body():
        _check_inputs(args, source=args.source)
        service, _ = _open_service(args)
        description = service.describe(args.source, args.k, similar_k=args.similar)
        if args.json:
            print(json.dumps(description.to_dict(), indent=2, ensure_ascii=False))
            return
        print(description.source)
        if description.note:
            print(f"note: {description.note}")
        print("\nTags:")
        for t in description.tags:
            print(f"  {t.score:6.3f}  {t.text}  ({t.category})")
        if description.descriptions:
            print("\nDescriptions:")
            for d in description.descriptions:
                print(f"  {d.score:6.3f}  {d.text}  [{d.collection}]")
        if description.similar:
            print("\nSimilar tracks:")
            for r in description.similar:
                print(f"  {r.score:6.3f}  {r.title}{' — ' + r.artist if r.artist else ''}  (#{r.track_id})")

    return _run("describe", body)


# --------------------------------------------------------------------------------------------------
# texts


def add_arguments_texts(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="texts_action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="embed a file of descriptions (one per line, or a JSON list)")
    add.add_argument("file", metavar="FILE")
    add.add_argument("--name", help="collection name (default: the file name without extension)")
    add.add_argument("--replace", action="store_true", help="replace a collection of the same name")
    actions.add_parser("list", help="list the text collections")
    remove = actions.add_parser("remove", help="delete a text collection")
    remove.add_argument("name")


def run_texts(args) -> int:
    def body():
        from app import texts

        if args.texts_action == "add":
            texts.read_collection_file(args.file)  # a missing or malformed file fails before the model loads
        service, _ = _open_service(args)
        catalog = service.library.catalog
        if args.texts_action == "add":
            info = texts.add_collection(catalog, service.model, args.file, args.name, replace=args.replace)
            print(json.dumps(info.to_dict()) if args.json else f"added {info.count} texts as collection {info.name!r}")
        elif args.texts_action == "remove":
            texts.remove_collection(catalog, args.name)
            print(f"removed collection {args.name!r}")
        else:
            collections = [c for c in texts.list_collections(catalog, service.model.fingerprint())
                           if not c.name.startswith(texts.RESERVED_PREFIX)]
            if args.json:
                print(json.dumps([c.to_dict() for c in collections], indent=2))
            elif not collections:
                print("no text collections yet: add one with `muqsearch texts add FILE`")
            else:
                for c in collections:
                    print(f"{c.name}\t{c.count} texts\t{c.description or ''}")

    return _run("texts", body)


# --------------------------------------------------------------------------------------------------
# serve / demo


def add_arguments_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860; the next free one if taken)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="require this login for the page and the API")
    parser.add_argument("--max-upload-mb", type=float, default=100.0, help="largest accepted upload (default 100)")


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth must look like USER:PASSWORD, both non-empty")
    return user, password


def run_serve(args) -> int:
    def body():
        from app import ui

        auth = parse_auth(args.auth)
        service, setup = _open_service(args, index=True)
        info = ui.app_info(setup)
        if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
            print(f"warning: serving on {args.host} without --auth: anyone who can reach this port can search "
                  "and play your library", file=sys.stderr)
        app, url = ui.launch(service, info, host=args.host, port=args.port, auth=auth, block=False, quiet=True)
        print(f"MuQ Search on {url}  (model: {setup.model}; library: {setup.library_dir})"
              + ("; login required" if auth else "") + "\nCtrl+C stops it.", flush=True)
        app.block_thread()

    return _run("serve", body)


def add_arguments_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-k", type=int, default=3, help="results per example query (default 3)")


def run_demo(args) -> int:
    def body():
        from app import choose

        service, setup = _open_service(args, index=True)
        print(choose.notice(setup, setup.model).replace("**", "").replace("`", ""), "\n")
        examples = setup.demo.examples if setup.demo and setup.demo.examples else ()
        if not examples:
            print("This library has no example queries; try `muqsearch search \"slow sad piano\"`.")
        for query in examples:
            results = service.search(query, args.k)
            print(f"“{query}”")
            for r in results:
                print(f"   {r.score:6.3f}  {r.title}{' — ' + r.artist if r.artist else ''}")
        print("\nOpen the web UI with `muqsearch serve`.")

    return _run("demo", body)
