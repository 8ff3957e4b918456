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


def test_the_wheel_builds_without_backend_warnings_and_ships_its_data(tmp_path):
    """`pip install .` builds the wheel quietly (no BuildBackendWarning: licence table, folders that "would be
    ignored") and the wheel holds the templates and the evaluate modules that are loaded by path."""
    import subprocess
    import sys
    import zipfile

    import pytest

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} here; the build needs >= 77 (pip's isolated build gets it)")
    import shutil

    # a copy of what the wheel is built from, so the build's own build/ and egg-info land in tmp_path
    root = tmp_path / "src"
    root.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PYPROJECT.parent / name, root / name)
    for folder in ("usersim", "data_prep", "train", "eval"):
        shutil.copytree(PYPROJECT.parent / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation",
                          "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "BuildBackendWarning" not in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    wheel = next(tmp_path.glob("usersim-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("usersim/eval/templates/report.html.j2", "usersim/templates/model_card.md.j2",
                 "usersim/eval/metrics/user_turn_discrimination/user_turn_discrimination.py",
                 "usersim/eval/metrics/paired_user_turn_discrimination/README.md", "usersim/engine.py"):
        assert path in names, path
