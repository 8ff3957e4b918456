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
    Every row of a batch samples from its *own* ``torch.Generator`` (seeded from the call's seed and
    the row), inside a logits processor: ``model.generate`` runs greedy over scores in which only
    the sampled token survives. So a row's text depends on its own seed and its own logits, not on
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
import inspect
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch

from usersim.data_prep.prompt_format import (ASSISTANT_MARKER, STYLE_KEYS, USER_MARKER, Condition, TokenizedConversation,
                                             is_end_of_conversation, tokenize_conversation)
from usersim.data_prep.schema import ROLES, Turn, stable_hash
from usersim.train.config import TrainConfig
from usersim.train.main import resolve_dtype

# Defaults of respond / respond_batch; any key can be overridden through **generation.
DEFAULT_GENERATION: dict[str, Any] = {"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 0,
                                      "max_new_tokens": 64}
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


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


# ----------------------------------------------------------------------------- pure helpers


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed derived deterministically from ``parts`` (stable across processes)."""
    return int(stable_hash(*parts, n_hex=16), 16) & ((1 << 63) - 1)


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
    """The user turn from decoded text: cut where the model ran on into another turn's marker."""
    for marker in (ASSISTANT_MARKER, USER_MARKER):
        cut = text.find(marker)
        if cut != -1:
            text = text[:cut]
    return text.strip()


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` for a batch of token id lists."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
    return ids, mask


class RowwiseSampler:
    """Samples each row with its own generator (temperature, top-k, top-p); also a logits processor.

    Each draw is a Gumbel-max race: the row's generator gives one uniform number per vocabulary
    entry per step, and the token is the argmax of ``log p + Gumbel noise`` over the allowed tokens
    (top-k / nucleus), which is an exact draw from the renormalised distribution. Unlike an inverse-CDF
    draw, the winner does not move when the probabilities move by float rounding (a batch of 48 and a
    batch of 1 compute logits that differ by ~1e-5): an inverse-CDF draw from a flat distribution
    (temperature 1.6) lands among thousands of tiny tokens, and such a shift changed 11 of 16 rows'
    turns against one-at-a-time generation; the race changes none (bench/generation.py).

    The draw for row ``i`` at step ``t`` uses only row ``i``'s generator, so the output does not depend
    on the batch composition. As a processor it returns scores that are ``-inf`` except at the sampled
    token, so ``generate`` in greedy mode emits exactly the sample.
    """

    def __init__(self, seeds: Sequence[int], temperature: float | Sequence[float] = 1.0, top_p: float = 1.0,
                 top_k: int = 0):
        temps = [float(temperature)] * len(seeds) if isinstance(temperature, (int, float)) else list(temperature)
        if len(temps) != len(seeds):
            raise ValueError(f"{len(seeds)} seeds but {len(temps)} temperatures")
        if any(t <= 0 for t in temps):
            raise ValueError("temperature must be > 0 when sampling; use do_sample=False for greedy decoding")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.temperatures = torch.tensor(temps, dtype=torch.float32).unsqueeze(-1)
        self.top_p, self.top_k = float(top_p), int(top_k or 0)

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in that order): rows that finished leave the batch, their streams untouched."""
        self.generators = [self.generators[i] for i in rows]
        self.temperatures = self.temperatures[list(rows)]

    # top-p only: the nucleus is looked for among this many top tokens first (a partial top-k is much
    # cheaper than sorting a 262k vocabulary). A row whose nucleus is wider sorts only the tokens that
    # can be in it (_wide_nucleus_candidates), never the whole vocabulary.
    candidates = 1024

    def _uniforms(self, rows: int, vocab: int) -> torch.Tensor:
        """One uniform per vocabulary entry per row, each row from its own generator, in (0, 1)."""
        u = torch.empty(rows, vocab)
        for row, g in enumerate(self.generators):
            u[row].uniform_(generator=g)
        return u.clamp_(min=torch.finfo(torch.float32).tiny, max=1.0 - 2 ** -24)

    def sample(self, scores: torch.Tensor) -> torch.Tensor:
        """One token id per row (LongTensor of shape (rows,)), each drawn with its row's generator."""
        logp = torch.log_softmax(scores.float() / self.temperatures.to(scores.device), dim=-1)
        rows, vocab = logp.shape
        u = self._uniforms(rows, vocab).to(scores.device)
        if self.top_k and self.top_k < vocab:  # top-k first (then top-p within it)
            top, order = torch.topk(logp, self.top_k, dim=-1)
            if self.top_p < 1.0:  # the nucleus of the renormalised top-k (a constant shift: same race)
                probs = top.exp()
                top = self._nucleus_logp(probs / probs.sum(-1, keepdim=True))
            return self._race(top, order, u)
        if self.top_p >= 1.0:  # the full distribution
            return self._race(logp, None, u)
        probs = logp.exp()
        top, order = torch.topk(probs, min(self.candidates, vocab), dim=-1)
        token = self._race(self._nucleus_logp(top), order, u)
        if top.shape[-1] < vocab:
            for row in torch.nonzero(top.sum(-1) < self.top_p).flatten().tolist():
                wide_top, wide_order = self._wide_nucleus_candidates(probs[row])
                token[row] = self._race(self._nucleus_logp(wide_top[None]), wide_order[None], u[row:row + 1])[0]
        return token

    def _nucleus_logp(self, top: torch.Tensor) -> torch.Tensor:
        """log-probabilities of sorted ``top`` probabilities, -inf outside the nucleus (the smallest prefix
        whose mass reaches top_p; the top token is always kept)."""
        return top.log().masked_fill(top.cumsum(-1) - top >= self.top_p, float("-inf"))

    @staticmethod
    def _race(logp: torch.Tensor, order: torch.Tensor | None, u: torch.Tensor) -> torch.Tensor:
        """Gumbel-max: argmax of logp + Gumbel noise; the noise of a token is its own uniform (by token id)."""
        noise = u if order is None else u.gather(-1, order)
        pick = (logp - torch.log(-torch.log(noise))).argmax(-1, keepdim=True)
        return (pick if order is None else order.gather(-1, pick)).squeeze(-1)

    def _wide_nucleus_candidates(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tokens of one row that can be in its nucleus, sorted by probability (descending).

        A token is left out of the nucleus when it and every smaller token together hold at most
        1 - top_p. All tokens below a threshold m hold less than 1 - top_p whenever that is true of
        their sum, so they are out; m = (1 - top_p) / vocab always qualifies (vocab * m = 1 - top_p), and
        the largest of a few multiples of it that still qualifies leaves the fewest candidates. The
        nucleus found among the candidates is the one a full sort finds (its prefix sums only involve
        larger tokens).
        """
        tail = 1.0 - self.top_p
        threshold = tail / p.numel()
        for factor in (1e3, 1e2, 1e1):
            m = threshold * factor
            if float(torch.where(p < m, p, 0.0).sum()) < tail:
                threshold = m
                break
        index = torch.nonzero(p >= threshold).flatten()
        top, order = torch.sort(p[index], descending=True)
        return top, index[order]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """LogitsProcessor form (for ``model.generate``): scores ``-inf`` except at the sampled token."""
        token = self.sample(scores)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, token.unsqueeze(-1), 0.0)


def trained_max_seq_len(run_dir: str | os.PathLike) -> int:
    """The ``max_seq_len`` a train run was trained at (its ``config.yaml``), else TrainConfig's default."""
    import yaml

    config_file = Path(run_dir) / "config.yaml"
    if config_file.is_file():
        value = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}).get("max_seq_len")
        if isinstance(value, int) and value > 0:
            return value
    return TrainConfig.max_seq_len


def _resolve_base_path(run_dir: Path, base_model: str | None) -> str:
    """Where the base checkpoint is: the override, base_model.json's path, or adapter_config's base.

    adapter_config.json's ``base_model_name_or_path`` is used when base_model.json is absent, or
    names no existing directory while adapter_config names an existing directory or a Hub id
    (``owner/name``, e.g. a published adapter repo whose base is not bundled).
    """
    if base_model:
        return str(base_model)
    config_file = run_dir / "adapter_config.json"
    peft_base = str(json.loads(config_file.read_text()).get("base_model_name_or_path") or "")
    peft_base_usable = bool(peft_base) and (Path(peft_base).expanduser().is_dir() or (
        peft_base.count("/") == 1 and not peft_base.startswith((".", "/", "~"))))
    info_file = run_dir / "base_model.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        path = Path(str(info.get("path") or "")).expanduser()
        candidates = [path] if path.is_absolute() else [run_dir / path, path]
        for cand in candidates:
            if str(path) not in ("", ".") and cand.is_dir():
                return str(cand)
        if not peft_base_usable:
            note = f" ({info['note']})" if info.get("note") else ""
            raise FileNotFoundError(
                f"{info_file} names base model {str(path)!r}, which is not a directory here{note}; "
                "rebuild it (usersim train converts the base once) or pass base_model=<local checkpoint dir>")
    if not peft_base:
        raise ValueError(f"{run_dir} has no base_model.json and {config_file} names no base model; pass base_model=")
    return peft_base


def _download_adapter_repo(repo_id: str) -> Path:
    """snapshot_download of a published adapter repo, with a clear error when it cannot be reached."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                                "config.yaml"]))
    except Exception as exc:  # offline, unknown repo, no access: the message must say what to do
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = ("HF_HUB_OFFLINE is set, so nothing can be downloaded: pass a local train run directory"
                if offline else "check the repo id, your network and (for private repos) `hf auth login`")
        raise OSError(f"{repo_id!r} is not a local directory and could not be fetched from the Hub "
                      f"({type(exc).__name__}); {hint}") from None


def cache_kwarg(model: Any) -> str:
    """The forward argument that takes a KV cache: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def cache_of(output: Any) -> Any:
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


def prefill_buckets(lengths: Sequence[int], max_pad_share: float = 0.15, max_tokens: int = 8192) -> list[list[int]]:
    """Indices of prompts grouped for prefill: ascending length, each group padded by at most
    ``max_pad_share`` of its slots and at most ``max_tokens`` slots (a lone prompt is a group)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups: list[list[int]] = []
    real = 0
    for i in order:
        n = lengths[i]
        if groups:
            slots = (len(groups[-1]) + 1) * n  # ascending: the newcomer is the longest
            if slots <= max_tokens and slots - (real + n) <= max_pad_share * slots:
                groups[-1].append(i)
                real += n
                continue
        groups.append([i])
        real = n
    return groups


def _mergeable(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)


def merge_left_padded(caches: Sequence[Any], widths: Sequence[int]) -> Any:
    """One KV cache for all rows of several left-padded prefill caches (``widths``: their padded lengths).

    Each row is left-padded further to the widest group, exactly as if all prompts had been prefilled
    as one padded batch (sliding-window layers keep the last ``window - 1`` positions of that width).
    The first cache object is reused and returned.
    """
    width = max(widths)
    merged = caches[0]
    for index, layer in enumerate(merged.layers):
        keep = min(width, layer.sliding_window - 1) if getattr(layer, "is_sliding", False) else width
        keys, values = [], []
        for cache in caches:
            k, v = cache.layers[index].keys, cache.layers[index].values
            pad = keep - k.shape[-2]
            keys.append(torch.nn.functional.pad(k, (0, 0, pad, 0)))
            values.append(torch.nn.functional.pad(v, (0, 0, pad, 0)))
        layer.keys, layer.values = torch.cat(keys), torch.cat(values)
        if getattr(layer, "is_sliding", False):
            layer.cumulative_length = width
    return merged


def prefill(model: Any, prompts: Sequence[Sequence[int]], pad_id: int,
            device: torch.device) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """KV cache, last-position logits and left-padded attention mask for ``prompts`` (in their order).

    Prompts are prefilled in groups of similar length (:func:`prefill_buckets`), so a short prompt
    does not pay for the longest one's padding, and the groups' caches are merged into one batch.
    Caches whose layers cannot be merged here fall back to one padded batch.
    """
    groups = prefill_buckets([len(p) for p in prompts])
    outputs = []
    for group in groups:
        outputs.append(prefill_padded(model, [prompts[i] for i in group], pad_id, device))
        if len(groups) > 1 and not _mergeable(outputs[0][0]):
            return prefill_padded(model, prompts, pad_id, device)
    if len(outputs) == 1:
        cache, logits, _ = outputs[0]
    else:
        cache = merge_left_padded([o[0] for o in outputs], [o[2].shape[1] for o in outputs])
        logits = torch.cat([o[1] for o in outputs])
    rows = [i for group in groups for i in group]  # groups are in ascending length, not in prompt order
    if rows != list(range(len(rows))):
        back = torch.tensor(sorted(range(len(rows)), key=rows.__getitem__), device=device)
        cache.reorder_cache(back)
        logits = logits[back]
    return cache, logits, left_pad(prompts, pad_id)[1].to(device)


def prefill_padded(model: Any, prompts: Sequence[Sequence[int]], pad_id: int,
                   device: torch.device) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """:func:`prefill` as one left-padded batch (no mask when nothing is padded: the fused causal kernel)."""
    ids, mask = left_pad(prompts, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    kwargs = {} if bool(mask.all()) else {"attention_mask": mask,
                                          "position_ids": (mask.cumsum(-1) - 1).clamp_(min=0)}
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **kwargs)
    return cache_of(out), out.logits[:, -1], mask


@torch.inference_mode()
def decode_rows(model: Any, prompts: Sequence[Sequence[int]], *, pad_id: int, eos_id: int, max_new_tokens: int,
                sampler: RowwiseSampler | None = None, stop_texts: Sequence[str] = (), decode: Any = None,
                check_every: int = 4) -> list[list[int]]:
    """New token ids per prompt (up to and including EOS), with a KV cache, decoded row by row.

    Savings over ``model.generate`` for the eval's workload:
    * identical prompts (several samples of one context) are prefilled once and their cache rows
      copied, so a control's second sample costs decode steps only;
    * prompts are prefilled in groups of similar length and the caches merged (:func:`prefill`), so
      short prompts do not pay for the longest prompt's padding;
    * sampling sorts at most the tokens that can be in a row's nucleus (RowwiseSampler), not the vocabulary,
      and draws by a Gumbel-max race, which float-level logit differences between batch shapes do not move;
    * a row leaves the batch as soon as it ends (EOS, or one of ``stop_texts`` in its decoded text,
      checked every ``check_every`` steps), so the batch shrinks instead of waiting for its slowest row.
    Greedy when ``sampler`` is None; otherwise each row draws from its own generator (RowwiseSampler),
    so its tokens do not depend on its batch mates.
    """
    if not prompts:
        return []
    device = next(model.parameters()).device
    unique: dict[tuple[int, ...], int] = {}
    source = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
    cache, logits, mask = prefill(model, [list(p) for p in unique], pad_id, device)
    rows = torch.tensor(source, device=device)
    if len(unique) != len(prompts) or source != list(range(len(prompts))):
        cache.reorder_cache(rows)
    logits, mask = logits[rows], mask[rows]
    active = list(range(len(prompts)))  # active[j] = prompt index of batch row j
    new: list[list[int]] = [[] for _ in prompts]
    for step in range(max_new_tokens):
        token = logits.float().argmax(-1) if sampler is None else sampler.sample(logits)
        done = []
        for j, t in enumerate(token.tolist()):
            new[active[j]].append(t)
            if t == eos_id:
                done.append(j)
        if stop_texts and decode is not None and (step + 1) % check_every == 0:
            done += [j for j in range(len(active)) if j not in done
                     and any(s in decode(new[active[j]]) for s in stop_texts)]
        if step == max_new_tokens - 1 or len(done) == len(active):
            break
        if done:
            keep = [j for j in range(len(active)) if j not in set(done)]
            index = torch.tensor(keep, device=device)
            cache.reorder_cache(index)
            mask, token = mask[index], token[index]
            active = [active[j] for j in keep]
            if sampler is not None:
                sampler.select(keep)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        out = model(input_ids=token.unsqueeze(-1), attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                    use_cache=True, **{cache_kwarg(model): cache})
        cache, logits = cache_of(out), out.logits[:, -1]
    return new


# ----------------------------------------------------------------------------- the runtime


class UserSimulator:
    """A causal LM (optionally with a LoRA adapter) that writes the next *user* turn of a chat."""

    def __init__(self, model: Any, tokenizer: Any, *, max_prompt_tokens: int | None = None):
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; the simulator format ends every turn with EOS")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_prompt_tokens = int(max_prompt_tokens or TrainConfig.max_seq_len)

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
            run_dir = _download_adapter_repo(str(run_dir_or_repo))
        missing = [f for f in ADAPTER_FILES if not (run_dir / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{run_dir} lacks {missing}: is it a finished `usersim train` run directory?")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = cls._load_base(_resolve_base_path(run_dir, base_model), device, dtype, trust_remote_code)
        with warnings.catch_warnings():  # peft reads a transformers attribute deprecated in v5 (see train/lora.py)
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                    category=FutureWarning)
            model = PeftModel.from_pretrained(base, str(run_dir), is_trainable=False)
        tokenizer = AutoTokenizer.from_pretrained(str(run_dir), trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, max_prompt_tokens=max_prompt_tokens or trained_max_seq_len(run_dir))

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
        if seed is None:
            seeds: list[int] | None = None
        elif isinstance(seed, int):
            seeds = [derive_seed(seed, i) for i in range(len(prompts))]
        else:
            seeds = [int(s) for s in seed]
        return self.generate_from_prompt_ids(prompts, seeds=seeds, **generation)

    @torch.inference_mode()
    def generate_from_prompt_ids(self, prompts: Sequence[Sequence[int]], seeds: Sequence[int] | None = None,
                                 **generation: Any) -> list[SimulatorTurn]:
        """Generate from already-tokenised prompts (one seed per row when sampling)."""
        from transformers import GenerationConfig, LogitsProcessorList

        if not prompts:
            return []
        options = {**DEFAULT_GENERATION, **generation}
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
            rows = decode_rows(self.model, prompts, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id,
                               max_new_tokens=max_new_tokens, sampler=sampler, stop_texts=(USER_MARKER, ASSISTANT_MARKER),
                               decode=tok.decode)
            return [self._to_turn(row) for row in rows]
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

    def _to_turn(self, new_ids: list[int]) -> SimulatorTurn:
        eos = self.tokenizer.eos_token_id
        closed = eos in new_ids
        n = new_ids.index(eos) + 1 if closed else len(new_ids)
        decoded = self.tokenizer.decode(new_ids[:n], skip_special_tokens=True)
        text = clean_generated_text(decoded)
        # a run-on into the next turn's marker also closes the turn (the text before it is whole)
        closed = closed or text != decoded.strip()
        if is_end_of_conversation(text):
            return SimulatorTurn(text="", ends_conversation=True, tokens=n)
        return SimulatorTurn(text=text, ends_conversation=False, tokens=n, hit_cap=not closed)
