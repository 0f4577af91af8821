"""Text-query latency on the demo world, server-side: `python -m benchmarks query_latency`.

The whole demo library is installed from the prebuilt catalog (no clip embedded) into a temporary home,
as `muqsearch serve` does. Timed per query, each query new to the service (so the text encoder runs):
``SearchService.search`` (embedding, ranking, calibrated confidence, results) and, through the real
server on 127.0.0.1, the ``/search`` endpoint (Gradio's queue and JSON included). Baseline, measured in the
same run: the model's own ``embed_text`` on the same queries, the floor of any text query. Goal (issue
16): p50 <= 50 ms.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

from benchmarks.harness import Report, median, percentile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", type=int, default=40, help="distinct queries per path (default 40)")


def run(args: argparse.Namespace) -> Report:
    from gradio_client import Client

    from app import choose
    from app.search import SearchService
    from app.ui import app_info, launch
    from evaluation.confidence import QUERIES, read_queries
    from muq_model import MuQMuLan

    texts = [q for q, _ in read_queries(QUERIES)]
    n = min(args.queries, len(texts) // 2)
    report = Report("query_latency", ["path", "queries", "p50 ms", "p95 ms", "p50 vs embed_text"])
    with tempfile.TemporaryDirectory() as home:
        os.environ["XDG_DATA_HOME"] = home
        os.environ.pop("MUQSEARCH_LIBRARY", None)
        setup = choose.resolve(None, None)
        model = MuQMuLan.from_pretrained(setup.model).eval()
        choose.index_if_needed(setup, model, setup.model, progress=False)
        service = SearchService(setup.library_dir, model, model_name=setup.model)
        service.search("warm up: slow piano", 10)  # the calibration and the first forward pass

        def timed(fn, items) -> list[float]:
            out = []
            for item in items:
                started = time.perf_counter()
                fn(item)
                out.append((time.perf_counter() - started) * 1000)
            return out

        embed = timed(lambda q: model.embed_text([q]), texts[:n])
        direct = timed(lambda q: service.search(q, 10), texts[:n])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app, url = launch(service, app_info(setup), port=port, block=False, quiet=True)
        try:
            client = Client(url, verbose=False, download_files=False)
            client.predict("warm up: fast flute", 10, api_name="/search")
            endpoint = timed(lambda q: client.predict(q, 10, api_name="/search"), texts[n:2 * n])
        finally:
            app.close()
            service.close()
    base = median(embed)
    for name, values in (("model.embed_text (baseline)", embed), ("SearchService.search", direct),
                         ("/search endpoint", endpoint)):
        report.add_row(name, len(values), median(values), percentile(values, 95), median(values) / base)
    report.figures = {"search_p50_ms": median(direct), "endpoint_p50_ms": median(endpoint), "embed_p50_ms": base}
    report.notes.append("each query is new to the service (no query-cache hit); k=10, the demo world's 720 tracks")
    return report
