"""The startup packing check: packed logits must equal per-record logits, else training is refused."""

import pytest
import torch
import transformers.masking_utils

from usersim.train.config import LoraSettings, TrainConfig
from usersim.train.examples import record_to_example
from usersim.train.lora import wrap_with_lora
from usersim.train.loss import SupervisedLoss
from usersim.train.main import main
from usersim.train.packing_check import PackingMaskError, check_packing, pick_records, tolerance_for
from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer
from toy_data import toy_records, write_toy_data_dir

torch.set_num_threads(1)


def break_packed_masks(monkeypatch):
    """What a transformers without packed-sequence masks does: ignore restarting position_ids (plain causal mask)."""
    monkeypatch.setattr(transformers.masking_utils, "find_packed_sequence_indices", lambda position_ids: None)


@pytest.fixture(scope="module")
def tiny():
    records = toy_records(6, seed=1)
    tok = train_tiny_tokenizer([t["text"] for r in records for t in r["turns"]], vocab_size=300)
    model = SupervisedLoss(wrap_with_lora(build_tiny_model(tok, hidden_size=32, seed=0, initializer_range=0.2),
                                          LoraSettings(r=4, alpha=8, dropout=0.1)))
    return model, [record_to_example(r, tok, max_seq_len=512) for r in records]


def test_pick_records_takes_the_first_row_then_the_next_examples_cut_short():
    examples = [{"input_ids": list(range(10 * (i + 1)))} for i in range(5)]
    assert pick_records(examples, [3], 3, 12) == [list(range(12)), list(range(10)), list(range(12))]
    assert pick_records(examples[:1], [0], 3, 12) == [list(range(10))]


def test_check_passes_on_the_tiny_model_and_leaves_it_as_it_was(tiny):
    model, examples = tiny
    model.train()
    report = check_packing(model, model, examples, [2, 0], torch.device("cpu"))
    assert report.startswith("3 records (144 tokens) packed vs alone: max |logit diff| 0.00e+00")
    assert model.training and "forward" not in model.__dict__
    assert check_packing(model, model, examples[:1], [0], torch.device("cpu")) == "skipped (fewer than two records to pack)"
    assert tolerance_for(torch.float32) == 1e-3 and tolerance_for(torch.bfloat16) == 3e-2


def test_check_refuses_when_records_attend_across_the_row(tiny, monkeypatch):
    model, examples = tiny
    break_packed_masks(monkeypatch)
    with pytest.raises(PackingMaskError, match=r"packed rows are not isolated: 3 records \(144 tokens\).*"
                                                r"attn_implementation='sdpa'.*set packing: false"):
        check_packing(model, model, examples, [0, 1], torch.device("cpu"))
    assert "forward" not in model.__dict__  # the probe is removed even when the check fails


def test_training_stops_before_the_first_step_when_packing_leaks(tmp_path, monkeypatch, capsys):
    data = write_toy_data_dir(tmp_path / "data", n_train=12, n_validation=4)
    cfg = TrainConfig(data_dir=str(data), output_dir=str(tmp_path / "run"), base_model="tiny-random",
                      tiny_vocab_size=300, tiny_hidden_size=32, dtype="float32", lora=LoraSettings(r=4, alpha=8),
                      max_seq_len=256, max_tokens_per_batch=512, max_steps=2, logging_steps=1, save_steps=1,
                      packed_attention="row_mask")  # the mask path is the one a broken transformers breaks
    break_packed_masks(monkeypatch)
    with pytest.raises(PackingMaskError, match="packed rows are not isolated"):
        main(cfg)
    assert "step 1/2" not in capsys.readouterr().out
    assert not (tmp_path / "run" / "checkpoints").exists()
    # packing: false (padded batches with an attention mask) is not affected, and the check is skipped.
    main(TrainConfig(**{**cfg.__dict__, "packing": False, "output_dir": str(tmp_path / "padded")}))
    assert (tmp_path / "padded" / "adapter_model.safetensors").is_file()


def test_per_record_attention_does_not_depend_on_the_row_mask(tmp_path, monkeypatch, capsys):
    """The default packed attention runs each record on its own: the row-wide mask transformers derives is unused."""
    data = write_toy_data_dir(tmp_path / "data", n_train=12, n_validation=4)
    cfg = TrainConfig(data_dir=str(data), output_dir=str(tmp_path / "run"), base_model="tiny-random",
                      tiny_vocab_size=300, tiny_hidden_size=32, dtype="float32", lora=LoraSettings(r=4, alpha=8),
                      max_seq_len=256, max_tokens_per_batch=512, max_steps=2, logging_steps=1)
    break_packed_masks(monkeypatch)
    main(cfg)
    out = capsys.readouterr().out
    assert "packed rows: attention per record" in out
    assert "packing check: 3 records" in out and "max |logit diff| 0.00e+00" in out
    assert (tmp_path / "run" / "adapter_model.safetensors").is_file()
