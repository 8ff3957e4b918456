"""``usersim <subcommand>``: one dispatcher, each subcommand a thin ``cli(argv)`` in its stage.

This is the only module that imports every stage; the stages never import it.
"""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> (module, function, one-line help). Modules are imported only when used.
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("usersim.data_prep.main", "cli", "corpora -> validated, user-split, role-reversed dataset"),
    "show": ("usersim.data_prep.show", "cli", "print a dataset record with its supervised spans highlighted"),
    "train": ("usersim.train.main", "cli", "LoRA fine-tune a base LM into a user simulator"),
    "decoding": ("usersim.eval.decoding_choice", "cli",
                 "choose the simulator's decoding on validation users (writes RUN_DIR/decoding.json)"),
    "eval": ("usersim.eval.main", "cli", "fidelity of a trained simulator against held-out humans"),
    "discriminate": ("usersim.eval.discriminate_cli", "cli", "score any candidate user turns against real ones"),
    "report": ("usersim.eval.report", "cli", "render report.html / report.md from an eval run"),
    "publish": ("usersim.publish", "cli", "write (and optionally push) the Hub folder with a model card"),
    "chat": ("usersim.chat", "cli", "talk to a simulator: you play the assistant"),
    "rl": ("usersim.rl.main", "cli", "GRPO-train an assistant policy against a trained simulator (TRL)"),
}


def _usage() -> str:
    width = max(len(n) for n in SUBCOMMANDS)
    lines = ["usage: usersim <subcommand> [args...]", "", "subcommands:"]
    lines += [f"  {n.ljust(width)}  {h}" for n, (_, _, h) in SUBCOMMANDS.items()]
    return "\n".join(lines)


# What shells report for a writer stopped by SIGPIPE (128 + 13): `usersim show ... | head` ends
# the way `cat big | head` does, so a script under `set -o pipefail` still sees the cut.
EXIT_BROKEN_PIPE = 141


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. When stdout's reader goes away early (``usersim show ... | head``),
    stop quietly with :data:`EXIT_BROKEN_PIPE` instead of printing a BrokenPipeError traceback."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # inside the try: a write that fails must fail here, not at exit
        return code
    except BrokenPipeError:
        # Nobody reads stdout any more. Point it at /dev/null so that the interpreter's own final
        # flush of whatever is still buffered does not raise a second time on the way out.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _run(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"usersim: unknown subcommand {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module, func, _ = SUBCOMMANDS[name]
    # Every subcommand is part of the install: a module that fails to import is a broken install,
    # and its ImportError is raised as it is rather than the subcommand being hidden.
    return int(getattr(importlib.import_module(module), func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
