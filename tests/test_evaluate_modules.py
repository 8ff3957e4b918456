"""The `evaluate` modules (eval/metrics/) load by path offline and give the product's own numbers.

Unpaired: the same real chitchat turns scored by `usersim discriminate` (its CLI, JSON output) and by
`evaluate.load(.../user_turn_discrimination)`. Paired: the same items scored by the eval's own
`run_paired` (with `usersim eval`'s default config) and by `.../paired_user_turn_discrimination`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import evaluate
import pytest

from usersim.eval.config import EvalConfig
from usersim.eval.discriminate_cli import cli
from usersim.eval.judges import FAST
from usersim.eval.discrimination_suite import run_paired
from usersim.eval.metrics import MODULES, module_path
from real_turns import chitchat_user_turns, disjoint_user_samples

REPO = Path(__file__).resolve().parents[1]


def load(name: str):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: nothing may reach the Hub
    return evaluate.load(module_path(name), keep_in_memory=True)


@pytest.fixture(scope="module")
def by_user():
    return chitchat_user_turns(200)  # ~100 real chitchat users: a small slice, loads in about a second


def paired_items(by_user, n_users: int = 12, per_user: int = 3):
    """Real turn, context and user per item; the "simulated" turn is the same user's turn from another
    context (the eval's same_user_other_context control); the last item has no simulated turn."""
    users = sorted(u for u, ts in by_user.items() if len(ts) > per_user)[:n_users]
    real, sim, ctx, uid = [], [], [], []
    for u in users:
        turns = by_user[u][:per_user + 1]
        for i in range(per_user):
            real.append(turns[i][0])
            ctx.append(turns[i][1])
            sim.append(turns[i + 1][0])
            uid.append(u)
    sim[-1] = ""  # an empty turn: left out and counted, as in the eval
    return real, sim, ctx, uid


def test_every_module_has_the_hub_space_layout():
    for name in MODULES:
        folder = Path(module_path(name))
        assert folder.parent == REPO / "eval" / "metrics"
        assert (folder / f"{name}.py").is_file() and (folder / "README.md").is_file()
        assert "## How to Use" in (folder / "README.md").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="no evaluate module 'bleu'"):
        module_path("bleu")


def test_unpaired_module_equals_usersim_discriminate(tmp_path, by_user):
    (rt, ru), (ct, cu) = disjoint_user_samples(by_user, n_users=8, per_user=3, seed=0)
    for name, texts, users in (("real", rt, ru), ("cand", ct, cu)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"user_id": u, "text": t}) + "\n" for t, u in zip(texts, users)), encoding="utf-8")
    out = tmp_path / "scores.json"
    assert cli(["--real", str(tmp_path / "real.jsonl"), "--candidate", str(tmp_path / "cand.jsonl"),
                "--output", str(out), "--no-neural", "--n-boot", "10"]) == 0
    expected = json.loads(out.read_text(encoding="utf-8"))["fast"]

    metric = load("user_turn_discrimination")
    got = metric.compute(texts=rt + ct, user_ids=ru + cu, labels=["real"] * len(rt) + ["candidate"] * len(ct),
                         with_roc=True)
    assert got == expected  # every number, defaults included (judge fast, 1000 permutations, seed 0)
    assert got["n_permutations"] == 1000 and got["n_real"] == len(rt) == 24 and got["n_users"] == 16
    # rows may come interleaved and in batches: the real and candidate turns keep their order
    metric.add_batch(texts=[ct[0], rt[0]], user_ids=[cu[0], ru[0]], labels=[1, 0])
    metric.add_batch(texts=rt[1:] + ct[1:], user_ids=ru[1:] + cu[1:],
                     labels=["real"] * (len(rt) - 1) + ["candidate"] * (len(ct) - 1))
    assert metric.compute(with_roc=True) == expected


def test_paired_module_equals_the_eval(by_user):
    real, sim, ctx, users = paired_items(by_user)
    results, keep, dropped = run_paired({"fast": FAST}, real, sim, ctx, users, EvalConfig())
    assert len(keep) == len(real) - 1 and dropped["empty"] == 1
    expected = {**results["fast"].to_dict(), "excluded": dropped}

    got = load("paired_user_turn_discrimination").compute(
        predictions=sim, references=real, previous_turns=[c.previous for c in ctx],
        own_previous_turns=[c.own_previous for c in ctx], user_ids=users)
    assert got == expected  # every number, with the eval's defaults (2000 permutations, seed 0)
    assert got["n_permutations"] == EvalConfig().n_permutations and got["n_pairs"] == len(real) - 1


def test_inputs_that_do_not_fit_are_refused_clearly(by_user):
    real, sim, ctx, users = paired_items(by_user, n_users=4, per_user=1)
    prev, own = [c.previous for c in ctx], [c.own_previous for c in ctx]
    paired = load("paired_user_turn_discrimination")
    with pytest.raises(ValueError, match=r"one per item: got lengths .*'user_ids': 3"):
        paired.compute(predictions=sim, references=real, previous_turns=prev, own_previous_turns=own,
                       user_ids=users[:3])
    with pytest.raises(ValueError, match=r"needs >= 4 pairs from >= 2 users .*left out.*'empty': 1"):
        paired.compute(predictions=sim, references=real, previous_turns=prev, own_previous_turns=own, user_ids=users)
    with pytest.raises(ValueError, match="unknown judge 'bert'"):
        paired.compute(predictions=real, references=real, previous_turns=prev, own_previous_turns=own,
                       user_ids=users, judge="bert")

    unpaired = load("user_turn_discrimination")
    with pytest.raises(ValueError, match=r"one per turn: got lengths .*'labels': None"):
        unpaired.compute(texts=real, user_ids=users)
    with pytest.raises(ValueError, match=r">= 2 users"):
        unpaired.compute(texts=real, user_ids=["u"] * 4, labels=["real", "real", "candidate", "candidate"])
    with pytest.raises(ValueError, match=r"empty turn .*rows \[3\]"):
        unpaired.compute(texts=sim, user_ids=users, labels=["real", "real", "candidate", "candidate"])
