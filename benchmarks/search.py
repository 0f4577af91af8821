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

Sizes at which the indexer picks ``pq-disk`` (from ``indexer.ann.IN_MEMORY_LIMIT``, 2 M) are streamed:
the vectors are generated in chunks from the seed and written to disk by the index build as they pass,
while the exact top 10 of every query (and of every filter) is merged chunk by chunk, so the benchmark
holds a chunk, the codes and the answers, never the vectors. Its exact baseline scans the memory-mapped
vectors file chunk by chunk (a few queries: seconds each). The index, its vectors and the ground truth are
cached under ``--scratch`` so that the latency part can be rerun alone (e.g. when the machine was busy).

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

from benchmarks.harness import RESULTS_DIR, AnonymousPeak, Report, peak_rss_mb, percentile
from indexer import ann

CACHE_DIR = RESULTS_DIR / "cache"
K = 10
STREAM_CHUNK = 100_000  # rows generated at a time for the streamed (pq-disk) sizes: 200 MB at 512-d


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
    parser.add_argument("--scratch", type=Path, default=CACHE_DIR,
                        help="where streamed sizes write their index, vectors file (2 KB a vector) and ground truth")
    parser.add_argument("--flat-queries", type=int, default=5,
                        help="queries timed for the exact baseline of streamed sizes (a full scan of the file each; "
                        "0 = skip)")
    parser.add_argument(
        "--text-model", action="store_true", help="also time a full text query with the full-size text tower"
    )


# --- data -------------------------------------------------------------------------------------------


def unit_rows(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_vectors(kind: str, n: int, dim: int, *, seed: int, clusters: int, stream: int = 0) -> np.ndarray:
    """n unit vectors; ``stream`` 0 is the database, 1 the queries (same distribution, different draws)."""
    return draw(kind, np.random.default_rng([seed, stream, n]), n, dim, seed=seed, clusters=clusters)


def vector_chunk(kind: str, n: int, dim: int, chunk: int, *, seed: int, clusters: int) -> np.ndarray:
    """Rows chunk * STREAM_CHUNK onwards of the streamed database of n vectors (each chunk its own draw)."""
    rows = min(STREAM_CHUNK, n - chunk * STREAM_CHUNK)
    return draw(kind, np.random.default_rng([seed, 0, n, chunk]), rows, dim, seed=seed, clusters=clusters)


def draw(kind: str, rng: np.random.Generator, n: int, dim: int, *, seed: int, clusters: int) -> np.ndarray:
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
    recall = recall_of(search(queries[: len(truth)]), truth)
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
        "pq-disk": ("k_factor", args.k_factor, ann.DISK_K_FACTOR, "k_factor"),
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
        if kind == "pq-disk":
            label += f" nprobe={index.base.nprobe}/{index.base.nlist} (calibrated)"
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
    report.figures["streamed"] = []
    chosen, largest = [], None
    for data in args.data:
        for n in args.sizes:
            if ann.index_kind_for(n) == "pq-disk":
                streamed_rows(report, data, n, args)
                continue
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


def streamed_rows(report: Report, data: str, n: int, args: argparse.Namespace) -> None:
    """The pq-disk rows for n vectors that never sit in RAM together: build (or reuse) the index from
    generated chunks with the exact answers merged on the way, then time it like the in-RAM sizes."""
    key = f"{data}-n{n}-d{args.dim}-s{args.seed}" + (f"-c{args.clusters}" if data == "clustered" else "")
    path = args.scratch / f"{key}-pq-disk.faiss"
    truth_path = path.with_suffix(".truth.npz")
    queries = make_vectors(data, max(args.queries, args.recall_queries), args.dim, seed=args.seed,
                           clusters=args.clusters, stream=1)
    shares = sorted(args.filter_shares)
    filters = [np.sort(np.random.default_rng([args.seed, 7, i]).choice(n, size=max(K, int(share * n)), replace=False))
               for i, share in enumerate(shares)]
    if args.no_cache or not (truth_path.exists() and path.with_suffix(ann.VECTORS_SUFFIX).exists()):
        build_streamed(data, n, args, path, queries[: args.recall_queries], filters)
    saved = np.load(truth_path)
    with AnonymousPeak() as searching:  # the anonymous memory that reading and searching the index need
        index = ann.read_index(path)
        ann.configure_search(index)
        build_s, build_rss_mb = float(saved["build_s"]), float(saved["build_peak_rss_mb"])
        build_anon_mb = float(saved["build_peak_anon_mb"]) if "build_peak_anon_mb" in saved else float("nan")
        ram_bytes = path.stat().st_size / n  # the codes and ids read into RAM
        disk_bytes = ram_bytes + path.with_suffix(ann.VECTORS_SUFFIX).stat().st_size / n
        truth, filter_truths = saved["truth"], [saved[f"filter{i}"] for i in range(len(shares))]

        wall, found = [], []
        for q in queries[: args.flat_queries]:
            start = time.perf_counter()
            found.append(exact_scan(index.vectors, q)[1])
            wall.append((time.perf_counter() - start) * 1e3)
        flat_p50 = percentile(wall, 50) if wall else float("nan")
        if wall:
            report.add_row(data, n, "flat", f"exact, streamed from the vectors file ({len(wall)} queries)", 0.0,
                           disk_bytes - ram_bytes, flat_p50, percentile(wall, 99), float("nan"),
                           recall_of(np.stack(found), truth[: len(found)]), 1.0)
            progress(report)
        for label, search in settings_for("pq-disk", index, args):
            p50, p99, cpu_p50, recall = measure(search, queries, truth, repeats=args.queries)
            report.add_row(data, n, "pq-disk", label, build_s, f"{ram_bytes:.0f} RAM + {disk_bytes - ram_bytes:.0f} disk",
                           p50, p99, cpu_p50, recall, flat_p50 / p50)
            progress(report)
            if "(default)" in label:
                report.figures["streamed"].append({
                    "data": data, "n": n, "kind": "pq-disk", "p50_ms": p50, "p99_ms": p99, "cpu_p50_ms": cpu_p50,
                    "recall@10": recall, "vs_flat": flat_p50 / p50, "build_s": build_s, "build_peak_rss_mb": build_rss_mb,
                    "ram_bytes_per_vector": ram_bytes, "disk_bytes_per_vector": disk_bytes,
                    "nprobe": index.base.nprobe, "nlist": index.base.nlist, "load_average": os.getloadavg(),
                })
        report.add_row(data, n, "pq-disk", "re-ranked from float16 copies (recall only)", build_s, "-", float("nan"),
                       float("nan"), float("nan"), recall_of(float16_reranked(index, queries[: len(truth)]), truth), "-")
        progress(report)
        for share, allowed, filter_truth in zip(shares, filters, filter_truths, strict=True):
            p50, p99, cpu_p50, recall = measure(lambda q, allowed=allowed: ann.search(index, q, K, allowed_ids=allowed)[1],
                                                queries, filter_truth, repeats=args.queries)
            report.add_row(data, n, "pq-disk", f"filter {share:g} (default breadth)", build_s, "-", p50, p99, cpu_p50,
                           recall, flat_p50 / p50)
            progress(report)
    for entry in report.figures["streamed"]:
        if entry["data"] == data and entry["n"] == n:
            entry.update(build_peak_anon_mb=build_anon_mb, search_peak_anon_mb=searching.mb)
    report.notes.append(
        f"{data} {n:,}: pq-disk built in {build_s:.0f} s (peak RSS {build_rss_mb:,.0f} MB while streaming, of it "
        f"anonymous memory at most {build_anon_mb:,.0f} MB), {ram_bytes:.0f} bytes/vector in RAM, {disk_bytes:.0f} "
        f"on disk; while searching, anonymous memory peaked at {searching.mb:,.0f} MB (the RSS, "
        f"{peak_rss_mb():,.0f} MB at its peak, also counts the vectors file pages the re-ranking touched, which "
        "the kernel drops under memory pressure); no 'avoiding' filter row (it needs every vector's score)"
    )


def build_streamed(data: str, n: int, args: argparse.Namespace, path: Path, queries: np.ndarray,
                   filters: list[np.ndarray]) -> None:
    """Build pq-disk at ``path`` from generated chunks, merging each query's (and filter's) exact top 10 on
    the way; save the answers, build time and peak RSS beside it."""
    args.scratch.mkdir(parents=True, exist_ok=True)
    chunks = -(-n // STREAM_CHUNK)
    train = ann.disk_train_size(n)
    sample = np.concatenate([vector_chunk(data, n, args.dim, c, seed=args.seed, clusters=args.clusters)
                             for c in range(-(-train // STREAM_CHUNK))])[:train]
    best = [empty_top(len(queries))] + [empty_top(len(queries)) for _ in filters]
    start_s = time.perf_counter()
    not_building = [0.0]  # seconds spent generating chunks and finding exact answers: not the index's

    def passing_chunks():
        for c in range(chunks):
            aside = time.perf_counter()
            x = vector_chunk(data, n, args.dim, c, seed=args.seed, clusters=args.clusters)
            offset = c * STREAM_CHUNK
            best[0] = ann.merged_top(best[0], top_positions(queries, x, np.arange(len(x)), offset))
            for i, allowed in enumerate(filters):
                rows = allowed[(allowed >= offset) & (allowed < offset + len(x))] - offset
                if rows.size:
                    best[i + 1] = ann.merged_top(best[i + 1], top_positions(queries, x[rows], rows, offset))
            not_building[0] += time.perf_counter() - aside
            if c % 10 == 0:
                print(f"{data} {n}: chunk {c}/{chunks} at {time.perf_counter() - start_s:.0f} s "
                      f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
            yield x

    vectors_path = path.with_suffix(ann.VECTORS_SUFFIX)
    staging = vectors_path.with_name(vectors_path.name + ".building")
    with AnonymousPeak() as building:
        index = ann.build_disk_index(np.arange(n, dtype=np.int64), passing_chunks(), sample, staging,
                                     sample_positions=np.arange(train), seed=args.seed)
    for old in (path, vectors_path):
        old.unlink(missing_ok=True)
    ann.write_index(index, path)
    staging.unlink()
    build_s = time.perf_counter() - start_s - not_building[0]
    np.savez(path.with_suffix(".truth.npz"), truth=best[0][1], build_s=build_s, build_peak_rss_mb=peak_rss_mb(),
             build_peak_anon_mb=building.mb,
             **{f"filter{i}": top[1] for i, top in enumerate(best[1:])})
    print(f"{data} {n}: built in {build_s:.0f} s (calibrated nprobe {index.base.nprobe}/{index.base.nlist}), "
          f"peak RSS {peak_rss_mb():,.0f} MB", file=sys.stderr, flush=True)


def empty_top(rows: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, K), -np.inf, np.float32), np.full((rows, K), -1, np.int64)


def top_positions(queries: np.ndarray, x: np.ndarray, rows: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query's exact top K among ``x`` (rows ``rows`` of the chunk starting at ``offset``) as global positions."""
    scores, found = faiss.knn(queries, x, min(K, len(x)), metric=faiss.METRIC_INNER_PRODUCT)
    if found.shape[1] < K:
        scores = np.pad(scores, ((0, 0), (0, K - found.shape[1])), constant_values=-np.inf)
        found = np.pad(found, ((0, 0), (0, K - found.shape[1])), constant_values=-1)
    return scores, np.where(found >= 0, rows[found] + offset, -1)


def exact_scan(vectors: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One query's exact top K over memory-mapped vectors, a chunk at a time."""
    best = empty_top(1)
    for start in range(0, len(vectors), STREAM_CHUNK):
        part = vectors[start : start + STREAM_CHUNK]
        best = ann.merged_top(best, top_positions(query[None], part, np.arange(len(part)), start))
    return best[0][0], best[1][0]


def float16_reranked(index: ann.DiskRefinedIndex, queries: np.ndarray) -> np.ndarray:
    """The default search's top K when its shortlist is re-ranked from float16 copies of the vectors."""
    shortlist = max(K, int(np.ceil(K * index.k_factor)))
    _, positions = index.base.search(queries, shortlist)
    found = []
    for query, row in zip(queries, positions, strict=True):
        candidates = np.sort(row[row >= 0])
        scores = index.rows(candidates).astype(np.float16).astype(np.float32) @ query
        found.append(index.ids_at()[candidates[np.argsort(-scores)[:K]]])
    return np.stack(found)


def recall_of(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


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
