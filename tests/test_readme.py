"""The README's set-up commands are the ones CI runs, and they name files that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    readme_blocks = _bash_blocks((ROOT / "README.md").read_text())
    test_command = next(b for b in readme_blocks if "pytest" in b)
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_readme_commands_use_files_that_exist():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 2
    for block in blocks:
        for script in re.findall(r"bash (\S+\.sh)", block):
            assert (ROOT / script).is_file(), script


def test_every_runtime_dependency_is_explained():
    readme = (ROOT / "README.md").read_text().lower()
    section = readme.split("## dependencies", 1)[1].split("\n## ", 1)[0]
    explained = " ".join(row.split("|")[1] for row in section.splitlines() if row.startswith("| "))
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[<>=!~\[ ]", line, maxsplit=1)[0].lower()
            assert name in explained or name.replace("-", "_") in explained, f"README does not explain {name}"
