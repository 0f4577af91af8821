"""Every command in the README runs in a test, the way Datasette's documentation tests run its examples.

The commands are read out of the README (its ``bash`` blocks and its inline ``muqsearch ...`` code) and
each must appear in exactly one list below, so a command added to the README without a test fails here:

* ``ON_THE_DEMO``: run as written (the shell's ``~`` expanded to a temporary home) on a sample of the
  bundled demo world, indexed by the demo model as a fresh install does;
* ``STAND_IN_MODEL``: need the real MuQ-MuLan-large weights (network): run as written with the demo model
  in place of ``--model``, and parsed as written;
* ``PARSED_ONLY``: too long for a test (training, benchmarks, regenerating the demo world) or a form rather
  than a command: the options are checked against the parser, the work is not done;
* ``model download``: runs as written against a local hub cache holding a tiny checkpoint (tested below).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import data.demo
from app.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SAMPLE = 60  # demo clips: piano among them, and track 42 exists

ON_THE_DEMO = [
    "muqsearch serve",
    'muqsearch search "melancholic solo piano for a rainy night" -k 20 --moments --filter tag=piano '
    "--filter duration=..300 --m3u rainy.m3u",
    "muqsearch --json similar 42",
    "muqsearch describe clip.mp3 -k 10",
    "muqsearch texts add briefs.txt",
    "muqsearch eval data/demo/eval_test.jsonl --out report.json --dump-scores scores/",
    "muqsearch eval data/demo/eval_test.jsonl",
    "muqsearch --library ~/muq-library status",
]
STAND_IN_MODEL = [  # the real weights are 2.65 GB from the hub: the demo model stands in
    "muqsearch --model OpenMuQ/MuQ-MuLan-large --library ~/muq-library index ~/Music /mnt/more-music",
    "muqsearch --model OpenMuQ/MuQ-MuLan-large index ~/Music",
    "muqsearch --model /models/MuQ-MuLan-large index ~/Music",
]
PARSED_ONLY = {  # command -> why it does not run here
    "muqsearch --model OpenMuQ/MuQ-MuLan-large eval wikimt-x.jsonl --audio-root audio/ --fields "
    "background,analysis,description,scene": "a dataset and weights that are not bundled",
    "muqsearch train pairs.jsonl --model OpenMuQ/MuQ-MuLan-large --out DIR": "training on real weights",
    "muqsearch serve [--host 127.0.0.1] [--port 7860] [--auth USER:PASSWORD]": "a form (the options are parsed)",
    "muqsearch COMMAND --help": "a form: every command's --help is tested in test_foundation.py",
    "muqsearch texts add FILE": "a form of `texts add briefs.txt`, which runs",
    "muqsearch --catalog postgresql://muq@db-host/muqsearch --library ~/muq-library index ~/Music --engine ray "
    "--ray-address head-node:6379 --ray-actors 4": "a cluster and a database server (test_ray_engine.py and "
    "test_catalog_postgres.py run the same options locally)",
    "muqsearch eval --abx $W/abx_xab.jsonl": "runs on the instrument world in test_eval_abx.py",
    "muqsearch eval --abx $W/abx_xyc.jsonl --baseline mel": "runs on the instrument world in test_eval_abx.py",
    "muqsearch eval --abx $W/abx_xyc.jsonl --layer 2": "runs on the instrument world in test_eval_abx.py",
    "muqsearch eval --probe $W/labels.jsonl --task family": "runs in test_eval_probe.py",
    'muqsearch eval --tagging $W/tagging.jsonl --prompt "{tag} music" --prompt "a recording of {tag}"':
        "runs in test_eval_tagging.py",
    "muqsearch eval --tagging annotations_final.csv --audio-root mtat/ --vocabulary top50.txt --dump-scores "
    "scores/": "MagnaTagATune is not bundled (its layout is tested in test_eval_tagging.py)",
}
NAMES = {"muqsearch index", "muqsearch train", "muqsearch eval --probe"}  # a command named in the prose, not a command line
MODEL_DOWNLOAD = "muqsearch model download OpenMuQ/MuQ-MuLan-large --out MuQ-MuLan-large"
OTHER_PROGRAMS = {  # not muqsearch: python modules whose --help must accept the README's options
    "python -m data.demo.generate --seed 20260 --out DIR": "data.demo.generate",
    "python -m data.demo.generate --seed 8 --variants 600 --out DIR": "data.demo.generate",
}


def readme_commands() -> set[str]:
    """`muqsearch ...` commands of the README: bash-block lines (continuations joined, comments and the
    `bash scripts/install.sh && ` prefix dropped) and inline code spans, but not the command table's
    `muqsearch NAME ARGS` forms."""
    found = set()
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            line = re.sub(r"^bash scripts/install\.sh(?: --dev)? && ", "", line).removeprefix(".venv/bin/")
            if line.startswith("muqsearch "):
                found.add(" ".join(line.split()))
    for line in README.splitlines():
        if line.startswith("| `muqsearch"):
            continue  # the command table: names and forms, each command runs below
        found.update(" ".join(span.split()) for span in re.findall(r"`(muqsearch [^`]+)`", line))
    return found


def test_every_readme_command_is_tested():
    listed = [*ON_THE_DEMO, *STAND_IN_MODEL, *PARSED_ONLY, MODEL_DOWNLOAD, *NAMES]
    assert len(listed) == len(set(listed))
    assert readme_commands() == set(listed)


def argv_of(command: str, home: Path) -> list[str]:
    """The argument vector a shell would pass (``~`` expanded against ``home``), without `muqsearch`."""
    return [str(home) + word[1:] if word.startswith("~/") else word for word in shlex.split(command)[1:]]


@pytest.mark.parametrize("command", [*ON_THE_DEMO, *STAND_IN_MODEL, *PARSED_ONLY, MODEL_DOWNLOAD])
def test_every_readme_command_parses(command, tmp_path):
    if command.startswith("muqsearch COMMAND"):
        return
    argv = argv_of(command.replace("[", "").replace("]", ""), tmp_path)  # a form's options, each given
    build_parser().parse_args(argv)  # raises SystemExit on an unknown option or a missing argument


@pytest.mark.parametrize("command, module", OTHER_PROGRAMS.items())
def test_other_readme_programs_accept_their_options(command, module):
    assert command in README
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for option in re.findall(r"--[\w-]+", command):
        assert option in done.stdout, option


# --------------------------------------------------------------------------------------------------
# On the demo world


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory):
    """A fresh user: empty home and data folders, the working folder a temporary one holding the README's
    example files, and a sample of the demo world as `data/demo/library` (indexed by `muqsearch demo`)."""
    base = tmp_path_factory.mktemp("readme")
    home, work, music = base / "home", base / "work", base / "demo-music"
    for folder in (home, work, music):
        folder.mkdir()
    files = sorted(Path(data.demo.DEMO_AUDIO_DIR).glob("*.opus"))
    sample = random.Random(0).sample(files, SAMPLE)
    for path in sample:
        shutil.copy(path, music)
    (work / "data").symlink_to(ROOT / "data")  # relative paths in the README are from the repository
    shutil.copy(sample[0], work / "clip.mp3")  # an Ogg file named .mp3: found by content
    (work / "briefs.txt").write_text("music for a chase scene\na lullaby for a rainy night\n")
    (home / "Music").mkdir()
    for path in sample[:5]:
        shutil.copy(path, home / "Music")
    patch = pytest.MonkeyPatch()
    patch.setattr(data.demo, "DEMO_AUDIO_DIR", music)
    patch.setenv("HOME", str(home))
    patch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    for name in ("MUQSEARCH_LIBRARY", "MUQSEARCH_MODEL"):
        patch.delenv(name, raising=False)
    patch.chdir(work)
    assert main(["demo", "-k", "1"]) == 0  # the first start: indexes the (sampled) demo library
    yield home, work
    patch.undo()


def run(capsys, command: str, home: Path) -> tuple[int, str, str]:
    code = main(argv_of(command, home))
    out, err = capsys.readouterr()
    return code, out, err


def test_readme_search_returns_tracks_on_the_demo(demo_home, capsys):
    home, work = demo_home
    code, out, err = run(capsys, ON_THE_DEMO[1], home)
    assert code == 0, err
    assert "Tracks matching" in out and " 1. " in out
    playlist = (work / "rainy.m3u").read_text().splitlines()
    assert playlist[0] == "#EXTM3U" and len([x for x in playlist if not x.startswith("#")]) >= 1


def test_readme_similar_describe_texts_on_the_demo(demo_home, capsys):
    home, work = demo_home
    code, out, err = run(capsys, "muqsearch --json similar 42", home)
    assert code == 0, err
    results = json.loads(out)
    assert len(results) == 10 and 42 not in [r["track_id"] for r in results]
    code, out, err = run(capsys, "muqsearch describe clip.mp3 -k 10", home)
    assert code == 0 and "Tags:" in out, err
    assert "which is library track" in out  # clip.mp3 is a copy of a demo track
    code, out, err = run(capsys, "muqsearch texts add briefs.txt", home)
    assert code == 0 and "added 2 texts as collection 'briefs'" in out, err


def test_readme_eval_on_the_demo(demo_home, capsys):
    home, work = demo_home
    code, out, err = run(capsys, ON_THE_DEMO[5], home)
    assert code == 0, err
    assert json.loads((work / "report.json").read_text()) and any((work / "scores").iterdir())
    code, out, err = run(capsys, ON_THE_DEMO[6], home)  # the same without files: from the embedding cache
    assert code == 0 and "R@10" in out, err


def test_readme_serve_starts_the_page_on_the_demo(demo_home, capsys, monkeypatch):
    """`muqsearch serve` as written: the page answers on 127.0.0.1, then the test stops it."""
    import urllib.request

    import gradio as gr

    home, _ = demo_home
    pages = []

    def fetch_and_close(blocks):
        with urllib.request.urlopen(blocks.local_url, timeout=60) as response:
            pages.append(response.read().decode())
        blocks.close()

    monkeypatch.setattr(gr.Blocks, "block_thread", fetch_and_close)
    code, out, err = run(capsys, "muqsearch serve", home)
    assert code == 0, err
    assert "MuQ Search on http://127.0.0.1:" in out
    assert pages and "MuQ Search" in pages[0]


def test_readme_index_and_status_with_the_demo_model_standing_in(demo_home, capsys):
    home, _ = demo_home
    (home / "mnt").mkdir(exist_ok=True)
    demo_model = str(Path(data.demo.DEMO_MODEL_DIR))
    for command in STAND_IN_MODEL:
        command = command.replace("OpenMuQ/MuQ-MuLan-large", demo_model).replace("/models/MuQ-MuLan-large", demo_model)
        command = command.replace(" /mnt/more-music", " ~/mnt")
        code, out, err = run(capsys, command, home)
        assert code == 0, (command, err)
        assert "indexed 5" in out or "skipped 5 unchanged" in out
    code, out, err = run(capsys, "muqsearch --library ~/muq-library status", home)
    assert code == 0 and "tracks:    5" in out, err


# --------------------------------------------------------------------------------------------------
# model download --out, against a local hub cache


def test_readme_model_download_writes_a_self_contained_directory(tmp_path, tiny_model, tiny_model_dir):
    """The README's air-gapped recipe, as written; the hub is a local cache holding a tiny checkpoint
    under OpenMuQ/MuQ-MuLan-large and MiniLM's tokenizer under xlm-roberta-base (HF_HUB_OFFLINE=1)."""
    import torch
    from test_model_checkpoint import _cache_as_hub_snapshot  # noqa: I001  (tests/ is on sys.path)

    from muq_model import MuQMuLan

    cache, staged = tmp_path / "hub", tmp_path / "staged"
    staged.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["text_model"]["name"] = "xlm-roberta-base"
    (staged / "config.json").write_text(json.dumps(config))
    tokenizer = [p for p in tiny_model_dir.iterdir() if p.name not in ("config.json", "model.safetensors")]
    _cache_as_hub_snapshot(cache, "OpenMuQ/MuQ-MuLan-large", [staged / "config.json", tiny_model_dir / "model.safetensors"])
    _cache_as_hub_snapshot(cache, "xlm-roberta-base", tokenizer)
    done = subprocess.run(
        [sys.executable, "-m", "app", *shlex.split(MODEL_DOWNLOAD)[1:]], cwd=tmp_path, capture_output=True,
        text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "MUQSEARCH_THREADS": "1",
             "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "MuQ-MuLan-large"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    copy = MuQMuLan.from_pretrained(out).eval()
    torch.testing.assert_close(copy.embed_text(["calm piano"]), tiny_model.embed_text(["calm piano"]), rtol=0, atol=1e-6)
