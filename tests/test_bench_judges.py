"""Smoke test of bench/judges.py at its --quick sizes (fast judge only): every section runs on real
data, the evaluate modules give the functions' own numbers, and an lm judge that cannot load is
skipped with a note instead of failing the bench. Asserts structure, never power or speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import judges as bench_judges  # noqa: E402


def test_quick_bench_runs_every_section_and_skips_an_lm_that_cannot_load(tmp_path, monkeypatch):
    import usersim.eval.lm_judge as lm_judge

    def no_model(*args, **kwargs):
        raise RuntimeError("no judge LM here")

    monkeypatch.setattr(lm_judge, "load_judge_lm", no_model)
    assert bench_judges.main(["--quick", "--judges", "fast,lm", "--no-variants", "--results_dir", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "judges.json").read_text(encoding="utf-8"))
    assert list(doc["judges"]) == ["fast"]
    assert any("lm judge skipped" in n and "no judge LM here" in n for n in doc["notes"])
    fast = doc["judges"]["fast"]
    assert set(fast["power"]) == {"unpaired", "unpaired_context", "paired"}
    assert fast["power"]["unpaired"]["n_real"] == fast["power"]["unpaired"]["n_candidate"] == 40
    assert "accuracy_raw" in fast["power"]["unpaired"]
    for corpus in ("sharegpt", "chitchat"):
        cal = fast["calibration_default"][corpus]
        assert cal["unpaired"]["splits"] == cal["paired"]["splits"] == 2
        assert 0.0 <= cal["unpaired"]["rejection_rate"] <= 1.0 and 0.0 <= cal["paired"]["coverage"] <= 1.0
        assert fast["modules"][corpus]["same_numbers_as_functions"] is True
    assert fast["cost"]["n_texts"] == 80 and fast["cost"]["featurise_s"] > 0
    assert doc["rows"] and "| judge | check |" in doc["table"]
