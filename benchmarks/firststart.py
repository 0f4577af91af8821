"""First start: seconds from `muqsearch serve` starting to its first query's answer, on the demo world.

Each start is a new process (`python -m app serve` on 127.0.0.1, a fresh XDG_DATA_HOME for a cold
start) asked "slow sad piano" through gradio_client the moment it prints its address. Arms, in one run:

- cold, prebuilt: a fresh clone's first start (the shipped demo library is installed, nothing embedded);
- warm: a later start (the demo library exists; the indexer only checks it);
- cold, indexing: the baseline, the first start without the prebuilt library (every clip indexed), over
  the first ``--baseline-clips`` clips (default all 720: minutes).
- with ``--against DIR`` (another checkout, e.g. ``git worktree add DIR main``): its cold and warm starts,
  alternated with ours start by start (ABBA), so that a busy machine slows both alike.

Ratios are baseline over prebuilt medians of the same run. On a shared machine the spread is wide: the
JSON keeps every start, and the CPU seconds of each serve process, which move far less with the load.
"""

from __future__ import annotations

import os
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.harness import Report, median

QUERY = "slow sad piano"
ROOT = Path(__file__).resolve().parent.parent  # this checkout
# Runs the real CLI; the baseline first points the demo world at a folder of clips and no prebuilt library.
LAUNCHER = """
import sys
from pathlib import Path
import data.demo
if sys.argv[1]:
    data.demo.DEMO_AUDIO_DIR = Path(sys.argv[1])
    data.demo.DEMO_PREBUILT_DIR = Path(sys.argv[1]) / "no-prebuilt-library"
from app.cli import main
sys.exit(main(["serve", "--port", sys.argv[2]]))
"""


def add_arguments(parser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="cold and warm starts with the prebuilt library")
    parser.add_argument("--baseline-repeats", type=int, default=1, help="cold starts that index (default 1)")
    parser.add_argument("--baseline-clips", type=int, default=720,
                        help="clips the baseline indexes (default 720, the whole demo library)")
    parser.add_argument("--port", type=int, default=7871, help="first port tried")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on a start after this long")
    parser.add_argument("--against", metavar="DIR", default=None,
                        help="another checkout whose starts alternate with ours (same venv, same demo world)")


def run(args) -> Report:
    import data.demo

    report = Report("firststart", ["arm", "start", "seconds to first answer", "serve CPU seconds", "results"])
    times: dict[str, list[float]] = {"cold, prebuilt": [], "warm": [], "cold, indexing": []}
    cpu_seconds: dict[str, list[float]] = {}
    checkouts = {"": ROOT}
    if args.against:
        checkouts["against: "] = Path(args.against).resolve()
        if not (checkouts["against: "] / "app" / "cli.py").is_file():
            raise SystemExit(f"--against {args.against}: not a MuQ Search checkout (no app/cli.py)")
    with tempfile.TemporaryDirectory(prefix="muqsearch-firststart-") as tmp:
        tmp = Path(tmp)
        for n in range(args.repeats):
            order = list(checkouts.items())
            for label, root in order if n % 2 == 0 else order[::-1]:
                home = tmp / f"{'against-' if label else ''}home-{n}"
                for arm in (f"{label}cold, prebuilt", f"{label}warm"):
                    seconds, cpu, hits = first_answer(home, "", args.port, args.timeout, root)
                    times.setdefault(arm, []).append(seconds)
                    cpu_seconds.setdefault(arm, []).append(cpu)
                    report.add_row(arm, n + 1, seconds, cpu, hits)
        clips = tmp / "baseline-clips"
        clips.mkdir()
        for path in sorted(Path(data.demo.DEMO_AUDIO_DIR).glob("*.opus"))[: args.baseline_clips]:
            os.symlink(path, clips / path.name)
        baseline_clips = len(list(clips.iterdir()))
        for n in range(args.baseline_repeats):
            seconds, cpu, hits = first_answer(tmp / f"baseline-home-{n}", str(clips), args.port, args.timeout)
            times["cold, indexing"].append(seconds)
            report.add_row("cold, indexing", n + 1, seconds, cpu, hits)
            shutil.rmtree(tmp / f"baseline-home-{n}", ignore_errors=True)
    medians = {arm: median(values) for arm, values in times.items() if values}
    report.figures = {
        "medians_s": medians,
        "cpu_medians_s": {arm: median(values) for arm, values in cpu_seconds.items()},
        "spread_s": {arm: [min(v), max(v)] for arm, v in times.items() if v},
        "stdev_s": {arm: statistics.stdev(v) for arm, v in times.items() if len(v) > 1},
        "baseline_clips": baseline_clips,
    }
    if "cold, indexing" in medians and "cold, prebuilt" in medians:
        report.figures["baseline_over_prebuilt"] = medians["cold, indexing"] / medians["cold, prebuilt"]
    if args.against:
        for arm in ("cold, prebuilt", "warm"):
            theirs, ours = f"against: {arm}", arm
            report.figures[f"against_over_ours, {arm}"] = medians[theirs] / medians[ours]
            report.notes.append(f"{arm}: {args.against} / this checkout: {medians[theirs] / medians[ours]:.2f}x "
                                f"wall ({report.figures['cpu_medians_s'][theirs] / report.figures['cpu_medians_s'][ours]:.2f}x "
                                "CPU seconds), medians")
    if "baseline_over_prebuilt" in report.figures:
        report.notes.append(f"cold start with indexing ({report.figures['baseline_clips']} clips) / cold start "
                            f"with the prebuilt library: {report.figures['baseline_over_prebuilt']:.1f}x (medians)")
    report.notes.append(f"threads: MUQSEARCH_THREADS={os.environ.get('MUQSEARCH_THREADS', '(all cores)')}; "
                        f"load average at the end: {os.getloadavg()[0]:.1f}")
    return report


def first_answer(home: Path, music: str, port: int, timeout: float, root: Path | None = None) -> tuple[float, float, int]:
    """(seconds from process start to the first search's answer, CPU seconds of the serve process and its
    children until it stopped, number of results) for one `serve` of the checkout at `root` (default:
    this one). The CPU seconds barely move with the machine's load, the wall-clock seconds do."""
    from gradio_client import Client

    root = root or ROOT
    env = dict(os.environ, XDG_DATA_HOME=str(home), PYTHONUNBUFFERED="1", PYTHONPATH=str(root))
    env.pop("MUQSEARCH_LIBRARY", None)
    env.pop("MUQSEARCH_MODEL", None)
    cpu_before = _children_cpu()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, music, str(port)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               cwd=root)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    try:
        url = _wait_for_address(process, lines, started + timeout)
        client = Client(url, verbose=False, download_files=False)
        results = client.predict(QUERY, 10, False, "", api_name="/search")
        seconds = time.perf_counter() - started
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return seconds, _children_cpu() - cpu_before, len(results)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _wait_for_address(process, lines: queue.Queue, deadline: float) -> str:
    seen = []
    while time.perf_counter() < deadline:
        try:
            line = lines.get(timeout=0.05)
        except queue.Empty:
            continue
        if line is None:
            raise RuntimeError(f"serve exited ({process.wait()}) before answering:\n{''.join(seen[-20:])}")
        seen.append(line)
        if line.startswith("MuQ Search on "):
            return line.split()[3]
    raise TimeoutError(f"serve did not start within the timeout:\n{''.join(seen[-20:])}")
