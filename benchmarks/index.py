"""Indexing: decode speed per format, model busy share, peak RSS against track length, tracks/s end to end.

Four parts, each against a baseline measured in the same run:

- ``decode``: ``indexer.audio.load_audio`` (decode, downmix, soxr HQ to 24 kHz mono) on the same synthetic
  44.1 kHz stereo music in every format, single process, one core: x real time. Baseline: reading the WAV
  as it is (soundfile, no downmix/resample), the floor of any decoder.
- ``pipeline``: ``muqsearch index`` (Indexer) over a folder of mixed-format tracks with the tiny model and
  with the full-size MuQ-MuLan-large architecture (random weights: same cost as real ones): tracks/s,
  x real time, and the share of the decode+embed phase the model was computing ("model busy", target
  >= 90 %). Baseline: the model alone embedding the same tracks already decoded in memory
  (``embed_audio``), i.e. the best any pipeline could do; "vs model only" = that time / pipeline time.
- ``rss``: one file of 2 / 15 / 60 minutes indexed in a fresh process with the tiny model: peak RSS of
  the indexer and of its decoder process (VmHWM). Auto-tags are off there (their cost does not depend
  on length). Target: flat (the 60-minute file streams clip by clip).
  Baseline: the shortest file.
- ``engines`` (``--engine ray``): the same tracks indexed by the local engine and by the Ray engine
  (a Ray started on this machine) with 1 and 2 embedding actors, tiny model: tracks/s of the whole run
  (Ray's start included) and of the decode+embed phase. Baseline: the local engine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from benchmarks.harness import Report, median, time_call

DECODE_FORMATS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aiff")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", nargs="+", choices=("decode", "pipeline", "rss", "engines"),
                        default=["decode", "pipeline", "rss"])
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="ray: compare the engines (the 'engines' part only)")
    parser.add_argument("--decode-seconds", type=float, default=60.0, help="length of each decode test file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tracks", type=int, default=12, help="tracks for the tiny-model pipeline run")
    parser.add_argument("--track-seconds", type=float, default=30.0)
    parser.add_argument("--full-tracks", type=int, default=3, help="tracks for the full-size run (0 = skip)")
    parser.add_argument("--workers", type=int, default=1, help="decoder processes in the pipeline runs")
    parser.add_argument("--rss-minutes", type=float, nargs="+", default=[2, 15, 60])
    parser.add_argument("--workdir", default=None, help="where test audio goes (default: a temporary folder)")


def run(args: argparse.Namespace) -> Report:
    report = Report("index", ["part", "case", "value", "unit", "vs baseline", "detail"])
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="muqsearch-bench-index-"))
    if args.engine == "ray":
        args.parts = ["engines"]
    try:
        if "decode" in args.parts:
            decode_rows(report, workdir / "decode", args)
        if "pipeline" in args.parts:
            pipeline_rows(report, workdir / "pipeline", args)
        if "rss" in args.parts:
            rss_rows(report, workdir / "rss", args)
        if "engines" in args.parts:
            engine_rows(report, workdir / "engines", args)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    report.figures["threads"] = torch.get_num_threads()
    report.figures["load_average_at_end"] = os.getloadavg()
    report.notes.append(f"torch threads {torch.get_num_threads()}; load average at the end "
                        f"{os.getloadavg()[0]:.1f} (cores shared with other work)")
    return report


# --------------------------------------------------------------------------------------------------
# decode


def decode_rows(report: Report, folder: Path, args: argparse.Namespace) -> None:
    from benchmarks.audio_files import write_audio
    from indexer.audio import load_audio

    seconds = args.decode_seconds
    files = {ext: write_audio(folder / f"music{ext}", seconds, 48000 if ext == ".opus" else 44100, 2, seed=1)
             for ext in DECODE_FORMATS}
    baseline = median(time_call(lambda: sf.read(files[".wav"], dtype="float32"), repeats=args.repeats))
    report.add_row("decode", "wav read as is (baseline)", seconds / baseline, "x real time", 1.0,
                   "soundfile, no downmix/resample")
    speeds = {}
    for ext, path in files.items():
        t = median(time_call(lambda p=path: load_audio(p), repeats=args.repeats))
        speeds[ext] = seconds / t
        report.add_row("decode", f"{ext[1:]} -> 24 kHz mono", speeds[ext], "x real time", baseline / t,
                       f"{os.path.getsize(path) / 2**20:.1f} MB for {seconds:.0f} s of 44.1 kHz stereo")
    report.figures["decode_x_realtime"] = speeds


# --------------------------------------------------------------------------------------------------
# pipeline


def pipeline_rows(report: Report, folder: Path, args: argparse.Namespace) -> None:
    from muq_model import MuQMuLan, MuQMuLanConfig

    torch.manual_seed(0)
    runs = [("tiny", lambda: MuQMuLan(MuQMuLanConfig.tiny()).eval(), args.tracks)]
    if args.full_tracks:
        runs.append(("full-size", lambda: MuQMuLan(MuQMuLanConfig.large(), tokenizer=None).eval(), args.full_tracks))
    for name, build, n_tracks in runs:
        model = build()
        music = make_tracks(folder / name / "music", n_tracks, args.track_seconds)
        summary, baseline, vocabulary_seconds = index_once(model, music, folder / name / "library", args.workers)
        audio = n_tracks * args.track_seconds
        if vocabulary_seconds is not None:
            report.add_row("pipeline", f"{name}: vocabulary embedding", vocabulary_seconds, "s", None,
                           "once per library and model (auto-tag texts, cached in the catalog); not in the rows below")
        phase = summary.embed_phase_seconds
        report.add_row("pipeline", f"{name}: tracks/s, whole run", summary.indexed / summary.seconds, "tracks/s",
                       baseline / summary.seconds, f"{n_tracks} x {args.track_seconds:.0f} s, mixed formats, "
                       f"{args.workers} decoder(s); baseline = model alone on decoded audio, {baseline:.1f} s")
        report.add_row("pipeline", f"{name}: tracks/s, decode+embed", summary.indexed / phase, "tracks/s",
                       baseline / phase, "without start and end (scan, plan, final index write)")
        report.add_row("pipeline", f"{name}: x real time, whole run", audio / summary.seconds, "x real time",
                       baseline / summary.seconds, f"{summary.clips} clips")
        report.add_row("pipeline", f"{name}: model busy", 100 * summary.model_busy, "%", None,
                       "model compute time / decode+embed phase (target >= 90 %)")
        report.figures[f"{name}_tracks_per_s"] = summary.indexed / summary.seconds
        report.figures[f"{name}_model_busy"] = summary.model_busy
        del model


def make_tracks(folder: Path, n: int, seconds: float) -> Path:
    from benchmarks.audio_files import FORMATS, write_audio

    for i in range(n):
        ext = FORMATS[i % len(FORMATS)]
        write_audio(folder / f"{i:03d}{ext}", seconds, 48000 if ext == ".opus" else 44100, 2, seed=i)
    return folder


def index_once(model, music: Path, library_dir: Path, workers: int):
    """(IndexSummary of one fresh run, seconds the model alone takes on the same audio decoded in memory,
    seconds of the one-off vocabulary embedding or None)."""
    from indexer.audio import load_audio
    from indexer.autotag import AutoTagger
    from indexer.pipeline import Indexer, IndexOptions
    from indexer.vectors import Library

    waves = [load_audio(p) for p in sorted(music.iterdir())]
    model.embed_audio(waves[:1])  # warm-up: the first call pays one-off allocation costs
    start = time.perf_counter()
    model.embed_audio(waves)
    baseline = time.perf_counter() - start
    del waves
    shutil.rmtree(library_dir, ignore_errors=True)
    with Library.open(library_dir, create=True) as library:
        vocabulary_seconds = None
        if model.has_tokenizer:  # once per library and model; cached in the catalog for the run below
            start = time.perf_counter()
            library.catalog.claim_fingerprint(model.fingerprint(), "benchmark", model.dim)
            AutoTagger.for_model(model, library.catalog)
            vocabulary_seconds = time.perf_counter() - start
        options = IndexOptions(workers=workers, progress=False, auto_tags=model.has_tokenizer)
        summary = Indexer(library, model, "benchmark", options).run([music])
    return summary, baseline, vocabulary_seconds


# --------------------------------------------------------------------------------------------------
# engines


def engine_rows(report: Report, folder: Path, args: argparse.Namespace) -> None:
    """The local engine, then Ray with 1 and 2 actors, on the same tracks, ``repeats`` times in turn."""
    import functools

    from indexer.autotag import AutoTagger
    from indexer.pipeline import Indexer, IndexOptions
    from indexer.ray_engine import RayEngine
    from indexer.vectors import Library
    from muq_model import MuQMuLan, MuQMuLanConfig

    torch.manual_seed(0)
    model_dir = MuQMuLan(MuQMuLanConfig.tiny()).eval().save_pretrained(folder / "model")
    model = MuQMuLan.from_pretrained(model_dir).eval()
    music = make_tracks(folder / "music", args.tracks, args.track_seconds)
    load = functools.partial(MuQMuLan.from_pretrained, str(model_dir))
    engines = {"local": lambda: None}
    for actors in (1, 2):
        engines[f"ray, {actors} actor(s)"] = functools.partial(RayEngine, load, actors=actors, num_cpus=actors + 1)
    runs: dict[str, list] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, make_engine in engines.items():
            library_dir = folder / f"library-{len(runs[name])}-{name.replace(' ', '')}"
            with Library.open(library_dir, create=True) as library:
                library.catalog.claim_fingerprint(model.fingerprint(), "benchmark", model.dim)
                AutoTagger.for_model(model, library.catalog)  # the vocabulary once per library, outside the timing
                options = IndexOptions(workers=args.workers, progress=False)
                summary = Indexer(library, model, "benchmark", options, make_engine()).run([music])
            assert summary.indexed == args.tracks, summary.errors
            runs[name].append((summary.indexed / summary.seconds, summary.indexed / summary.embed_phase_seconds))
            shutil.rmtree(library_dir, ignore_errors=True)
    base_whole = median([r[0] for r in runs["local"]])
    base_phase = median([r[1] for r in runs["local"]])
    for name, values in runs.items():
        whole, phase = [r[0] for r in values], [r[1] for r in values]
        detail = f"{args.tracks} x {args.track_seconds:.0f} s; {args.repeats} runs: min {min(whole):.2f}, max {max(whole):.2f}"
        report.add_row("engines", f"{name}: tracks/s, whole run", median(whole), "tracks/s", median(whole) / base_whole,
                       detail + ("; Ray started and stopped in the run" if name != "local" else ""))
        report.add_row("engines", f"{name}: tracks/s, decode+embed", median(phase), "tracks/s",
                       median(phase) / base_phase, f"min {min(phase):.2f}, max {max(phase):.2f}")
        report.figures[f"engines_{name}"] = {"whole_tracks_per_s": whole, "phase_tracks_per_s": phase}


# --------------------------------------------------------------------------------------------------
# peak RSS against track length


def rss_rows(report: Report, folder: Path, args: argparse.Namespace) -> None:
    results = []
    for minutes in args.rss_minutes:
        path = write_long_flac(folder / f"{minutes:g}min.flac", minutes * 60)
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.index", "--rss-child", str(path), str(folder / f"lib{minutes:g}")],
            capture_output=True, text=True, check=True, env=dict(os.environ), start_new_session=True,
        )
        results.append((minutes, json.loads(out.stdout.strip().splitlines()[-1])))
    base_main, base_child = results[0][1]["main_mb"], results[0][1]["decoder_mb"]
    for minutes, r in results:
        report.add_row("rss", f"{minutes:g} min file: indexer", r["main_mb"], "MB peak", r["main_mb"] / base_main,
                       f"{r['clips']} clips in {r['seconds']:.0f} s; baseline = the {results[0][0]:g} min file")
        report.add_row("rss", f"{minutes:g} min file: decoder", r["decoder_mb"], "MB peak",
                       r["decoder_mb"] / base_child, "largest decoder process")
    report.figures["rss_mb"] = {f"{m:g}min": r for m, r in results}


def write_long_flac(path: Path, seconds: float, rate: int = 22050) -> Path:
    """A long mono FLAC written minute by minute (a 60-minute array would itself distort the measure)."""
    from benchmarks.audio_files import synth

    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", rate, 1, format="FLAC", subtype="PCM_16") as out:
        for minute in range(int(np.ceil(seconds / 60))):
            out.write(synth(min(60.0, seconds - 60 * minute), rate, 1, seed=minute))
    return path


def rss_child(path: str, library_dir: str) -> None:
    """Index one file with the tiny model in this fresh process; print peak RSS of it and its decoders."""
    from muq_model import MuQMuLan, MuQMuLanConfig
    from muq_model.runtime import configure_threads

    configure_threads()
    torch.manual_seed(0)
    model = MuQMuLan(MuQMuLanConfig.tiny()).eval()
    from indexer.pipeline import Indexer, IndexOptions
    from indexer.vectors import Library

    decoder_peak_kb = 0
    done = threading.Event()

    def watch_decoders():  # children of the fork server, not ours: read their peak from /proc
        nonlocal decoder_peak_kb
        while not done.wait(0.2):
            for pid in decoder_pids():
                decoder_peak_kb = max(decoder_peak_kb, peak_rss_kb(pid))

    watcher = threading.Thread(target=watch_decoders, daemon=True)
    watcher.start()
    with Library.open(library_dir, create=True) as library:
        options = IndexOptions(workers=1, progress=False, auto_tags=False)
        summary = Indexer(library, model, "benchmark", options).run([path])
    done.set()
    watcher.join()
    assert summary.indexed == 1, summary.errors
    print(json.dumps({
        "main_mb": peak_rss_kb(os.getpid()) / 1024,  # VmHWM: unlike ru_maxrss, not inherited across exec
        "decoder_mb": decoder_peak_kb / 1024,
        "clips": summary.clips,
        "seconds": summary.seconds,
    }))


def decoder_pids() -> set[int]:
    """Processes of this session that are not our children (fork server, resource tracker): the decoders."""
    me, pids = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == os.getsid(0) and int(fields[1]) != me:  # session id, parent pid
                pids.add(int(entry))
    return pids


def peak_rss_kb(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, 0 if it is gone."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--rss-child":
        rss_child(sys.argv[2], sys.argv[3])
