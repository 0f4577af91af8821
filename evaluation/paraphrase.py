"""Does the demo model understand wording no caption template wrote? Top-3 precision on held-out paraphrases.

    python -m evaluation.paraphrase [--model DIR] [--queries FILE ... | --validation] [--against DIR] [--exact]
                                    [--json] [--out report.json]

Five sets of queries (JSONL ``{"query", "attributes"}``: synonyms, paraphrases, one-word queries, long
sentences and misspellings, written apart from the caption templates and never used for training):
``evaluation/sets/paraphrase_test.jsonl``, the default, never used for model selection (score a model on
it once it is chosen), and four validation sets (``--queries``), ``paraphrase_validation.jsonl``,
``paraphrase_validation_2.jsonl``, ``paraphrase_validation_3.jsonl`` and ``paraphrase_validation_4.jsonl``
(earlier test sets, each until its misses were read), which chose the demo model
(its card says how). Every query is ranked against the whole demo world (720 clips) by cosine similarity,
as the search ranks them. A query passes when ALL of its top 3 clips carry every attribute it names
(truth: each clip's generated attributes). Reported: the share of passing queries with a seeded bootstrap
95 % CI over queries, the same per attribute kind (the share of queries naming that kind whose top 3 all
carry its named value), every miss with what its top 3 carry, and the centroid oracle
(``centroid_oracle``): the score of an oracle text side, showing which kinds the audio vectors, not the
wording, hold back, and per attribute kind the agreement of each clip's 5 nearest clips
(``audio_neighbours``): what the audio vectors hear.
Several ``--queries`` files (``--validation``: the four validation sets) are scored pooled, with each
set's share beside it, as models are chosen; ``--against DIR`` scores a second model on the same queries
and reports the paired difference (bootstrap over queries) and how many queries it fixes and breaks.
The clips' vectors are the prebuilt demo library's when the model makes the same vectors (its
fingerprint), else the model embeds the clips (minutes on a CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

QUERIES = Path(__file__).resolve().parent / "sets" / "paraphrase_test.jsonl"
VALIDATION = QUERIES.with_name("paraphrase_validation.jsonl")
VALIDATION_2 = QUERIES.with_name("paraphrase_validation_2.jsonl")
VALIDATION_3 = QUERIES.with_name("paraphrase_validation_3.jsonl")
VALIDATION_4 = QUERIES.with_name("paraphrase_validation_4.jsonl")
VALIDATION_SETS = (VALIDATION, VALIDATION_2, VALIDATION_3, VALIDATION_4)
TOP = 3


def read_queries(path: Path) -> list[tuple[str, dict[str, str]]]:
    """(query, {attribute: value}) pairs; '#' lines are comments. A malformed line, or an attribute or
    value the demo world does not have, is an error naming the file and line."""
    from data.demo.captions import ATTRIBUTES

    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
            query, attributes = str(row["query"]), dict(row["attributes"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: expected {{\"query\": TEXT, \"attributes\": {{NAME: VALUE}}}} ({exc})") from exc
        if not query.strip() or not attributes:
            raise ValueError(f"{path}:{n}: a query needs text and at least one attribute")
        for name, value in attributes.items():
            if value not in ATTRIBUTES.get(name, ()):
                known = "; ".join(f"{k}: {'/'.join(v)}" for k, v in ATTRIBUTES.items())
                raise ValueError(f"{path}:{n}: unknown attribute {name}={value!r} (the demo world has {known})")
        out.append((query, attributes))
    return out


def score(text_vectors: np.ndarray, clip_vectors: np.ndarray, clip_attributes: list[dict],
          queries: list[tuple[str, dict[str, str]]], *, k: int = TOP, n_bootstrap: int = 1000) -> dict:
    """The report for ``queries`` (their unit text vectors, one row each) over clips (unit vectors and
    generated attributes, row for row). Ties rank in clip order."""
    from evaluation.metrics import bootstrap_interval

    top = np.argsort(-(text_vectors @ clip_vectors.T), axis=1, kind="stable")[:, :k]
    per_query = []
    for (query, named), row in zip(queries, top, strict=True):
        carried = {name: all(clip_attributes[i][name] == value for i in row) for name, value in named.items()}
        per_query.append({"query": query, "attributes": named, "passed": all(carried.values()),
                          "kinds_carried": carried, "top": [dict(clip_attributes[i]) for i in row]})
    passed = np.array([q["passed"] for q in per_query], float)
    kinds = {}
    for kind in sorted({name for _, named in queries for name in named}):
        hits = np.array([q["kinds_carried"][kind] for q in per_query if kind in q["attributes"]], float)
        kinds[kind] = dict(bootstrap_interval(lambda i, h=hits: h[i].mean(), len(hits), n_bootstrap=n_bootstrap),
                           queries=len(hits))
    return {"queries": len(queries), "k": k,
            "passed": bootstrap_interval(lambda i: passed[i].mean(), len(passed), n_bootstrap=n_bootstrap),
            "per_kind": kinds, "misses": [q for q in per_query if not q["passed"]]}


def compare(passed: np.ndarray, other: np.ndarray, *, n_bootstrap: int = 1000) -> dict:
    """Paired comparison of two models on the same queries (per-query pass as 0/1, row for row): the
    difference in share with a bootstrap CI over queries, and the queries one passes and the other misses."""
    from evaluation.metrics import bootstrap_interval

    difference = np.asarray(passed, float) - np.asarray(other, float)
    return {"difference": bootstrap_interval(lambda i: difference[i].mean(), len(difference), n_bootstrap=n_bootstrap),
            "fixed": int((difference > 0).sum()), "broken": int((difference < 0).sum())}


def centroid_oracle(clip_vectors: np.ndarray, clip_attributes: list[dict],
                      queries: list[tuple[str, dict[str, str]]], *, k: int = TOP, n_bootstrap: int = 1000) -> dict:
    """A reference for what the text side can reach with these audio vectors: the same score with each
    query's text vector replaced by the mean direction of the clips that carry all its named attributes (an
    oracle that knows the attributes and ignores the wording; not a strict bound, but attributes the audio
    vectors do not separate stay low whatever the wording)."""
    centroids = []
    for _, named in queries:
        rows = [i for i, a in enumerate(clip_attributes) if all(a[n] == v for n, v in named.items())]
        mean = clip_vectors[rows].mean(axis=0) if rows else np.zeros(clip_vectors.shape[1], np.float32)
        centroids.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
    return score(np.stack(centroids), clip_vectors, clip_attributes, queries, k=k, n_bootstrap=n_bootstrap)


def neighbour_agreement(clip_vectors: np.ndarray, clip_attributes: list[dict], *, k: int = 5) -> dict:
    """What the audio vectors hear, with no text involved: per attribute kind, the share of each clip's k
    nearest other clips (cosine) that carry its value, averaged over clips, beside chance (the same share
    for neighbours drawn at random)."""
    similarity = clip_vectors @ clip_vectors.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    out = {}
    for kind in clip_attributes[0]:
        values = np.array([a[kind] for a in clip_attributes])
        _, counts = np.unique(values, return_counts=True)
        n = len(values)
        out[kind] = {"agreement": float((values[neighbours] == values[:, None]).mean()),
                     "chance": float((counts * (counts - 1)).sum() / (n * (n - 1)))}
    return out


def clip_vectors(model, records: list[dict]) -> tuple[np.ndarray, str]:
    """Unit vectors of the demo clips (row per record) and where they came from: the prebuilt library's
    stored vectors when its fingerprint is this model's, else embedded now."""
    import data.demo
    from data.demo.build_library import prebuilt_catalog_copy, read_manifest
    from muq_model.identity import same_vectors

    manifest = read_manifest(data.demo.DEMO_PREBUILT_DIR)
    if manifest and same_vectors(manifest["fingerprint"], dict(model.fingerprint(), model_id="data/demo/model")):
        from sqlalchemy import select

        from indexer.catalog import Track, from_blob

        with prebuilt_catalog_copy() as catalog, catalog.session() as s:
            by_name = {Path(p).name: from_blob(b) for p, b in s.execute(select(Track.path, Track.embedding))}
        vectors, source = np.stack([by_name[Path(r["file"]).name] for r in records]), "prebuilt library"
    else:
        import torch

        from indexer.audio import load_audio

        with torch.inference_mode():
            vectors = np.concatenate([
                model.embed_audio([load_audio(r["path"], sample_rate=model.sample_rate) for r in records[i:i + 32]])
                .float().numpy() for i in range(0, len(records), 32)])
        source = "embedded now"
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), source


def model_report(model, records: list[dict], queries: list[tuple[str, dict[str, str]]], *, exact: bool) -> dict:
    """``score`` for one model, the queries read as the search reads them unless ``exact``, with where the
    clip vectors came from, the corrections made, the centroid oracle and what the audio vectors hear."""
    from muq_model.spelling import Speller

    vectors, source = clip_vectors(model, records)
    speller = None if exact else Speller.for_model(model)
    searched = [speller.correct(q)[0] if speller else q for q, _ in queries]
    text = model.embed_text(searched).float().numpy()
    attributes = [r["attributes"] for r in records]
    oracle = centroid_oracle(vectors, attributes, queries)
    return dict(score(text / np.linalg.norm(text, axis=1, keepdims=True), vectors, attributes, queries),
                clips=len(records), clip_vectors=source, spelling="corrected" if speller else "as typed",
                corrected={q: s for (q, _), s in zip(queries, searched, strict=True) if s != q},
                centroid_oracle={"passed": oracle["passed"],
                                 "per_kind": {kind: e["value"] for kind, e in oracle["per_kind"].items()}},
                audio_neighbours=neighbour_agreement(vectors, attributes))


def passes(report: dict, queries: list[tuple[str, dict[str, str]]]) -> np.ndarray:
    """1.0 per query that passed, 0.0 per miss, in query order."""
    missed = {m["query"] for m in report["misses"]}
    return np.array([q not in missed for q, _ in queries], float)


def main(argv: list[str] | None = None) -> int:
    import data.demo
    from muq_model import MuQMuLan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=data.demo.DEMO_MODEL_DIR, help="the model (default: %(default)s)")
    sets = parser.add_mutually_exclusive_group()
    sets.add_argument("--queries", type=Path, action="append", metavar="FILE",
                      help=f"a query set; repeat to pool several (default: {QUERIES})")
    sets.add_argument("--validation", action="store_true", help="the four validation sets, pooled")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="another model scored on the same queries: the paired difference, fixed and broken")
    parser.add_argument("--exact", action="store_true",
                        help="embed the queries as typed; by default misspelt words are corrected as the search "
                             "corrects them (muq_model.spelling)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    paths = list(VALIDATION_SETS) if args.validation else args.queries or [QUERIES]
    try:
        by_set = {path: read_queries(path) for path in paths}
    except (OSError, ValueError) as exc:
        print(f"evaluation.paraphrase: {exc}", file=sys.stderr)
        return 2
    queries = [q for path in paths for q in by_set[path]]
    if len({q for q, _ in queries}) < len(queries):
        print("evaluation.paraphrase: the query sets share a query; pool sets without repeats", file=sys.stderr)
        return 2
    records = data.demo.load_records()
    report = dict(model_report(MuQMuLan.from_pretrained(args.model).eval(), records, queries, exact=args.exact),
                  model=str(args.model))
    passed = passes(report, queries)
    bounds = np.cumsum([0] + [len(by_set[path]) for path in paths])
    report["per_set"] = {str(path): {"queries": int(b - a), "passed": float(passed[a:b].mean())}
                         for path, a, b in zip(paths, bounds[:-1], bounds[1:], strict=True)}
    if args.against:
        other = model_report(MuQMuLan.from_pretrained(args.against).eval(), records, queries, exact=args.exact)
        report["against"] = dict(compare(passed, passes(other, queries)), model=str(args.against),
                                 passed=other["passed"])
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    p = report["passed"]
    print(f"{args.model}: {p['value']:.3f} [95% CI {p['ci_low']:.3f}, {p['ci_high']:.3f}] of {len(queries)} "
          f"paraphrase queries have every named attribute in all top {TOP} ({len(records)} clips, "
          f"{report['clip_vectors']}; queries {report['spelling']}, {len(report['corrected'])} corrected)")
    if len(paths) > 1:
        for path, entry in report["per_set"].items():
            print(f"  {Path(path).name}: {entry['passed']:.3f} of {entry['queries']}")
    if args.against:
        a, d = report["against"], report["against"]["difference"]
        print(f"against {a['model']}: {a['passed']['value']:.3f}; paired difference {d['value']:+.3f} "
              f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], {a['fixed']} queries fixed, {a['broken']} broken")
    c = report["centroid_oracle"]
    for kind, entry in report["per_kind"].items():
        print(f"  {kind:<10} {entry['value']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}] "
              f"of {entry['queries']} queries (centroid oracle {c['per_kind'][kind]:.3f})")
    print(f"centroid oracle (each query replaced by the mean direction of the clips it describes): "
          f"{c['passed']['value']:.3f} [{c['passed']['ci_low']:.3f}, {c['passed']['ci_high']:.3f}]")
    print("what the audio vectors hear (share of each clip's 5 nearest clips with its value; chance): " + ", ".join(
        f"{kind} {e['agreement']:.2f} ({e['chance']:.2f})" for kind, e in report["audio_neighbours"].items()))
    print("misses:")
    for miss in report["misses"]:
        wrong = ", ".join(f"{k}={v}" for k, v in miss["attributes"].items() if not miss["kinds_carried"][k])
        tops = "; ".join(" ".join(top[k] for k in miss["attributes"]) for top in miss["top"])
        read_as = f" searched as {report['corrected'][miss['query']]!r}" if miss["query"] in report["corrected"] else ""
        print(f"  {miss['query']!r}{read_as}: wrong {wrong} (top {TOP}: {tops})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
