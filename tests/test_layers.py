"""The layers of the codebase and what each may import (README, Layout): imports run one way.

Every ``import``/``from ... import`` in product code, at module level or inside a function, is checked
against its layer's allowed first-party prefixes; first-party code is only ever imported under the
``usersim.`` namespace (top-level ``train``/``eval``/``data_prep`` would collide with a user's own).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA, TRAIN, ENGINE, EVAL = "usersim.data_prep", "usersim.train", "usersim.engine", "usersim.eval"
# the runtime: the simulated users (one interface, usersim.users, and its backends) and their HTTP client
RUNTIME = ("usersim.simulator", "usersim.run_files", "usersim.users", "usersim.prompted", "usersim.completions",
           "usersim.openai_http")
# (files of the layer, first-party modules it may import); usersim/cli.py, publish.py and rl/ sit on top
LAYERS = {
    "data_prep": (sorted((ROOT / "data_prep").rglob("*.py")), (DATA,)),
    "train": (sorted((ROOT / "train").rglob("*.py")), (DATA, TRAIN)),
    # the generation engine knows token ids only: no chat format, no model loading
    "engine": ([ROOT / "usersim" / "engine.py"], ()),
    # the simulated users (usersim.users and its backends) and the chat CLI over them
    "runtime": ([ROOT / "usersim" / f for f in ("simulator.py", "run_files.py", "users.py", "prompted.py", "completions.py",
                                                "openai_http.py", "chat.py")], (DATA, TRAIN, ENGINE, *RUNTIME)),
    "eval": (sorted((ROOT / "eval").rglob("*.py")), (DATA, TRAIN, ENGINE, *RUNTIME, EVAL)),
}
FIRST_PARTY = ("usersim", "data_prep", "train", "eval")


def first_party_imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out += [(node.lineno, n) for n in names if n.split(".")[0] in FIRST_PARTY]
    return out


def allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer):
    files, prefixes = LAYERS[layer]
    assert files and all(p.is_file() for p in files)
    bad = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in files for line, m in first_party_imports(p)
           if not allowed(m, prefixes)]
    assert not bad, "\n".join(bad)


def test_first_party_code_is_imported_under_the_usersim_namespace():
    files = [p for folder in ("data_prep", "train", "eval", "usersim", "bench", "tests") for p in (ROOT / folder).rglob("*.py")]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in files for line, m in first_party_imports(p)
           if not m.startswith("usersim")]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_among_product_modules():
    """No module imports (even under TYPE_CHECKING) a module that imports it back, directly or not
    (the rl environment and its rewards once did: both now import usersim.rl.transcript)."""
    roots = {"usersim": ROOT / "usersim", "usersim.data_prep": ROOT / "data_prep", "usersim.train": ROOT / "train",
             "usersim.eval": ROOT / "eval"}
    modules: dict[str, Path] = {}
    for prefix, folder in roots.items():
        for path in folder.rglob("*.py"):
            if prefix == "usersim" and path.relative_to(folder).parts[0] in ("templates",):
                continue
            rel = path.relative_to(folder).with_suffix("").parts
            name = ".".join((prefix, *rel)).removesuffix(".__init__")
            modules.setdefault(name, path)
    graph = {name: {m for _, m in first_party_imports(path) if m in modules and m != name}
             for name, path in modules.items() if "metrics." not in name}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
