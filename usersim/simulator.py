"""The runtime: load a trained simulator (base LM + LoRA adapter) and write the next user turn.

::

    sim = UserSimulator.from_pretrained("runs/default/train")
    turn = sim.respond([{"role": "assistant", "text": "Hi! How can I help?"}],
                       goal="plan a weekend hike", style={"length": "short"}, seed=0)
    turn.text, turn.ends_conversation

Prompts are built by :func:`usersim.data_prep.prompt_format.tokenize_conversation`, i.e. exactly the
tokenisation and length policy the simulator was trained with; nothing here re-implements the
format. This module imports ``data_prep`` and ``train`` only.

Sampling and seeds
    Every row of a batch samples from its *own* random stream (usersim.engine.RowwiseSampler: a hash of
    the row's seed, the step and the token id), in the engine's decode loop or, with extra generation
    options, inside a logits processor (``model.generate`` then runs greedy over scores in which only
    the sampled token survives). So a row's text depends on its own seed and its own logits, not on
    which other rows share the batch or in what order. Same seed -> identical output. Batching can
    still change a sampled token in rare cases, because padding changes floating-point rounding of
    the logits (a draw that lands exactly on a probability boundary); greedy decoding
    (``do_sample=False``) is unaffected in practice.

Long histories
    ``max_prompt_tokens`` defaults to the length the model was trained at (``max_seq_len`` in the
    train run's ``config.yaml``; TrainConfig's default when the run does not say). A longer prompt
    keeps its condition header and drops its oldest whole turns until it fits (the training
    policy). If the header alone is too long the prompt is used as is, with a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from usersim.data_prep.prompt_format import (ASSISTANT_MARKER, END_OF_CONVERSATION, STYLE_KEYS, USER_MARKER, Condition,
                                             TokenizedConversation, end_of_conversation_ids, is_end_of_conversation,
                                             tokenize_conversation)
from usersim.data_prep.schema import ROLES, Turn, stable_hash
from usersim.engine import EndControl, RowwiseSampler, control_token_ids, decode_rows, left_pad
from usersim.train.config import TrainConfig
from usersim.run_files import (ADAPTER_FILES, download_adapter_repo, read_decoding, resolve_base_path,
                               trained_max_seq_len)
from usersim.train.main import resolve_dtype

# Defaults of respond / respond_batch; any key can be overridden through **generation.
# ``end_bias``: None = the model ends a conversation only by writing the end marker itself; a number =
# the explicit end decision of usersim.engine.EndControl with that bias on the end's log-odds.
# A train run's decoding.json (written by `usersim decoding`, chosen on validation users) overrides these
# defaults for that simulator; explicit arguments override both.
DEFAULT_GENERATION: dict[str, Any] = {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 0,
                                      "max_new_tokens": 64, "end_bias": None}


@dataclass
class SimulatorTurn:
    """One generated user turn. ``tokens``: new tokens generated (the closing EOS included).

    ``hit_cap``: generation stopped at ``max_new_tokens`` before the end-of-turn token, so ``text``
    may be cut mid-word; eval counts such turns and leaves them out of every comparison.
    """

    text: str
    ends_conversation: bool
    tokens: int
    hit_cap: bool = False
    end_logprob: float | None = None  # log P(end marker | prompt) when the explicit end decision ran


# ----------------------------------------------------------------------------- pure helpers


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived deterministically from ``parts`` (stable across processes)."""
    return int(stable_hash(*parts, n_hex=16), 16) & ((1 << 63) - 1)


def row_seeds(seed: int | Sequence[int] | None, n: int) -> list[int]:
    """Per-row seeds, the same rule in every backend (usersim.users): an int gives row ``i``
    ``derive_seed(seed, i)``, a list is used as is (one per row), None draws fresh ones."""
    if seed is None:
        return torch.randint(0, 2**62, (n,)).tolist()
    if isinstance(seed, int):
        return [derive_seed(seed, i) for i in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{n} rows but {len(seeds)} seeds")
    return seeds


def as_turns(history: Sequence[Turn | Mapping[str, Any]]) -> list[Turn]:
    """History as :class:`Turn` objects; accepts ``Turn`` or ``{"role", "text"}`` dicts."""
    turns = []
    for i, t in enumerate(history):
        turn = t if isinstance(t, Turn) else Turn(t["role"], t["text"])
        if turn.role not in ROLES:
            raise ValueError(f"history[{i}] has role {turn.role!r}; expected one of {ROLES}")
        turns.append(turn)
    return turns


def make_condition(persona: str | None = None, goal: str | None = None,
                   knowledge: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
                   style: Mapping[str, str] | None = None) -> Condition:
    """A :class:`Condition` from friendly arguments.

    ``knowledge`` is ``{"discloses": [...], "asks": [...]}`` or a plain list (= discloses);
    ``style`` maps keys of ``STYLE_KEYS`` to buckets (e.g. ``{"length": "short"}``).
    """
    discloses: list[str] = []
    asks: list[str] = []
    if isinstance(knowledge, Mapping):
        unknown = set(knowledge) - {"discloses", "asks"}
        if unknown:
            raise ValueError(f"knowledge keys {sorted(unknown)} not understood; use 'discloses' and 'asks'")
        discloses = list(knowledge.get("discloses") or [])
        asks = list(knowledge.get("asks") or [])
    elif knowledge:
        if isinstance(knowledge, str):
            knowledge = [knowledge]
        discloses = list(knowledge)
    style = dict(style or {})
    unknown = set(style) - set(STYLE_KEYS)
    if unknown:
        raise ValueError(f"style keys {sorted(unknown)} not understood; known: {list(STYLE_KEYS)}")
    return Condition(persona=persona or "", goal=goal or "", knowledge_discloses=discloses,
                     knowledge_asks=asks, style={k: v for k, v in style.items() if v})


def clean_generated_text(text: str) -> str:
    """The user turn from decoded text: cut where the model ran on into another turn's marker, or wrote the
    end-of-conversation marker after some text (the marker is a turn of its own; a turn that only opens
    with it is an end, see is_end_of_conversation)."""
    for marker in (ASSISTANT_MARKER, USER_MARKER):
        cut = text.find(marker)
        if cut != -1:
            text = text[:cut]
    text = text.strip()
    cut = text.find(END_OF_CONVERSATION)
    return text[:cut].strip() if cut > 0 else text


# ----------------------------------------------------------------------------- the runtime


class UserSimulator:
    """A causal LM (optionally with a LoRA adapter) that writes the next *user* turn of a chat.

    The local backend ``simulator`` of usersim.users (the one interface every simulated user shares)."""

    name = "simulator"

    def __init__(self, model: Any, tokenizer: Any, *, max_prompt_tokens: int | None = None,
                 decoding: Mapping[str, Any] | None = None):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; the simulator format ends every turn with EOS")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_prompt_tokens = int(max_prompt_tokens or TrainConfig.max_seq_len)
        # this simulator's decoding defaults (a train run's decoding.json); arguments override them
        self.decoding = dict(decoding or {})
        self._banned: list[int] | None = None

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, run_dir_or_repo: str | os.PathLike, base_model: str | None = None,
                        device: str | None = None, dtype: str | torch.dtype | None = None,
                        trust_remote_code: bool = False,
                        max_prompt_tokens: int | None = None) -> "UserSimulator":
        """Load base + adapter from a train run directory (or a published adapter repo id).

        The base is ``base_model`` if given, else ``base_model.json``'s ``path`` (relative paths are
        resolved against the run dir), else ``adapter_config.json``'s ``base_model_name_or_path``.
        Weights are loaded from safetensors only. ``max_prompt_tokens`` None (or 0): the run's
        trained ``max_seq_len`` (:func:`trained_max_seq_len`).
        """
        from peft import PeftModel
        from transformers import AutoTokenizer

        run_dir = Path(run_dir_or_repo).expanduser()
        if not run_dir.is_dir():
            if str(run_dir_or_repo).count("/") != 1 or str(run_dir_or_repo).startswith((".", "/", "~")):
                raise FileNotFoundError(f"{run_dir_or_repo!r} is neither a train run directory nor a Hub repo id "
                                        "(owner/name)")
            run_dir = download_adapter_repo(str(run_dir_or_repo))
        missing = [f for f in ADAPTER_FILES if not (run_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{run_dir} lacks {missing}: is it a finished `usersim train` run directory?")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = cls._load_base(resolve_base_path(run_dir, base_model), device, dtype, trust_remote_code)
        with warnings.catch_warnings():  # peft reads a transformers attribute deprecated in v5 (see train/lora.py)
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            model = PeftModel.from_pretrained(base, str(run_dir), is_trainable=False)
        tokenizer = AutoTokenizer.from_pretrained(str(run_dir), trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, max_prompt_tokens=max_prompt_tokens or trained_max_seq_len(run_dir),
                   decoding=read_decoding(run_dir))

    @classmethod
    def from_base(cls, path_or_model: Any, tokenizer: Any = None, device: str | None = None,
                  dtype: str | torch.dtype | None = None, trust_remote_code: bool = False,
                  max_prompt_tokens: int | None = None) -> "UserSimulator":
        """A simulator without adapter (the untuned-base baseline): a model object or checkpoint dir.

        ``max_prompt_tokens`` None (or 0): TrainConfig's default ``max_seq_len`` (no train run to read).
        """
        from transformers import AutoTokenizer

        if isinstance(path_or_model, (str, os.PathLike)):
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = cls._load_base(str(path_or_model), device, dtype, trust_remote_code)
            tokenizer = tokenizer if tokenizer is not None else str(path_or_model)
        else:
            model = path_or_model
            if tokenizer is None:
                raise ValueError("from_base(model_object, tokenizer): the tokenizer is required with a model object")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, max_prompt_tokens=max_prompt_tokens)

    @staticmethod
    def _load_base(path: str, device: str, dtype: str | torch.dtype | None, trust_remote_code: bool) -> Any:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, trust_remote_code=trust_remote_code,
                                                     dtype=resolve_dtype(dtype, device))
        return model.to(device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def has_adapter(self) -> bool:
        return hasattr(self.model, "disable_adapter")

    @contextlib.contextmanager
    def adapter_disabled(self) -> Iterator["UserSimulator"]:
        """Inside the block the same loaded model acts as the untuned base (no-op without adapter)."""
        if not self.has_adapter:
            yield self
            return
        with self.model.disable_adapter():
            yield self

    # -- prompts -------------------------------------------------------------------------------
    def prompt(self, history: Sequence[Turn | Mapping[str, Any]],
               condition: Condition | None = None) -> TokenizedConversation:
        """The generation prompt with its truncation record (``turns_dropped``: oldest whole turns left out)."""
        return tokenize_conversation(condition or Condition(), as_turns(history), self.tokenizer,
                                     max_tokens=self.max_prompt_tokens, generation_prompt=True)

    def prompt_ids(self, history: Sequence[Turn | Mapping[str, Any]], condition: Condition | None = None) -> list[int]:
        """Token ids of the generation prompt, oldest whole turns dropped to fit max_prompt_tokens."""
        ids = self.prompt(history, condition).input_ids
        if len(ids) > self.max_prompt_tokens:
            warnings.warn(f"the condition header alone is {len(ids)} tokens, over max_prompt_tokens="
                          f"{self.max_prompt_tokens}; using the prompt untruncated", stacklevel=2)
        return ids

    # -- generation ----------------------------------------------------------------------------
    def respond(self, history: Sequence[Turn | Mapping[str, Any]], persona: str | None = None, goal: str | None = None,
                knowledge: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
                style: Mapping[str, str] | None = None, seed: int | None = None, **generation: Any) -> SimulatorTurn:
        """The next user turn after ``history`` (or an explicit end of conversation)."""
        condition = make_condition(persona, goal, knowledge, style)
        return self.respond_batch([history], [condition], seed=seed, **generation)[0]

    def respond_batch(self, histories: Sequence[Sequence[Turn | Mapping[str, Any]]],
                      conditions: Sequence[Condition | None] | None = None,
                      seed: int | Sequence[int] | None = None, **generation: Any) -> list[SimulatorTurn]:
        """Next user turns for many conversations at once (left padding, KV cache, one forward per step).

        ``seed``: an int (row ``i`` samples with ``derive_seed(seed, i)``), a list of per-row seeds,
        or None (seeds drawn from torch's global RNG). ``generation`` overrides DEFAULT_GENERATION
        and is passed on to ``model.generate`` (e.g. ``do_sample=False``, ``max_new_tokens=32``).
        """
        if conditions is None:
            conditions = [None] * len(histories)
        if len(conditions) != len(histories):
            raise ValueError(f"{len(histories)} histories but {len(conditions)} conditions")
        prompts = [self.prompt_ids(h, c) for h, c in zip(histories, conditions)]
        return self.generate_from_prompt_ids(prompts, seeds=row_seeds(seed, len(prompts)), **generation)

    @torch.inference_mode()
    def generate_from_prompt_ids(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int] | None = None,
                                 **generation: Any) -> list[SimulatorTurn]:
        """Generate from already-tokenised prompts (one seed per row when sampling)."""
        from transformers import GenerationConfig, LogitsProcessorList

        if not prompts:
            return []
        options = {**DEFAULT_GENERATION, **self.decoding, **generation}
        end_bias = options.pop("end_bias")
        do_sample = bool(options.pop("do_sample"))
        temperature, top_p, top_k = options.pop("temperature"), options.pop("top_p"), options.pop("top_k")
        max_new_tokens = int(options.pop("max_new_tokens"))
        processors = LogitsProcessorList(options.pop("logits_processor", None) or [])
        if do_sample:
            if seeds is None:
                seeds = torch.randint(0, 2**62, (len(prompts),)).tolist()
            if len(seeds) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        tok = self.tokenizer
        if not options and not processors:  # the plain case: our own decode loop (shared prefill, early exit)
            sampler = RowwiseSampler(seeds, temperature=temperature, top_p=top_p, top_k=top_k) if do_sample else None
            end = None if end_bias is None else EndControl(end_of_conversation_ids(tok), float(end_bias))
            rows = decode_rows(self.model, prompts, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                               max_new_tokens=max_new_tokens, sampler=sampler, stop_texts=(USER_MARKER, ASSISTANT_MARKER, END_OF_CONVERSATION),
                               decode=tok.decode, banned_ids=self.banned_ids, end=end)
            logps = end.logprobs if end is not None else [None] * len(rows)
            return [dataclasses.replace(self._to_turn(row), end_logprob=lp) for row, lp in zip(rows, logps)]
        if end_bias is not None:
            raise ValueError("end_bias (the explicit end decision) runs in the engine's own decode loop, which "
                             f"these generation options leave: {sorted(options) or 'logits_processor'}; pass "
                             "end_bias=None with them")
        from transformers import SuppressTokensLogitsProcessor

        processors.insert(0, SuppressTokensLogitsProcessor(self.banned_ids, device=self.device))
        if do_sample:
            processors.append(RowwiseSampler(seeds, temperature=temperature, top_p=top_p, top_k=top_k))
        # A fresh greedy config: the checkpoint's generation_config (do_sample, top_k, ...) must not leak in.
        # temperature/top_k/top_p are transformers' neutral global defaults (sampling happens in RowwiseSampler);
        # other options (min_new_tokens, repetition_penalty, ...) become GenerationConfig fields.
        config = GenerationConfig(**{"use_cache": True, "temperature": 1.0, "top_k": 50, "top_p": 1.0, **options,
                                     "max_new_tokens": max_new_tokens, "do_sample": False,
                                     "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
                                     "bos_token_id": tok.bos_token_id})
        ids, mask = left_pad(prompts, tok.pad_token_id)
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  generation_config=config, logits_processor=processors)
        return [self._to_turn(row) for row in out[:, ids.shape[1]:].tolist()]

    @property
    def banned_ids(self) -> list[int]:
        """Token ids never generated (usersim.engine.control_token_ids: special, control and unused tokens)."""
        if self._banned is None:
            self._banned = control_token_ids(self.tokenizer)
        return self._banned

    def _to_turn(self, new_ids: list[int]) -> SimulatorTurn:
        eos = self.tokenizer.eos_token_id
        closed = eos in new_ids
        n = new_ids.index(eos) + 1 if closed else len(new_ids)
        return turn_from_text(self.tokenizer.decode(new_ids[:n], skip_special_tokens=True), closed=closed, tokens=n)


def turn_from_text(decoded: str, *, closed: bool, tokens: int) -> SimulatorTurn:
    """A :class:`SimulatorTurn` from a decoded continuation (every backend of the simulator format).

    ``closed``: generation stopped at the end of the turn (EOS or a stop string), not at the token cap.
    A run-on into the next turn's marker also closes the turn (the text before it is whole).
    """
    text = clean_generated_text(decoded)
    closed = closed or text != decoded.strip()
    if is_end_of_conversation(text):
        return SimulatorTurn(text="", ends_conversation=True, tokens=tokens)
    return SimulatorTurn(text=text, ends_conversation=False, tokens=tokens, hit_cap=not closed)
