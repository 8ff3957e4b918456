"""eval.summary: the five lines `make all` ends with, read from metrics.json only."""

from __future__ import annotations

import json
import math

import pytest

from eval.summary import (EvalRunError, find_metric, fmt, fmt_ci, load_eval_run, main, summary_lines,
                          worst_failure_mode)
from synthetic_eval_run import write_tree


def test_summary_lines_quote_stored_numbers(tmp_path):
    run = load_eval_run(write_tree(tmp_path / "runs" / "default"))
    lines = summary_lines(run)
    assert len(lines) == 5
    assert "trained 0.612 [0.581, 0.643] vs base 0.913 [0.882, 0.944]" in lines[0]
    assert "trained 23.4 [22.2, 24.6] vs base 61.8 [58.7, 64.9]" in lines[1]
    assert lines[2].split(":", 1)[1].strip().startswith("ok")
    assert "assistant_likeness_rate" in lines[3] and "human 0.01" in lines[3]
    assert "train 512 s" in lines[4] and "300 steps" in lines[4] and "adapter 1.1 KB" in lines[4]
    assert "412 held-out items, 61 users" in lines[4]


def test_main_accepts_profile_dir_and_prints_report_path(tmp_path, capsys):
    ev = write_tree(tmp_path / "runs" / "smoke")
    (ev / "report.html").write_text("<html></html>")
    assert main([str(tmp_path / "runs" / "smoke")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"report: {ev / 'report.html'}"
    assert len(out) == 6


def test_main_says_when_report_is_not_rendered(tmp_path, capsys):
    ev = write_tree(tmp_path / "run")
    assert main([str(ev)]) == 0
    assert "usersim report" in capsys.readouterr().out.splitlines()[0]


def test_flags_are_reported(tmp_path):
    run = load_eval_run(write_tree(tmp_path, flags=["human_vs_human accuracy 0.71 is above chance"]))
    line = summary_lines(run)[2]
    assert "FLAGGED (1)" in line and "0.71 is above chance" in line


def test_missing_parts_read_not_computed(tmp_path):
    ev = write_tree(tmp_path, with_samples=False, with_plots=False)
    doc = json.loads((ev / "metrics.json").read_text())
    doc["metrics"] = [m for m in doc["metrics"] if m["group"] not in ("perplexity", "failure_mode")]
    doc["controls"] = {}
    for key in ("n_items", "n_users", "n_conversations"):
        doc.pop(key)
    doc["train_run"] = {"run_dir": str(tmp_path / "gone")}
    (ev / "metrics.json").write_text(json.dumps(doc))
    lines = summary_lines(load_eval_run(ev))
    assert "trained not computed vs base not computed" in lines[1]
    assert lines[2].endswith("not computed") and lines[3].endswith("not computed")
    assert lines[4].endswith("not computed")


def test_no_metrics_json_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(EvalRunError, match="usersim eval"):
        load_eval_run(tmp_path)
    assert main([str(tmp_path)]) == 1
    assert "no metrics.json" in capsys.readouterr().err


def test_worst_failure_mode_orders_by_distance_to_human(tmp_path):
    run = load_eval_run(write_tree(tmp_path))
    assert worst_failure_mode(run)["name"] == "assistant_likeness_rate"
    assert worst_failure_mode(run, system="base")["name"] == "assistant_likeness_rate"


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
