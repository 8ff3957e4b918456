"""Training the tiny model prints no FutureWarning (they reached every `make all` as noise)."""

import warnings

import torch

from usersim.train.config import LoraSettings, TrainConfig
from usersim.train.main import main
from toy_data import write_toy_data_dir

torch.set_num_threads(1)


def test_training_the_tiny_model_emits_no_future_warning(tmp_path):
    data = write_toy_data_dir(tmp_path / "data", n_train=8, n_validation=2)
    cfg = TrainConfig(data_dir=str(data), output_dir=str(tmp_path / "run"), base_model="tiny-random",
                      tiny_vocab_size=300, tiny_hidden_size=32, dtype="float32",
                      lora=LoraSettings(r=4, alpha=8, dropout=0.0), max_seq_len=256, max_tokens_per_batch=512,
                      learning_rate=5e-3, warmup_steps=1, max_steps=2, logging_steps=1, eval_steps=2, save_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = main(cfg)
    assert (run / "adapter_model.safetensors").is_file()
    future = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if issubclass(w.category, FutureWarning)]
    assert future == []
