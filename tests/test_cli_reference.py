"""The CLI's documentation follows the code: the README's command table is generated from the parser,
and every command keeps the one exit-status convention the README states."""

from __future__ import annotations

import pytest

from app import cli_reference
from app.cli import main


def test_readme_command_table_is_the_generated_one():
    readme = cli_reference.README.read_text()
    assert cli_reference.rewritten(readme) == readme, "run `python -m app.cli_reference`"
    assert cli_reference.main(["--check"]) == 0


def test_a_drifted_table_is_caught_and_rewritten(tmp_path, monkeypatch, capsys):
    drifted = cli_reference.README.read_text().replace("| `muqsearch status` |", "| `muqsearch status --old` |")
    readme = tmp_path / "README.md"
    readme.write_text(drifted)
    monkeypatch.setattr(cli_reference, "README", readme)
    assert cli_reference.main(["--check"]) == 1 and "python -m app.cli_reference" in capsys.readouterr().err
    assert cli_reference.main([]) == 0
    assert readme.read_text() == cli_reference.rewritten(drifted) != drifted
    assert cli_reference.main(["--check"]) == 0


def test_every_command_is_in_the_table_with_its_positionals():
    table = cli_reference.command_table()
    for form in ("muqsearch index ROOT...", "muqsearch search QUERY", "muqsearch texts add\\|list\\|remove",
                 "muqsearch model download\\|convert\\|info", "muqsearch eval [DATASET]"):
        assert f"| `{form}` |" in table
    assert len(table.splitlines()) == 2 + len(cli_reference.COMMANDS)


@pytest.mark.parametrize("argv, message", [
    (["search", "   "], "Type a description"),
    (["similar", "{tmp}/no-such.wav"], "does not exist"),
    (["describe", "{tmp}/no-such.wav"], "does not exist"),
    (["texts", "add", "{tmp}/no-such.txt"], "no-such.txt"),
    (["index", "{tmp}", "--library", "{tmp}/new-library"], "--model"),
    (["status", "--library", "{tmp}/no-library"], "muqsearch index"),
    (["eval", "{tmp}/absent.jsonl", "--model", "{tmp}/no-model"], "absent.jsonl"),
    (["model", "info"], "give a model directory"),
])
def test_a_command_that_cannot_run_as_asked_exits_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MUQSEARCH_MODEL", raising=False)
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def test_index_help_says_what_a_new_library_without_model_does(tmp_path, capsys, monkeypatch):
    """The help once promised the demo model as the fallback while `index` stopped with "no model"."""
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "`index` of a new library and `train` need one" in help_text
    monkeypatch.delenv("MUQSEARCH_MODEL", raising=False)
    assert main(["index", str(tmp_path), "--library", str(tmp_path / "new")]) == 2
    assert "no model" in capsys.readouterr().err and not (tmp_path / "new").exists()
