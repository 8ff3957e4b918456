"""Packaging metadata that builds without deprecation warnings (issue 22: the licence build warning)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_string_and_setuptools_supports_it():
    data = tomllib.loads(PYPROJECT.read_text())
    # setuptools >= 77 warns (BuildBackendWarning) on the table form `license = {text = ...}`
    license_ = data["project"]["license"]
    assert isinstance(license_, str), "project.license must be an SPDX string, not a table"
    assert re.fullmatch(r"[A-Za-z0-9.\-+]+( (AND|OR|WITH) [A-Za-z0-9.\-+]+)*", license_), license_
    # ... and the SPDX string form needs setuptools >= 77 to build at all
    floors = [re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", r) for r in data["build-system"]["requires"]
              if r.startswith("setuptools")]
    assert floors and floors[0] and int(floors[0].group(1)) >= 77, data["build-system"]["requires"]
    assert not any(c.startswith("License ::") for c in data["project"].get("classifiers", [])), \
        "licence classifiers are deprecated beside an SPDX license expression"
