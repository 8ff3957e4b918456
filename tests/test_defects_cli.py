"""``usersim``: every subcommand is listed and a subcommand whose module cannot be imported is an
error, never silently left out of the menu."""

import importlib

import pytest

from usersim import cli


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_module_imports_and_has_its_function(name):
    module, func, _ = cli.SUBCOMMANDS[name]
    assert callable(getattr(importlib.import_module(module), func))


def test_a_subcommand_whose_module_is_missing_is_listed_and_fails_loudly(monkeypatch, capsys):
    monkeypatch.setitem(cli.SUBCOMMANDS, "ghost", ("usersim.no_such_stage", "cli", "a stage that is not there"))
    assert cli.main(["--help"]) == 0
    assert "  ghost" in capsys.readouterr().out
    with pytest.raises(ModuleNotFoundError, match="usersim.no_such_stage"):
        cli.main(["ghost"])


def test_unknown_subcommand_lists_every_subcommand(capsys):
    assert cli.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usersim: unknown subcommand 'nope'")
    assert all(f"  {name}" in err for name in cli.SUBCOMMANDS)
