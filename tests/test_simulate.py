"""usersim.eval.simulate.generate_turns: shape, order/batch independence, base switch, condition override."""

from __future__ import annotations

import pytest
import torch

from usersim.data_prep.prompt_format import Condition
from usersim.data_prep.records import per_turn_items
from usersim.engine import length_order
from usersim.eval.simulate import generate_turns, item_condition
from tiny_run import tiny_records
from usersim.simulator import SimulatorTurn, UserSimulator

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def items():
    return [item for record in tiny_records() for item in per_turn_items(record)]


def test_shape_and_types(tiny_sim, items):
    out = generate_turns(tiny_sim, items, seed=0, batch_size=3, num_samples=2, max_new_tokens=8, show_progress=False)
    assert len(out) == len(items)
    assert all(len(samples) == 2 and all(isinstance(t, SimulatorTurn) for t in samples) for samples in out)
    assert all(1 <= t.tokens <= 8 for samples in out for t in samples)


def test_results_do_not_depend_on_batch_size_or_item_order(tiny_sim, items):
    kwargs = dict(seed=5, num_samples=2, max_new_tokens=12, show_progress=False)
    a = generate_turns(tiny_sim, items, batch_size=4, **kwargs)
    b = generate_turns(tiny_sim, items[::-1], batch_size=3, **kwargs)[::-1]
    c = generate_turns(tiny_sim, items, batch_size=1, **kwargs)
    assert a == b == c
    assert generate_turns(tiny_sim, items, batch_size=4, **{**kwargs, "seed": 6}) != a


def test_use_adapter_false_is_the_untuned_base(tiny_sim, tiny_run_dir, items):
    base_sim = UserSimulator.from_base(tiny_run_dir.parent / "base_model", device="cpu")
    kwargs = dict(seed=1, batch_size=4, max_new_tokens=12, show_progress=False)
    tuned_before = generate_turns(tiny_sim, items, **kwargs)
    base_out = generate_turns(tiny_sim, items, use_adapter=False, **kwargs)
    assert base_out == generate_turns(base_sim, items, **kwargs)
    assert generate_turns(tiny_sim, items, **kwargs) == tuned_before  # the adapter is back on afterwards


def test_conditions_override_the_items_condition(tiny_sim, items, monkeypatch):
    seen = []
    real = tiny_sim.generate_from_prompt_ids

    def spy(prompts, seeds=None, **generation):
        seen.extend(tiny_sim.tokenizer.decode(p, skip_special_tokens=True) for p in prompts)
        return real(prompts, seeds=seeds, **generation)

    monkeypatch.setattr(tiny_sim, "generate_from_prompt_ids", spy)
    swapped = [Condition(goal=f"swapped goal {i}") for i in range(len(items))]
    generate_turns(tiny_sim, items, seed=0, batch_size=4, max_new_tokens=4, conditions=swapped, show_progress=False)
    assert sorted(p.split("Goal: ")[1].split("\n")[0] for p in seen) == sorted(c.goal for c in swapped)
    assert not any("weekend plans" in p for p in seen)
    with pytest.raises(ValueError, match="conditions"):
        generate_turns(tiny_sim, items, seed=0, conditions=swapped[:1], show_progress=False)


def test_same_conditions_as_items_change_nothing(tiny_sim, items):
    kwargs = dict(seed=2, batch_size=4, max_new_tokens=8, show_progress=False)
    own = [item["condition"] for item in items]
    assert generate_turns(tiny_sim, items, conditions=own, **kwargs) == generate_turns(tiny_sim, items, **kwargs)


def test_length_order_is_longest_first_and_stable():
    assert length_order([3, 5, 3, 1, 5]) == [1, 4, 0, 2, 3]


def test_at_budget_cuts_every_side_at_the_same_token_count(tiny_sim):
    """Real and simulated turns are compared on their first ``budget`` tokens: a cap is no tell."""
    from usersim.eval.simulate import SystemTurns

    tok = tiny_sim.tokenizer
    budget = 5
    long_text = "one two three four five six seven eight nine ten"
    short_text = "hi there"
    assert len(tok(long_text, add_special_tokens=False)["input_ids"]) > budget
    assert len(tok(short_text, add_special_tokens=False)["input_ids"]) <= budget
    first = tok.decode(tok(long_text, add_special_tokens=False)["input_ids"][:budget], skip_special_tokens=True).strip()

    human = SystemTurns([long_text, short_text, None], [False, False, True], [False, False, False])
    seen = human.at_budget(tok, budget, capped_at_budget=False)
    assert seen.texts == [first, short_text, None] and seen.cut == [True, False, False]
    assert seen.capped == [False, False, False] and seen.ends == [False, False, True]

    # same tokenizer and cap: a capped turn is already cut at the budget, so it is compared, not left out
    sim = SystemTurns([short_text, short_text], [False, False], [True, False])
    seen = sim.at_budget(tok, budget, capped_at_budget=True)
    assert seen.capped == [False, False] and seen.cut == [True, False] and seen.compared() == [short_text, short_text]

    # another tokenizer's cap that stopped the turn short of the budget: left out, and counted
    other = SystemTurns([short_text, long_text], [False, False], [True, True])
    seen = other.at_budget(tok, budget, capped_at_budget=False)
    assert seen.capped == [True, False] and seen.cut == [False, True]
    assert seen.compared() == [None, first] and seen.n_capped == 1 and seen.n_cut == 1


def test_prompt_ids_built_once_by_the_caller_give_the_same_turns(tiny_sim, items):
    """eval tokenises each prompt once and hands the ids to every system's generation: same turns."""
    kwargs = dict(seed=3, num_samples=2, max_new_tokens=10, batch_size=4, show_progress=False)
    ids = [tiny_sim.prompt_ids(it["history"], item_condition(it)) for it in items]
    assert generate_turns(tiny_sim, items, prompt_ids=ids, **kwargs) == generate_turns(tiny_sim, items, **kwargs)
    with pytest.raises(ValueError, match="one per item"):
        generate_turns(tiny_sim, items, prompt_ids=ids[:-1], **kwargs)
