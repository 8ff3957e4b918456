"""End-to-end train stage on a tiny random model: outputs, learning, resume, fail-fast on NaN/inf."""

import json

import pytest
import torch
from safetensors.torch import load_file

import usersim.train.loss
from usersim.train.config import LoraSettings, TrainConfig
from usersim.train.lora import wrap_with_lora
from usersim.train.loop import NonFiniteLossError
from usersim.train.main import main
from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer
from toy_data import write_toy_data_dir

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_toy_data_dir(tmp_path_factory.mktemp("data"), n_train=24, n_validation=6)


def tiny_cfg(data_dir, out, **kw):
    base = dict(data_dir=str(data_dir), output_dir=str(out), base_model="tiny-random", tiny_vocab_size=300,
                tiny_hidden_size=32, dtype="float32", lora=LoraSettings(r=4, alpha=8, dropout=0.1),
                max_seq_len=256, max_tokens_per_batch=512, condition_dropout=0.3, learning_rate=5e-3,
                warmup_steps=1, max_steps=6, logging_steps=1, eval_steps=3, save_steps=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    return main(tiny_cfg(data_dir, tmp_path_factory.mktemp("run")))


def test_run_dir_has_every_output_of_the_contract(finished_run):
    run = finished_run
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "base_model.json",
                 "config.yaml", "run_info.json", "train_metrics.json", "loss_curve.png"):
        assert (run / name).is_file(), name
    base = json.loads((run / "base_model.json").read_text())
    assert base["source"] == "tiny-random" and base["path"] == str((run / "base_model").resolve())
    assert (run / "base_model" / "model.safetensors").is_file() and len(base["sha256"]) == 64
    metrics = json.loads((run / "train_metrics.json").read_text())
    for key in ("final_loss", "eval_loss", "steps", "tokens", "supervised_tokens", "nonpad_share",
                "tokens_per_second", "peak_rss_mb", "wall_time_s"):
        assert key in metrics, key
    assert metrics["steps"] == 6 and metrics["nonpad_share"] == 1.0
    assert 0 < metrics["supervised_tokens"] < metrics["tokens"]
    assert len(metrics["eval_losses"]) == 2  # step 3 and the end
    assert json.loads((run / "run_info.json").read_text())["seed"] == 0


def test_the_adapter_does_not_depend_on_what_the_base_model_step_draws(data_dir, tmp_path, monkeypatch,
                                                                         finished_run):
    """A first run on a machine converts the GGUF base (which builds a randomly initialised model, drawing from
    torch's global RNG) and a later run reuses the converted checkpoint: both must train the same adapter."""
    import usersim.train.main as train_main

    real = train_main.base_checkpoint

    def converting(*args, **kwargs):
        out = real(*args, **kwargs)
        torch.rand(10_000)  # what a conversion's random initialisation draws
        return out

    monkeypatch.setattr(train_main, "base_checkpoint", converting)
    run = main(tiny_cfg(data_dir, tmp_path / "converting"))
    ours, reference = load_file(run / "adapter_model.safetensors"), load_file(finished_run / "adapter_model.safetensors")
    assert ours.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=0, atol=0, msg=name)


def test_adapter_reloads_onto_recorded_base(finished_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = json.loads((finished_run / "base_model.json").read_text())["path"]
    model = AutoModelForCausalLM.from_pretrained(base_path, use_safetensors=True)
    model = PeftModel.from_pretrained(model, str(finished_run))
    saved = load_file(str(finished_run / "adapter_model.safetensors"))
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: it was trained
    assert model.peft_config["default"].r == 4


def test_tiny_model_overfits_a_fixed_batch_and_only_lora_weights_change():
    from usersim.train.batching import collate_packed
    from usersim.train.examples import record_to_example
    from toy_data import toy_records

    records = toy_records(4, seed=9)
    tok = train_tiny_tokenizer([t["text"] for r in records for t in r["turns"]], vocab_size=300)
    model = wrap_with_lora(build_tiny_model(tok, hidden_size=32, seed=0, initializer_range=0.2), LoraSettings(r=8, alpha=16, dropout=0.0))
    batch = collate_packed([record_to_example(r, tok, max_seq_len=512) for r in records])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(40):
        loss_sum, n = usersim.train.loss.supervised_only_loss(model, **batch)
        (loss_sum / n).backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss_sum.detach() / n))
    assert losses[-1] < 0.5 * losses[0]
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_B" in n for n in changed)


def test_resume_after_interruption_matches_uninterrupted_run(data_dir, tmp_path, finished_run, capsys):
    reference = json.loads((finished_run / "train_metrics.json").read_text())
    out = tmp_path / "interrupted"
    main(tiny_cfg(data_dir, out, stop_after_steps=3))  # checkpoint at 3, then "killed"
    assert (out / "checkpoints" / "step-00000003" / "state.json").is_file()
    assert not (out / "adapter_model.safetensors").exists()
    capsys.readouterr()
    main(tiny_cfg(data_dir, out, resume_from_checkpoint="auto"))
    log = capsys.readouterr().out
    assert "resumed from" in log and "step 4/6" in log and "step 3/6" not in log  # really resumed
    resumed = json.loads((out / "train_metrics.json").read_text())
    assert resumed["steps"] == reference["steps"] == 6
    assert abs(resumed["final_loss"] - reference["final_loss"]) < 1e-4
    assert abs(resumed["eval_loss"] - reference["eval_loss"]) < 1e-4
    a = load_file(str(out / "adapter_model.safetensors"))
    b = load_file(str(finished_run / "adapter_model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_non_finite_loss_stops_training_and_names_the_step(data_dir, tmp_path, monkeypatch):
    real = usersim.train.loss.supervised_only_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        loss_sum, n = real(*args, **kwargs)
        calls["n"] += 1
        return (loss_sum * float("inf") if calls["n"] == 2 else loss_sum), n

    monkeypatch.setattr(usersim.train.loss, "supervised_only_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        main(tiny_cfg(data_dir, tmp_path / "nan", eval_steps=0, save_steps=0))
    assert calls["n"] == 2  # nothing ran after the poisoned step
