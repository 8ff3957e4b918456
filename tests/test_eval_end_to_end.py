"""End to end: a tiny held-out dataset + a tiny trained run -> `usersim eval` -> contract-valid outputs."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tiny_run lives beside the tests

from usersim.data_prep.records import per_turn_items  # noqa: E402
from usersim.data_prep.stage_config import load_config  # noqa: E402
from usersim.eval.config import EvalConfig  # noqa: E402
from usersim.eval.items import select_items  # noqa: E402
from usersim.eval.behaviour_suite import aligned_curves  # noqa: E402
from usersim.eval.main import cli  # noqa: E402
from usersim.eval.outputs import format_table  # noqa: E402
from usersim.eval.registry import Metric  # noqa: E402
from metrics_contract import validate_metrics_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LINES = [
    ("hey how are you", "Good thanks! Any plans?"),
    ("i have two dogs and we go hiking a lot", "Nice! Where do you hike?"),
    ("whats a good trail near denver?", "Mount Falcon is lovely."),
    ("cool thanks so much", "You're welcome!"),
]


def tiny_records(n_users: int = 8) -> list[dict]:
    records = []
    for u in range(n_users):
        turns = []
        for k, (user, assistant) in enumerate(LINES[: 2 + u % 3]):
            turns.append({"role": "user", "text": user if u % 2 else user.capitalize() + "."})
            turns.append({"role": "assistant", "text": assistant})
        end = u % 2 == 0
        if not end:
            turns = turns[:-1]
        records.append({
            "id": f"conv{u}", "source": "tiny", "user_id": f"user{u}", "group_id": f"g{u}", "other_user_ids": [],
            "turns": turns, "end_of_conversation": end, "metadata": "{}",
            "condition": {"persona": f"country: {'US' if u % 2 else 'UK'}", "goal": "hiking, dogs",
                          "knowledge_discloses": ["dogs, hiking"], "knowledge_asks": ["trail, denver"],
                          "style": {"length": "short", "casing": "lower" if u % 2 else "proper",
                                    "punctuation": "", "emoji": "", "typos": ""}},
        })
    return records


def write_data_run(root: Path, records: list[dict], validation: list[dict] | None = None) -> Path:
    from datasets import Dataset, DatasetDict

    items = [it for r in records for it in per_turn_items(r)]
    splits = {"test": Dataset.from_list(records), "test_turns": Dataset.from_list(items)}
    if validation:
        splits["validation"] = Dataset.from_list(validation)
        splits["validation_turns"] = Dataset.from_list([it for r in validation for it in per_turn_items(r)])
    DatasetDict(splits).save_to_disk(str(root / "dataset"))
    return root


def validation_records(n_users: int = 8) -> list[dict]:
    """Other users for the headline judge's choice (validation users never appear in test)."""
    out = []
    for r in tiny_records(n_users):
        out.append({**r, "id": "v" + r["id"], "user_id": "v" + r["user_id"], "group_id": "v" + r["group_id"]})
    return out


def test_every_eval_yaml_loads_and_starts_with_its_command():
    paths = sorted((ROOT / "configs" / "eval").glob("*.yaml"))
    assert {p.name for p in paths} >= {"default.yaml", "smoke.yaml", "full.yaml"}
    for p in paths:
        cfg = load_config(EvalConfig, p)
        assert p.read_text().startswith("# usersim eval --config configs/eval/" + p.name)
        assert cfg.max_items > 0


def test_select_items_takes_whole_conversations_deterministically():
    items = [it for r in tiny_records() for it in per_turn_items(r)]
    a = select_items(items, 6, seed=1)
    assert a == select_items(items, 6, seed=1)
    convs = {it["conversation_id"] for it in a}
    assert len(a) == sum(it["conversation_id"] in convs for it in items) >= 6
    assert select_items(items, 0, seed=1) == items
    capped = select_items(items, 100, seed=1, per_conversation=2)
    per_conv = {}
    for it in capped:
        per_conv[it["conversation_id"]] = per_conv.get(it["conversation_id"], 0) + 1
    assert max(per_conv.values()) == 2 and len(per_conv) == len(tiny_records())


def test_aligned_curves_and_table():
    out = aligned_curves({"human": {"0": 0.1, "1": 0.2}, "simulator": {"1": 0.3, "2": 0.4}})
    assert out == {"turn_index": [1], "human": [0.2], "simulator": [0.3]}
    table = format_table([Metric("x", "simulator", "g", 0.5, 0.4, 0.6, 3)], ["simulator"])
    assert "0.5 [0.4, 0.6]" in table


def test_eval_end_to_end_with_a_tiny_model_writes_contract_valid_outputs(tmp_path, monkeypatch):
    import torch

    from test_eval_llm_judge import JudgeServer, longer_judge
    from tiny_run import build_tiny_run

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = JudgeServer(longer_judge)  # a real local OpenAI-style server playing the llm judge

    torch.set_num_threads(1)
    records = tiny_records()
    data_dir = write_data_run(tmp_path / "data", records, validation_records())
    run_dir = build_tiny_run(tmp_path / "train", records=records, train_steps=3)
    out = tmp_path / "eval"
    with server:
        rc = cli(["--config", str(ROOT / "configs/eval/smoke.yaml"), "--output_dir", str(out), f"data_dir={data_dir}",
                  f"run_dir={run_dir}", "max_items_per_conversation=0", "max_new_tokens=8", "exclude_capped=false",
                  "n_boot=50", "show_progress=false", "neural_discriminator=true", "headline_judge=auto",
                  "diversity_prompts=2", "num_diversity_samples=2", "controllability_items=4",
                  f"llm_judge.endpoint={server.url}", "llm_judge.endpoint_model=judge-test"])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    validate_metrics_json(doc)
    rows = {(m["name"], m["system"]): m for m in doc["metrics"]}
    # the smoke profile's teacher-forced condition use: the simulator and the base, per counterfactual
    cost = rows[("condition_cost_style_swapped", "simulator")]
    assert ("condition_cost_style_swapped", "base") in rows and cost["group"] == "controllability"
    assert cost["ci_low"] <= cost["value"] <= cost["ci_high"] and 2 <= cost["n"] <= 4
    for name in ("heldout_perplexity", "paired_accuracy", "paired_accuracy_neural",
                 "turn_length_wasserstein", "knowledge_leak_rate", "assistant_likeness_rate", "end_f1",
                 "disclosure_area_between_curves", "sample_self_similarity", "style_drift"):
        for system in ("simulator", "base"):
            assert (name, system) in rows, (name, system)
    for system in ("human", "simulator", "base"):
        assert rows[("condition_copy_rate", system)]["target"] == 0.0
    assert rows[("condition_copy_rate", "human")]["value"] == 0.0  # leak-free conditions: no 4-gram of the turn
    assert ("control_topic_gap_swapped", "simulator") in rows
    # the compliance suite: every probe on 3 real contexts, each system's replies judged, rates with CIs
    from usersim.eval.compliance import PROBES

    comp = doc["compliance"]
    assert comp["n_contexts"] == 3 and comp["n_items"] == 3 * len(PROBES) and set(comp["systems"]) == {"simulator", "base"}
    for system in ("simulator", "base"):
        rate = rows[("compliance_rate", system)]
        assert rate["higher_is_better"] is False and 0 < rate["n"] <= comp["n_items"]
        assert rate["ci_low"] <= rate["value"] <= rate["ci_high"]
        assert comp["systems"][system]["overall"]["rate"] == rate["value"]
        assert set(comp["systems"][system]["per_probe"]) <= {p.id for p in PROBES}
    assert ("direct_question_answer_rate", "human") in rows and ("compliance_rate", "human") not in rows
    ppl = rows[("heldout_perplexity", "simulator")]
    assert ppl["value"] > 1 and ppl["ci_low"] <= ppl["value"] <= ppl["ci_high"]
    acc = rows[("paired_accuracy", "simulator")]
    assert acc["target"] == 0.5 and 0 <= acc["value"] <= 1 and 0 < acc["p_value"] <= 1
    assert acc["null_low"] <= 0.5 <= acc["null_high"] and acc["mde"] > 0
    head = doc["headline"]
    assert head["verdict"] in {"distinguishable", "indistinguishable", "too_small_to_tell", "miscalibrated"}
    assert head["n_pairs"] == doc["paired"]["simulator"]["fast"]["n_pairs"] and str(head["n_pairs"]) in head["sentence"]
    excluded = doc["paired"]["simulator"]["excluded"]
    assert head["n_pairs"] + sum(excluded.values()) == doc["n_items"]
    trunc = doc["truncation"]
    assert trunc["hit_cap"]["simulator"] > 0 and trunc["capped_excluded"] is False
    # the simulator's cap is the comparison budget: its capped turns are compared (cut), never left out
    assert trunc["cut_at_budget"]["simulator"] >= trunc["hit_cap"]["simulator"] and trunc["capped"]["simulator"] == 0
    assert "human" in trunc["cut_at_budget"] and 0 <= trunc["prompt_turns_dropped"] <= doc["n_items"]
    assert set(doc["controls"]["human_vs_human"]) == {"fast", "neural", "lm"}
    assert ("paired_accuracy_lm", "simulator") in rows
    # the llm judge was asked about every complete pair of every system, once each
    llm = doc["paired"]["simulator"]["llm"]
    assert rows[("paired_accuracy_llm", "simulator")]["n"] == llm["n_pairs"] == doc["paired"]["simulator"]["fast"]["n_pairs"]
    assert len(server.requests) == sum(doc["paired"][s]["llm"]["n_pairs"] for s in ("simulator", "base"))
    assert 0 <= llm["position_first_share"] <= 1
    # simulator minus each baseline, per judge, on the same items
    diffs = doc["paired_differences"]["simulator_minus_base"]
    assert {"paired_accuracy", "paired_accuracy_neural", "paired_accuracy_lm", "paired_accuracy_llm",
            "heldout_perplexity"} <= set(diffs)
    assert diffs["paired_accuracy_lm"]["ci_low"] <= diffs["paired_accuracy_lm"]["value"] <= diffs["paired_accuracy_lm"]["ci_high"]
    assert "against the baselines" in head["baselines_sentence"].lower()
    # the headline judge was chosen on the validation users, before the test items (headline_judge: auto)
    sel = doc["judge_selection"]
    assert sel["split"] == "validation" and sel["judge"] == head["judge"] and sel["judge"] in {"fast", "neural", "lm"}
    assert set(sel["scores"]) == {"fast", "neural", "lm"} and head["judge_choice"] == sel["reason"]
    assert all(0 <= sel["scores"][j]["null_p_value"] <= 1 for j in sel["scores"])
    assert {"simulator_vs_itself", "simulator_hot", "base"} <= set(doc["controls"]["paired"])
    assert doc["controls"]["paired"]["simulator_vs_itself"]["role"] == "null"
    assert set(doc["truncation"]["capped"]) >= {"simulator", "base", "simulator_resample", "simulator_hot"}
    assert doc["train_run"]["base_model"]["source"] == "tiny-random"
    assert (out / "config.yaml").is_file() and (out / "run_info.json").is_file()

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    n_items = sum(len(per_turn_items(r)) for r in records)
    assert len(samples) == n_items == doc["n_items"]
    for key in ("id", "user_id", "condition", "history_tail", "real", "simulated", "base", "real_ends",
                "simulated_ends", "base_ends", "simulated_capped", "simulated_cut", "real_cut"):
        assert key in samples[0]
    assert sum(s["real_ends"] for s in samples) == sum(r["end_of_conversation"] for r in records)

    plots = json.loads((out / "plots.json").read_text())
    assert set(plots) >= {"turn_length", "disclosure_curve", "drift"}
    assert len(plots["turn_length"]["human"]) == n_items - sum(s["real_ends"] for s in samples)
    assert len(plots["disclosure_curve"]["turn_index"]) == len(plots["disclosure_curve"]["human"])

    # the report and the model card render from this real output (not only from invented numbers)
    from usersim.eval.report import cli as report_cli

    assert report_cli([str(out)]) == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "paired" in html.lower() and f"{head['n_pairs']} pairs" in html


def test_eval_refuses_items_whose_condition_holds_their_target(tmp_path):
    from usersim.eval.main import load_held_out

    records = tiny_records()
    for r in records:  # the old, leaky conditioning: a verbatim user sentence as knowledge
        r["condition"]["knowledge_discloses"] = ["i have two dogs and we go hiking a lot"]
    data_dir = write_data_run(tmp_path / "data", records)
    with pytest.raises(ValueError, match="4-word span"):
        load_held_out(EvalConfig(data_dir=str(data_dir), max_items=0, max_items_per_conversation=0))


def test_eval_fails_clearly_without_a_data_run(tmp_path):
    from usersim.eval.main import load_held_out

    with pytest.raises(FileNotFoundError, match="usersim data"):
        load_held_out(EvalConfig(data_dir=str(tmp_path / "nope")))


def test_decoding_is_chosen_on_validation_users_and_used_by_eval(tmp_path):
    """`usersim decoding` writes decoding.json beside the adapter (candidates judged on validation users, the
    end bias calibrated to their end rate); `usersim eval` then decodes the simulator that way."""
    import torch

    from tiny_run import build_tiny_run
    from usersim.eval.decoding_choice import cli as decoding_cli
    from usersim.simulator import UserSimulator

    torch.set_num_threads(1)
    records = tiny_records()
    data_dir = write_data_run(tmp_path / "data", records, validation_records())
    run_dir = build_tiny_run(tmp_path / "train", records=records, train_steps=3)
    common = [f"data_dir={data_dir}", f"run_dir={run_dir}", "max_new_tokens=8", "show_progress=false",
              "neural_discriminator=false", "lm_judge=false", "n_permutations=50", "n_boot=50"]
    assert decoding_cli(["--config", str(ROOT / "configs/eval/smoke.yaml"), *common, "decoding_items=0",
                         "decoding_candidates=[[1.0,0.95],[0.5,0.9]]"]) == 0
    doc = json.loads((Path(run_dir) / "decoding.json").read_text())
    assert doc["split"] == "validation" and doc["n_users"] >= 2
    assert [(c["temperature"], c["top_p"]) for c in doc["candidates"]] == [(1.0, 0.95), (0.5, 0.9)]
    best = min(doc["candidates"], key=lambda c: c["accuracy"])
    assert (doc["chosen"]["temperature"], doc["chosen"]["top_p"]) == (best["temperature"], best["top_p"])
    n_val = len(validation_records())
    assert doc["end"]["human_items"] == n_val  # one item per validation conversation, the eval's item rule
    rule = select_items([it for r in validation_records() for it in per_turn_items(r)], 0, 0 + 13, 1)
    assert doc["end"]["human_rate"] == sum(it["target_is_end"] for it in rule) / n_val
    assert 0 < doc["end"]["human_rate"] <= sum(r["end_of_conversation"] for r in validation_records()) / n_val
    assert isinstance(doc["chosen"]["end_bias"], float)
    # the calibrated bias makes the expected end rate on the validation items the humans' rate
    assert doc["end"]["reached"] is True and abs(doc["end"]["expected_rate"] - doc["end"]["human_rate"]) < 1e-3
    assert UserSimulator.from_pretrained(run_dir).decoding == doc["chosen"]

    out = tmp_path / "eval"
    assert cli(["--config", str(ROOT / "configs/eval/smoke.yaml"), "--output_dir", str(out), *common,
                "headline_judge=fast", "controls=false", "diversity_prompts=0", "controllability_items=0",
                "perplexity=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["decoding"] == {"source": "decoding.json", **doc["chosen"]}
    rows = {(m["name"], m["system"]) for m in metrics["metrics"]}
    assert {("end_auc", "simulator"), ("end_f1_expected", "simulator")} <= rows  # only the explicit decision
    assert not {("end_auc", "base"), ("end_f1_expected", "base")} & rows
    assert {("artefact_rate", s) for s in ("human", "simulator", "base")} <= rows


def test_choices_made_before_the_eval_refuse_the_eval_split(tmp_path):
    from usersim.eval.items import other_users_items

    data_dir = write_data_run(tmp_path / "data", tiny_records(), validation_records())
    assert {it["user_id"] for it in other_users_items(str(data_dir), "validation", "test", "the decoding")} == \
        {r["user_id"] for r in validation_records()}
    with pytest.raises(ValueError, match="eval's own split: the decoding must be chosen on other users"):
        other_users_items(str(data_dir), "test", "test", "the decoding")
    with pytest.raises(KeyError, match="no split 'train_turns'"):
        other_users_items(str(data_dir), "train", "test", "the decoding")
