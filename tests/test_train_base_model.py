"""Base model resolution: chat/instruct bases are refused, conversions are checked by hash."""

import json

import pytest

from usersim.train.base_model import (MARKER, InstructBaseError, _marker_ok, hash_directory, instruct_reason,
                                      prepare_base_model)
from usersim.train.config import TrainConfig
from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer


@pytest.mark.parametrize("name", ["google/gemma-3-270m-it", "Qwen/Qwen2.5-0.5B-Instruct", "meta/llama-chat",
                                  "org/model-dpo", "org/zephyr-sft-full", "x/model-RLHF"])
def test_instruct_names_are_flagged(name):
    assert instruct_reason(name) is not None


@pytest.mark.parametrize("name", ["google/gemma-3-270m", "Qwen/Qwen2.5-0.5B", "HuggingFaceTB/SmolLM2-135M",
                                  "gemma3-270m-gguf", "/models/gpt2-italian"])
def test_base_names_pass(name):
    assert instruct_reason(name) is None


def test_packaged_gguf_is_judged_by_its_metadata():
    base = {"general.name": "Gemma 3 270m", "general.basename": "gemma-3"}
    assert instruct_reason("gemma3-270m-gguf", gguf_metadata=base) is None
    assert instruct_reason("gemma3-270m-gguf", gguf_metadata={**base, "general.finetune": "it"}) is not None


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    def save(dirname, chat_template=None):
        tok = train_tiny_tokenizer(["hello there", "how are you"], vocab_size=280)
        tok.chat_template = chat_template
        path = tmp_path_factory.mktemp("models") / dirname
        build_tiny_model(tok, hidden_size=16, num_layers=1, num_heads=2).save_pretrained(path)
        tok.save_pretrained(path)
        return path
    return save


def test_local_model_with_chat_template_is_refused_with_an_explanation(saved_model, tmp_path):
    path = saved_model("my-base", chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")
    cfg = TrainConfig(base_model=str(path), output_dir=str(tmp_path))
    with pytest.raises(InstructBaseError, match="chat_template.*human"):
        prepare_base_model(cfg)
    path_out, tok = prepare_base_model(TrainConfig(base_model=str(path), output_dir=str(tmp_path),
                                                   allow_instruct_base=True))
    assert path_out == path.resolve() and tok.eos_token_id is not None


def test_instruct_name_is_refused_before_loading(saved_model, tmp_path):
    path = saved_model("tiny-Instruct")
    with pytest.raises(InstructBaseError, match="allow_instruct_base"):
        prepare_base_model(TrainConfig(base_model=str(path), output_dir=str(tmp_path)))


def test_local_base_model_loads(saved_model, tmp_path):
    path, tok = prepare_base_model(TrainConfig(base_model=str(saved_model("plain")), output_dir=str(tmp_path)))
    assert (path / "model.safetensors").is_file() and tok.bos_token_id is not None


def test_conversion_marker_detects_tampering(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / MARKER).write_text(json.dumps({"gguf_sha256": "abc", "files_sha256": hash_directory(tmp_path)}))
    assert _marker_ok(tmp_path, "abc")
    assert not _marker_ok(tmp_path, "other-gguf")
    (tmp_path / "model.safetensors").write_bytes(b"weightz")
    assert not _marker_ok(tmp_path, "abc")
