"""Text-query latency on the demo world, server-side: `python -m benchmarks query_latency`.

The whole demo library is installed from the prebuilt catalog (no clip embedded) into a temporary home,
as `muqsearch serve` does. Timed per query, each query new to the service (so the text encoder runs):
``SearchService.search`` (embedding, ranking, calibrated confidence, results) and, through the real
server on 127.0.0.1, the ``/search`` endpoint: one plain HTTP POST (``/gradio_api/run/search``, what curl or
any HTTP library sends) and, for comparison, ``gradio_client`` (which joins Gradio's queue and reads its
event stream). Baseline, measured in the same run: the model's own ``embed_text`` on the same queries, the
floor of any text query. Goal (issue 16): p50 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
import urllib.request
from functools import partial

from benchmarks.harness import Report, median, percentile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queries", type=int, default=33, help="distinct queries per path (default 33, at most a third of the set)")


def run(args: argparse.Namespace) -> Report:
    from gradio_client import Client

    from app import choose
    from app.search import SearchService
    from app.ui import app_info, launch
    from evaluation.confidence import QUERIES, read_queries
    from muq_model import MuQMuLan

    texts = [q for q, _ in read_queries(QUERIES)]
    n = min(args.queries, len(texts) // 3)
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
            post = partial(_post_search, url)
            post("warm up: fast flute")
            endpoint = timed(post, texts[n:2 * n])
            client = Client(url, verbose=False, download_files=False)
            client.predict("warm up: fast flute", 10, api_name="/search")
            through_client = timed(lambda q: client.predict(q, 10, api_name="/search"), texts[2 * n:3 * n])
        finally:
            app.close()
            service.close()
    base = median(embed)
    for name, values in (("model.embed_text (baseline)", embed), ("SearchService.search", direct),
                         ("POST /gradio_api/run/search", endpoint), ("/search via gradio_client", through_client)):
        report.add_row(name, len(values), median(values), percentile(values, 95), median(values) / base)
    report.figures = {"search_p50_ms": median(direct), "endpoint_p50_ms": median(endpoint),
                      "gradio_client_p50_ms": median(through_client), "embed_p50_ms": base}
    report.notes.append("each query is new to the service (no query-cache hit); k=10, the demo world's 720 tracks")
    return report


def _post_search(url: str, query: str) -> dict:
    """One plain HTTP POST to the /search endpoint, as curl would send it; the JSON answer."""
    body = json.dumps({"data": [query, 10, False, "", "", "", "", "", "", False]}).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}/gradio_api/run/search", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())
