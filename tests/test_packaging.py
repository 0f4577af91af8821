"""The package metadata builds without deprecation banners: the licence in PEP 639's SPDX string form,
with a setuptools that reads that form (77+; older ones warned on every install about the TOML table)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parent.parent


def test_license_is_an_spdx_expression_read_by_the_required_setuptools():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    assert re.fullmatch(r"[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*", pyproject["project"]["license"])
    (setuptools,) = [r for r in pyproject["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert minimum and int(minimum.group(1)) >= 77, setuptools
    assert not any(c.startswith("License ::") for c in pyproject["project"].get("classifiers", []))
