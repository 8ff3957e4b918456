"""The fidelity metrics as local Hugging Face ``evaluate`` modules, one folder each, laid out like a
Hub metric Space (``<name>/<name>.py`` with an ``evaluate.Metric`` and a ``README.md`` metric card):

* ``user_turn_discrimination``: unpaired real vs candidate turns, the numbers of ``usersim discriminate``;
* ``paired_user_turn_discrimination``: real and simulated turn per context, the eval's paired headline.

Both are thin wrappers: they call usersim.eval.discriminators / usersim.eval.paired / usersim.eval.judges and compute nothing
themselves. ``evaluate.load`` copies a module's script into its modules cache
(``HF_MODULES_CACHE``) and imports it from there, so the script reaches this package through the
installed ``usersim.eval`` package, never through a relative import. Loading by path
needs no network::

    import evaluate
    from usersim.eval.metrics import module_path
    metric = evaluate.load(module_path("paired_user_turn_discrimination"))
"""

from __future__ import annotations

from pathlib import Path

MODULES = ("user_turn_discrimination", "paired_user_turn_discrimination")


def module_path(name: str) -> str:
    """The folder of the ``evaluate`` module ``name``, for ``evaluate.load`` (works from a wheel too)."""
    if name not in MODULES:
        raise ValueError(f"no evaluate module {name!r}; the modules are {', '.join(MODULES)}")
    return str(Path(__file__).resolve().parent / name)
