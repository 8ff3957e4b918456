"""usersim.eval.shard: `usersim eval` over 2 processes (gloo on CPU) gives the samples and metrics of 1 process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from usersim.eval.shard import Shard, merge_rows, merge_turns
from usersim.eval.simulate import SystemTurns
from test_eval_end_to_end import tiny_records, validation_records, write_data_run

ROOT = Path(__file__).resolve().parents[1]


def test_take_splits_items_without_overlap_or_gap():
    shards = [Shard(rank, 3) for rank in range(3)]
    taken = [s.take(8) for s in shards]
    assert taken == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert sorted(i for t in taken for i in t) == list(range(8))


def test_merge_puts_every_shard_back_in_item_order():
    a = SystemTurns(["a0", None, "a2"], [False, True, False], [False, False, True])
    b = SystemTurns(["b1", "b3"], [False, False], [True, False])
    merged = merge_turns(5, [([0, 2, 4], {"simulator": a}), ([1, 3], {"simulator": b})])["simulator"]
    assert merged.texts == ["a0", "b1", None, "b3", "a2"]
    assert merged.ends == [False, False, True, False, False]
    assert merged.capped == [False, True, False, False, True]
    assert merge_rows(3, [([0, 2], ["x", "z"]), ([1], ["y"])]) == ["x", "y", "z"]
    with pytest.raises(ValueError, match="4 turns"):
        merge_turns(5, [([0, 2, 4], {"simulator": a}), ([1], {"simulator": SystemTurns(["b"], [False], [False])})])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_samples_and_metrics_of_one(tmp_path):
    from tiny_run import build_tiny_run

    records = tiny_records()
    data_dir = write_data_run(tmp_path / "data", records, validation_records())
    run_dir = build_tiny_run(tmp_path / "train", records=records, train_steps=3)
    args = ["--config", "configs/eval/smoke.yaml", f"data_dir={data_dir}", f"run_dir={run_dir}",
            "max_items_per_conversation=0", "max_new_tokens=8", "exclude_capped=false", "n_boot=50",
            "show_progress=false", "neural_discriminator=false", "n_permutations=200"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "usersim.eval.main", *args, "--output_dir", str(one)], cwd=ROOT, env=env,
                   check=True, capture_output=True, timeout=600)
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                               "--master_port", str(_free_port()), "-m", "usersim.eval.main", *args, "--output_dir", str(two)],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "shared by 2 processes" in launched.stdout

    samples = [(d / "samples.jsonl").read_text().splitlines() for d in (one, two)]
    assert len(samples[0]) == sum(1 for _ in samples[0]) > 10 and samples[0] == samples[1]
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert (m1["processes"], m2["processes"]) == (1, 2)
    assert m1["headline"] == m2["headline"] and m1["paired"] == m2["paired"] and m1["truncation"] == m2["truncation"]
    rows1 = {(r["name"], r["system"]): r for r in m1["metrics"]}
    rows2 = {(r["name"], r["system"]): r for r in m2["metrics"]}
    assert rows1.keys() == rows2.keys()
    for key, r in rows1.items():
        if key[0] == "heldout_perplexity":  # other batch mates, other padding: equal to float rounding
            assert r["value"] == pytest.approx(rows2[key]["value"], rel=1e-4) and r["n"] == rows2[key]["n"]
        else:
            assert r == rows2[key], key
