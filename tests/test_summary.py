"""usersim.eval.summary: what `make all` ends with, read from metrics.json only."""

from __future__ import annotations

import json
import math

import pytest

from usersim.eval.behaviour import behaviour_metrics, ending_metrics, first_turn_diversity_metrics
from usersim.eval.failure_mode_table import FAILURE_MODES
from usersim.eval.failure_modes import failure_mode_metrics, sample_diversity_metrics
from usersim.eval.eval_run import EvalRunError, find_metric, load_eval_run
from usersim.eval.summary import explain_flag, fmt, fmt_ci, main, page_status, summary_lines
from synthetic_eval_run import HEADLINES, metric_rows, write_tree


def _line(lines: list[str], prefix: str) -> str:
    return next(line for line in lines if line.strip().startswith(prefix))


def test_summary_quotes_the_headline_verdict_and_numbers(tmp_path):
    run = load_eval_run(write_tree(tmp_path / "runs" / "default"))
    lines = summary_lines(run)
    assert lines[0] == "headline: " + HEADLINES["distinguishable"]["sentence"]
    verdict = _line(lines, "verdict:")
    assert "DISTINGUISHABLE FROM HELD-OUT HUMANS" in verdict and "[neutral]" in verdict
    assert ("paired accuracy (fast judge) 0.62 [0.552, 0.691], p = 0.003, null band [0.431, 0.569], MDE ±0.137, "
            "104 pairs from 38 users") in verdict
    assert _line(lines, "flags:") == "flags:    none"
    assert _line(lines, "controls:") == "controls: 6 of 6 passed"
    assert "simulator 23.4 [22.2, 24.6] vs base 61.8 [58.7, 64.9]" in _line(lines, "perplexity:")
    assert "paired difference simulator - base -38.4 [-44.1, -33]" in _line(lines, "perplexity:")
    assert "prompted: not scored" in _line(lines, "perplexity:")
    run_line = _line(lines, "run:")
    assert "train 512 s" in run_line and "300 steps" in run_line and "adapter 1.1 KB" in run_line
    assert "140 held-out items, 41 users" in run_line and "simulate 302 s" in run_line


def test_one_line_per_failure_mode_with_every_system(tmp_path):
    lines = summary_lines(load_eval_run(write_tree(tmp_path)))
    start = lines.index(next(line for line in lines if line.startswith("failure modes")))
    modes = lines[start + 1:start + 1 + len(FAILURE_MODES)]
    assert [m.strip().split(" (")[0].split(": not computed")[0] for m in modes] == [f.label for f in FAILURE_MODES]
    assert modes[0].strip() == ("too knowledgeable (knowledge_leak_rate): human 0.02 [0, 0.04] | simulator 0.05 "
                                "[0.03, 0.07] | base 0.09 [0.07, 0.11] | prompted 0.38 [0.36, 0.4]")
    assert "spoon-feeding (disclosure_area_between_curves): human floor 0.06 |" in modes[1]
    # diversity: sample_self_similarity has no human reference, so the line shows the floor-backed distance
    assert "lack of diversity (lexical_diversity_mattr_abs_diff): human floor 0.018" in modes[5]


def test_without_prompted_no_prompted_column(tmp_path):
    lines = summary_lines(load_eval_run(write_tree(tmp_path, with_prompted=False)))
    assert not any("prompted" in line for line in lines)


def test_main_accepts_profile_dir_and_prints_report_path(tmp_path, capsys):
    ev = write_tree(tmp_path / "runs" / "smoke")
    (ev / "report.html").write_text("<html></html>")
    assert main([str(tmp_path / "runs" / "smoke")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"report: {ev / 'report.html'}"
    assert out[1].startswith("  headline: At n = 104 pairs")


def test_main_says_when_report_is_not_rendered(tmp_path, capsys):
    ev = write_tree(tmp_path / "run")
    assert main([str(ev)]) == 0
    assert "usersim report" in capsys.readouterr().out.splitlines()[0]


def test_flags_are_printed_in_words(tmp_path):
    run = load_eval_run(write_tree(tmp_path, verdict="miscalibrated",
                                   flags=["headline_below_chance", "no_power:base"], failed_controls=("base",)))
    lines = summary_lines(run)
    flags = [line for line in lines if line.startswith("flag:")]
    assert len(flags) == 2
    assert "headline_below_chance: the judge calls the simulated turn the real one" in flags[0]
    assert "no_power:base: the positive control 'base' was not caught" in flags[1]
    assert "[red]" in _line(lines, "verdict:") and "FAILED: base" in _line(lines, "controls:")


@pytest.mark.parametrize("kwargs,colour", [
    ({"verdict": "indistinguishable"}, "green"),
    ({"verdict": "distinguishable"}, "neutral"),
    ({"verdict": "too_small_to_tell"}, "amber"),
    ({"verdict": "miscalibrated"}, "red"),
    ({"verdict": "indistinguishable", "flags": ["null_control_rejected"]}, "red"),
    ({"verdict": "indistinguishable", "failed_controls": ("base",), "flags": []}, "red"),
    ({"verdict": "indistinguishable", "failed_controls": ("human_vs_human",), "flags": []}, "red"),
    ({"verdict": "too_small_to_tell", "flags": ["too_small_to_tell", "no_power:simulator_hot"]}, "red"),
])
def test_page_status(tmp_path, kwargs, colour):
    assert page_status(load_eval_run(write_tree(tmp_path, **kwargs))).colour == colour


def test_green_needs_controls(tmp_path):
    ev = write_tree(tmp_path, verdict="indistinguishable")
    doc = json.loads((ev / "metrics.json").read_text())
    doc["controls"] = {"paired": {}, "human_vs_human": {}, "flags": []}
    (ev / "metrics.json").write_text(json.dumps(doc))
    status = page_status(load_eval_run(ev))
    assert status.colour == "grey" and "controls were not run" in status.title


def test_unknown_flag_is_red_and_shown_as_is(tmp_path):
    run = load_eval_run(write_tree(tmp_path, verdict="indistinguishable", flags=["something_new"]))
    status = page_status(run)
    assert status.colour == "red" and status.reasons == ["something_new"]
    assert explain_flag("something_new") == "something_new"


def test_missing_parts_read_not_computed(tmp_path):
    ev = write_tree(tmp_path, with_samples=False, with_plots=False)
    doc = json.loads((ev / "metrics.json").read_text())
    doc["metrics"] = [m for m in doc["metrics"] if m["group"] not in ("perplexity", "failure_mode")]
    doc["controls"] = {}
    for key in ("n_items", "n_users", "n_conversations", "headline", "paired_differences", "timings_s"):
        doc.pop(key)
    doc["train_run"] = {"run_dir": str(tmp_path / "gone")}
    (ev / "metrics.json").write_text(json.dumps(doc))
    lines = summary_lines(load_eval_run(ev))
    assert lines[0] == "headline: not computed" and "not computed" in lines[1]
    assert _line(lines, "controls:").endswith("not computed")
    assert "too knowledgeable: not computed" in "\n".join(lines)
    assert "simulator not computed vs base not computed" in _line(lines, "perplexity:")
    assert _line(lines, "run:") == "run:      not computed; eval steps: not computed"


def test_no_metrics_json_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(EvalRunError, match="usersim eval"):
        load_eval_run(tmp_path)
    assert main([str(tmp_path)]) == 1
    assert "no metrics.json" in capsys.readouterr().err


def test_find_metric_prefers_names_in_order():
    rows = [{"name": "b", "system": "simulator", "value": 2}, {"name": "a", "system": "simulator", "value": 1}]
    assert find_metric(rows, ("a", "b"), "simulator")["value"] == 1
    assert find_metric(rows, ("a",), "base") is None


@pytest.mark.parametrize("value,expected", [(None, "not computed"), (math.nan, "not computed"), (0.61234, "0.612"),
                                            (12345.6, "12,346"), (7, "7"), (True, "yes")])
def test_fmt(value, expected):
    assert fmt(value) == expected


def test_fmt_ci_without_interval():
    assert fmt_ci({"value": 0.5, "ci_low": None, "ci_high": None}) == "0.5"
    assert fmt_ci({"value": None}) == "not computed"
    assert fmt_ci({"accuracy": 0.6, "ci_low": 0.5, "ci_high": 0.7}, "accuracy") == "0.6 [0.5, 0.7]"


def _names_the_stage_writes() -> set[str]:
    """Names of the behaviour and failure-mode rows the eval stage's own functions produce."""
    cond = {"knowledge_discloses": ["two dogs"], "knowledge_asks": ["best trail near denver"],
            "style": {"length": "short", "casing": "lower"}}
    items = [{"user_id": f"u{i % 3}", "turn_index": i % 4, "condition": cond,
              "history": [{"role": "user", "text": "what trail is best?"}, {"role": "assistant", "text": "Falcon."}]}
             for i in range(12)]
    human = ["i have two dogs", "is the best trail near denver?", "ok thanks", "bye"] * 3
    texts = {"human": human, "simulator": list(reversed(human))}
    ends = {"human": [i % 4 == 3 for i in range(12)], "simulator": [False] * 12}
    users, tix = [it["user_id"] for it in items], [it["turn_index"] for it in items]
    # the simulator decided its ends explicitly (usersim.engine.EndControl): its end probabilities give end_auc
    rows = failure_mode_metrics(items, texts, ends, end_chances={"simulator": [0.01 * (i + 1) for i in range(12)]},
                                n_boot=5)[0]
    rows += sample_diversity_metrics({"simulator": [["a b", "a c"]]}, ["u0"], n_boot=5)
    rows += behaviour_metrics(human, {"simulator": texts["simulator"]}, users, n_boot=5)
    rows += ending_metrics(ends["human"], {"simulator": ends["simulator"]}, users, tix, n_boot=5)
    rows += first_turn_diversity_metrics(human, {"simulator": texts["simulator"]}, users, tix, n_boot=5)
    # the compliance suite's rows: the probes' compliance rate and the direct-question answer rate
    from usersim.eval.compliance import PROBES, compliance_rates, probe_items
    from usersim.eval.compliance_suite import answer_rate_metrics, compliance_metric
    from usersim.eval.simulate import SystemTurns

    asked = [{**it, "id": f"i{k}", "conversation_id": f"c{k}", "target": h, "target_is_end": e,
              "history": it["history"] + [{"role": "assistant", "text": "Do you have pets?"}]}
             for k, (it, h, e) in enumerate(zip(items, human, ends["human"]))]
    rows += answer_rate_metrics(asked, {"simulator": SystemTurns(texts["simulator"], ends["simulator"], [False] * 12)},
                                ["simulator"], n_boot=5, seed=0)
    probed = probe_items(asked, PROBES, seed=0, max_items=2)
    rows.append(compliance_metric("simulator", compliance_rates(probed, [("ok", False)] * len(probed), n_boot=5)["overall"]))
    return {m.name for m in rows}


def test_failure_modes_and_the_synthetic_run_name_only_metrics_the_stage_writes():
    written = _names_the_stage_writes()
    assert {name for mode in FAILURE_MODES for name in mode.metrics} <= written
    synthetic = {r["name"] for r in metric_rows() if r["group"] in ("behaviour", "failure_mode")}
    assert synthetic <= written, synthetic - written
