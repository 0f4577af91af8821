"""Vector search: latency p50/p99, recall@10, build time and bytes per vector of the index kinds in indexer/ann.py.

Two kinds of synthetic 512-d unit vectors: ``random`` (uniform on the sphere: no structure at all, the
worst case for any ANN index) and ``clustered`` (a normalised mixture of Gaussians, closer to real music
embeddings, which gather by genre, instrument and mood). For each size and data: build time, the written
index's bytes per vector, single-query latency at the benchmark's thread count, and recall@10 against exact
search (ground truth computed once per size and data), swept over pq-refine k_factor, HNSW efSearch and
IVF nprobe; "(default)" marks the breadth ``indexer.ann.configure_search`` sets. The baseline is the exact
flat index of the same size in the same run ("vs flat" = its p50 latency over this row's). The kind the
indexer chooses for the size also answers id-restricted (filtered) searches over random shares of the ids,
and over the half of the ids least like each query (a filter that excludes the query's neighbourhood).
Built ANN indexes are cached under benchmarks/results/cache (keyed by data, size, seed and build
settings) because a 1 M HNSW build takes many minutes on 2 cores.

``--text-model`` adds the end-to-end text query: the full-size MuQ-MuLan text tower (random weights; the
XLM-R tokenizer is not available offline, so realistic token ids go straight to ``embed_text_ids``)
followed by a search of the largest index of the chosen kind.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from benchmarks.harness import RESULTS_DIR, Report, peak_rss_mb, percentile
from indexer import ann

CACHE_DIR = RESULTS_DIR / "cache"
K = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--data", nargs="+", choices=("random", "clustered"), default=["random", "clustered"])
    parser.add_argument("--kinds", nargs="+", choices=ann.KINDS, default=list(ann.KINDS),
                        help="flat (the baseline) is always measured")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k-factor", type=int, nargs="+", default=[20, 50, 100, 200],
                        help="pq-refine re-ranked shortlist / k")
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--filter-shares", type=float, nargs="*", default=[0.001, 0.01, 0.1, 0.5],
                        help="id-restricted searches over these shares of the ids, on the kind auto picks")
    parser.add_argument("--avoiding-queries", type=int, default=50,
                        help="queries filtered to the half of the ids least like each (0 = skip)")
    parser.add_argument("--queries", type=int, default=300, help="single queries timed per setting")
    parser.add_argument("--recall-queries", type=int, default=300, help="queries whose recall@10 is measured")
    parser.add_argument("--clusters", type=int, default=2000, help="mixture components of the clustered data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true", help="build every index afresh")
    parser.add_argument(
        "--text-model", action="store_true", help="also time a full text query with the full-size text tower"
    )


# --- data -------------------------------------------------------------------------------------------


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_vectors(kind: str, n: int, dim: int, *, seed: int, clusters: int, stream: int = 0) -> np.ndarray:
    """n unit vectors; ``stream`` 0 is the database, 1 the queries (same distribution, different draws)."""
    rng = np.random.default_rng([seed, stream, n])
    if kind == "random":
        return unit_rows(rng.standard_normal((n, dim), dtype=np.float32))
    centres = unit_rows(np.random.default_rng([seed, 99]).standard_normal((clusters, dim), dtype=np.float32))
    # Per-dimension noise 1.2/sqrt(d): a point's cosine to its centre is about 0.65, like tracks of one style.
    noise = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(1.2 / np.sqrt(dim))
    return unit_rows(centres[rng.integers(0, clusters, size=n)] + noise)


# --- measuring --------------------------------------------------------------------------------------


def measure(search, queries: np.ndarray, truth: np.ndarray, *, repeats: int) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms, CPU p50 ms, recall@10) of ``search(queries) -> ids``, one query at a time.

    The CPU time (all threads of this process) is reported beside the wall clock because on a shared
    machine a query's wall time includes the time slices other processes took.
    """
    search(queries[:1])  # warm-up: first-touch page faults and thread-pool start belong to no query
    wall, cpu = [], []
    for q in queries[:repeats]:
        start, start_cpu = time.perf_counter(), time.process_time()
        search(q[None, :])
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    found = search(queries[: len(truth)])
    recall = float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))
    return percentile(wall, 50), percentile(wall, 99), percentile(cpu, 50), recall


def cached_build(kind: str, vectors: np.ndarray, key: str, *, seed: int, use_cache: bool) -> tuple[faiss.Index, float, float]:
    """(index, build seconds, bytes per vector of the written index); a cached index reports the build time it saved."""
    settings = {
        "pq-refine": f"pq{ann.PQ_DIMS_PER_CODE}d{ann.PQ_BITS}b-l{ann.PQ_REFINE_LISTS}", "hnsw": f"M{ann.HNSW_M}-efc{ann.HNSW_EF_CONSTRUCTION}",
        "ivf": f"l{ann.IVF_TRAIN_POINTS_PER_LIST}",
    }
    path = CACHE_DIR / f"{key}-{kind}-{settings.get(kind, '')}.faiss"
    seconds_file = path.with_suffix(".seconds")
    if use_cache and path.exists() and seconds_file.exists():
        index = faiss.read_index(str(path))
        ann.configure_search(index)
        return index, float(seconds_file.read_text()), path.stat().st_size / index.ntotal
    start = time.perf_counter()
    index = ann.build_index(vectors, np.arange(len(vectors), dtype=np.int64), kind, seed=seed)
    seconds = time.perf_counter() - start
    if use_cache:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(path))
        seconds_file.write_text(f"{seconds}\n")
        return index, seconds, path.stat().st_size / index.ntotal
    return index, seconds, written_bytes(index) / index.ntotal


def written_bytes(index: faiss.Index) -> int:
    """Size of the index as ``faiss.write_index`` stores it (what a library generation holds on disk)."""
    with tempfile.TemporaryDirectory(dir=CACHE_DIR.parent) as directory:
        path = Path(directory) / "index.faiss"
        faiss.write_index(index, str(path))
        return path.stat().st_size


def settings_for(kind: str, index: faiss.Index, args: argparse.Namespace):
    """(label, search function) for each search breadth of the sweep; the index is left at its default."""
    sweeps = {
        "pq-refine": ("k_factor", args.k_factor, ann.DEFAULT_K_FACTOR, "k_factor"),
        "hnsw": ("efSearch", args.ef_search, ann.DEFAULT_EF_SEARCH, "ef_search"),
        "ivf": ("nprobe", args.nprobe, ann.DEFAULT_NPROBE, "nprobe"),
    }
    if kind not in sweeps:
        yield "exact", lambda q: ann.search(index, q, K)[1]
        return
    name, values, default, keyword = sweeps[kind]
    for value in sorted(set(values) | {default}):
        ann.configure_search(index, **{keyword: value})
        label = f"{name}={value}" + (f"/{faiss.extract_index_ivf(index).nlist}" if kind == "ivf" else "")
        yield label + (" (default)" if value == default else ""), lambda q: ann.search(index, q, K)[1]
    ann.configure_search(index)


def progress(report: Report) -> None:
    """Each row as it is measured (stderr): a 1 M run takes long enough to want them early."""
    print("  ".join(str(v) for v in report.rows[-1]), file=sys.stderr, flush=True)


def measure_filtered(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, share: float, args: argparse.Namespace
) -> tuple[float, float, float, float]:
    """Search restricted to a random ``share`` of the ids (a metadata filter), against exact search among them."""
    allowed = np.sort(np.random.default_rng(args.seed).choice(len(vectors), size=max(K, int(share * len(vectors))),
                                                              replace=False))
    _, positions = faiss.knn(queries[: args.recall_queries], vectors[allowed], K, metric=faiss.METRIC_INNER_PRODUCT)
    return measure(
        lambda q: ann.search(index, q, K, allowed_ids=allowed)[1], queries, allowed[positions], repeats=args.queries
    )


def measure_avoiding_filter(
    index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, args: argparse.Namespace
) -> tuple[float, float, float, float]:
    """Each query restricted to the half of the ids least like it (a filter that excludes its neighbourhood),
    against exact search among them: the worst case for any shortlist."""
    wall, cpu, recalls = [], [], []
    for q in queries[: args.avoiding_queries]:
        scores = vectors @ q
        allowed = np.sort(np.argpartition(scores, len(scores) // 2)[: len(scores) // 2])
        truth = allowed[np.argsort(-scores[allowed])[:K]]
        start, start_cpu = time.perf_counter(), time.process_time()
        found = ann.search(index, q[None, :], K, allowed_ids=allowed)[1][0]
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
        recalls.append(len(set(found) & set(truth)) / K)
    return percentile(wall, 50), percentile(wall, 99), percentile(cpu, 50), float(np.mean(recalls))


def run(args: argparse.Namespace) -> Report:
    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    report = Report(
        "search",
        ["data", "n", "kind", "setting", "build s", "bytes/vector", "p50 ms", "p99 ms", "cpu p50 ms", "recall@10",
         "vs flat"],
    )
    chosen, largest = [], None
    for data in args.data:
        for n in args.sizes:
            if n == max(args.sizes):
                largest = None  # kept for the text query: only the last one, so two never share memory
            vectors = make_vectors(data, n, args.dim, seed=args.seed, clusters=args.clusters)
            queries = make_vectors(
                data, max(args.queries, args.recall_queries), args.dim, seed=args.seed, clusters=args.clusters,
                stream=1,
            )
            start = time.perf_counter()
            _, truth = faiss.knn(queries[: args.recall_queries], vectors, K, metric=faiss.METRIC_INNER_PRODUCT)
            print(f"{data} {n}: exact ground truth for {args.recall_queries} queries in "
                  f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
            key = f"{data}-n{n}-d{args.dim}-s{args.seed}" + (f"-c{args.clusters}" if data == "clustered" else "")
            flat_p50 = None
            for kind in ["flat"] + [k for k in args.kinds if k != "flat"]:
                index, build_s, bytes_per_vector = cached_build(
                    kind, vectors, key, seed=args.seed, use_cache=not args.no_cache and kind != "flat"
                )
                for label, search in settings_for(kind, index, args):
                    p50, p99, cpu_p50, recall = measure(search, queries, truth, repeats=args.queries)
                    flat_p50 = p50 if kind == "flat" else flat_p50
                    report.add_row(data, n, kind, label, build_s, bytes_per_vector, p50, p99, cpu_p50, recall,
                                   flat_p50 / p50)
                    progress(report)
                    if kind == ann.index_kind_for(n) and (kind == "flat" or "(default)" in label):
                        chosen.append({"data": data, "n": n, "kind": kind, "p50_ms": p50, "p99_ms": p99,
                                       "recall@10": recall, "vs_flat": flat_p50 / p50, "build_s": build_s,
                                       "bytes_per_vector": bytes_per_vector})
                if kind == ann.index_kind_for(n):
                    for share in args.filter_shares:
                        p50, p99, cpu_p50, recall = measure_filtered(index, vectors, queries, share, args)
                        report.add_row(data, n, kind, f"filter {share:g} (default breadth)", build_s,
                                       bytes_per_vector, p50, p99, cpu_p50, recall, flat_p50 / p50)
                        progress(report)
                    if args.avoiding_queries:
                        p50, p99, cpu_p50, recall = measure_avoiding_filter(index, vectors, queries, args)
                        report.add_row(data, n, kind, "filter 0.5 avoiding the query", build_s, bytes_per_vector,
                                       p50, p99, cpu_p50, recall, flat_p50 / p50)
                        progress(report)
                if kind == ann.index_kind_for(n) and n == max(args.sizes):
                    largest = index
                index = search = None  # free it (the search closure holds it too) before the next build
            vectors = None
    report.figures = {
        "threads": threads, "k": K, "dim": args.dim, "exact_limit": ann.EXACT_LIMIT,
        "default_k_factor": ann.DEFAULT_K_FACTOR, "chosen_kind_at_default_breadth": chosen,
        "load_average_at_end": os.getloadavg(), "peak_rss_mb": peak_rss_mb(),
    }
    report.notes.append(
        f"single-query latency at {threads} faiss threads; recall@10 over {args.recall_queries} queries "
        "against exact inner-product search; clustered = normalised mixture of "
        f"{args.clusters} Gaussians (cosine to centre ~0.65); bytes/vector = size of the written index / n"
    )
    for row in chosen:
        report.notes.append(
            f"chosen for {row['n']:,} {row['data']}: {row['kind']}, p50 {row['p50_ms']:.2f} ms, recall@10 "
            f"{row['recall@10']:.3f}, {row['vs_flat']:.1f}x flat's speed"
        )
    report.notes.append(f"load average at the end (cores shared with other work): {os.getloadavg()[0]:.1f}")
    if args.text_model and largest is not None:
        text_query_rows(report, largest, args)
    return report


def text_query_rows(report: Report, index: faiss.Index, args: argparse.Namespace) -> None:
    """Full text query = the full-size text tower on realistic token ids, then a search of the largest index."""
    from muq_model import MuQMuLan, MuQMuLanConfig

    start = time.perf_counter()
    model = MuQMuLan(MuQMuLanConfig.large(), tokenizer=None).eval()  # random weights: same cost as the real ones
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(args.seed)
    # A query like "melancholic solo piano for a rainy night" is 8-20 XLM-R tokens with <s> ... </s>;
    # ids drawn from the ordinary-word range of the 250k vocabulary.
    queries = [
        torch.tensor([[0, *rng.integers(1000, 60000, size=rng.integers(6, 19)).tolist(), 2]]) for _ in range(52)
    ]
    rows = {"text tower": ([], []), "text tower + search": ([], [])}
    for i, ids in enumerate(queries):
        start, start_cpu = time.perf_counter(), time.process_time()
        vector = model.embed_text_ids(ids).numpy()
        mid, mid_cpu = time.perf_counter(), time.process_time()
        ann.search(index, vector, K)
        end, end_cpu = time.perf_counter(), time.process_time()
        if i >= 2:  # the first calls warm up the allocator
            rows["text tower"][0].append((mid - start) * 1e3)
            rows["text tower"][1].append((mid_cpu - start_cpu) * 1e3)
            rows["text tower + search"][0].append((end - start) * 1e3)
            rows["text tower + search"][1].append((end_cpu - start_cpu) * 1e3)
    for label, (wall, cpu) in rows.items():
        report.add_row(
            "text query", index.ntotal, ann.index_kind(index), label, build_s, "-", percentile(wall, 50),
            percentile(wall, 99), percentile(cpu, 50), "-", "-",
        )
    report.figures["text_query_ms_p50"] = percentile(rows["text tower + search"][0], 50)
    report.figures["text_query_cpu_ms_p50"] = percentile(rows["text tower + search"][1], 50)
    report.figures["peak_rss_mb"] = peak_rss_mb()
    report.notes.append(
        "text query: MuQ-MuLan-large text tower (XLM-R base + 8-layer MuLan transformer, random weights) on "
        "8-20 token ids; build s = model construction"
    )
