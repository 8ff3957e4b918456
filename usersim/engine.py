"""The generation engine: prefill, KV-cache merging, per-row sampling and the decode loop.

``usersim.simulator.UserSimulator`` is the public API over it; the RL rollout and the prompted
baseline use its sampler. Nothing here knows the chat format: prompts arrive as token ids and
turns leave as token ids (the end-of-conversation control takes the marker's ids as an argument).
"""

from __future__ import annotations

import copy
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length, longest first, ties in original order (deterministic batching order)."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


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


def _int64(value: int) -> int:
    """An unsigned 64-bit constant as the signed int64 torch stores."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _MIX1, _MIX2 = _int64(0x9E3779B97F4A7C15), _int64(0xBF58476D1CE4E5B9), _int64(0x94D049BB133111EB)
_TOKEN_STRIDE = _int64(0xD1B54A32D192ED03)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical (unsigned) right shift of an int64 tensor."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (arithmetic wraps modulo 2**64): a bijective 64-bit hash."""
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def counter_uniforms(keys: torch.Tensor, steps: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1) that depend only on (row key, step, token id): ``out[r, j]`` for ``ids[r, j]``.

    A counter-based generator: a row's number for a token is a hash of the three, so any subset of the
    vocabulary can be drawn without drawing the rest, and the same (key, step, id) always gives the same
    number. 24 bits, centred: (k + 0.5) / 2**24 for k in [0, 2**24).
    """
    base = mix64(keys.unsqueeze(-1) + (steps.unsqueeze(-1) + 1) * _GOLDEN)
    z = mix64(base + (ids + 1) * _TOKEN_STRIDE)
    return (_shift_right(z, 40).to(torch.float32) + 0.5) * 2.0 ** -24


class RowwiseSampler:
    """Samples each row with its own random stream (temperature, top-k, top-p); also a logits processor.

    Each draw is a Gumbel-max race: the row's stream gives one uniform number per vocabulary entry per
    step (:func:`counter_uniforms`: a hash of the row's seed, the step and the token id, computed only
    for the tokens that can win), and the token is the argmax of ``log p + Gumbel noise`` over the
    allowed tokens (top-k / nucleus), which is an exact draw from the renormalised distribution. Unlike an inverse-CDF
    draw, the winner does not move when the probabilities move by float rounding (a batch of 48 and a
    batch of 1 compute logits that differ by ~1e-5): an inverse-CDF draw from a flat distribution
    (temperature 1.6) lands among thousands of tiny tokens, and such a shift changed 11 of 16 rows'
    turns against one-at-a-time generation; the race changes none (bench/generation.py).

    The draw for row ``i`` at step ``t`` uses only row ``i``'s stream, so the output does not depend
    on the batch composition. As a processor it returns scores that are ``-inf`` except at the sampled
    token, so ``generate`` in greedy mode emits exactly the sample. Hashing only the nucleus candidates
    (at most ``candidates`` tokens a row) instead of filling a vocabulary-wide uniform vector per row
    and step took the sampler's share of eval decoding from 16% to almost nothing (Gemma's 262k vocabulary).
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
        self.keys = mix64(torch.tensor([_int64(int(s)) for s in seeds], dtype=torch.long))
        self.steps = torch.zeros(len(seeds), dtype=torch.long)
        self.temperatures = torch.tensor(temps, dtype=torch.float32).unsqueeze(-1)
        self.top_p, self.top_k = float(top_p), int(top_k or 0)

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in that order): rows that finished leave the batch, their streams untouched."""
        index = torch.tensor(list(rows), dtype=torch.long)
        self.keys, self.steps, self.temperatures = self.keys[index], self.steps[index], self.temperatures[index]

    def decision_uniforms(self) -> list[float]:
        """One uniform per row for a yes/no decision before the row's first token (its own stream, id -1)."""
        return counter_uniforms(self.keys, torch.full_like(self.steps, -1),
                                torch.full((len(self.keys), 1), -2, dtype=torch.long))[:, 0].tolist()

    # top-p only: the nucleus is looked for among this many top tokens first (a partial top-k is much
    # cheaper than sorting a 262k vocabulary). A row whose nucleus is wider sorts only the tokens that
    # can be in it (_wide_nucleus_candidates), never the whole vocabulary.
    candidates = 1024

    def _noise(self, ids: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """This step's uniforms of the rows (all, or ``rows``) for the token ids ``ids`` (rows x k)."""
        keys, steps = (self.keys, self.steps) if rows is None else (self.keys[rows], self.steps[rows])
        return counter_uniforms(keys, steps, ids.cpu()).to(ids.device)

    def sample(self, scores: torch.Tensor) -> torch.Tensor:
        """One token id per row (LongTensor of shape (rows,)), each drawn from its row's stream."""
        token = self._sample(scores)
        self.steps += 1
        return token

    def _sample(self, scores: torch.Tensor) -> torch.Tensor:
        scaled = scores.float() / self.temperatures.to(scores.device)
        rows, vocab = scaled.shape
        if self.top_p < 1.0 and not (self.top_k and self.top_k < vocab):
            return self._sample_nucleus(scaled)
        logp = torch.log_softmax(scaled, dim=-1)
        if self.top_k and self.top_k < vocab:  # top-k first (then top-p within it)
            top, order = torch.topk(logp, self.top_k, dim=-1)
            if self.top_p < 1.0:  # the nucleus of the renormalised top-k (a constant shift: same race)
                probs = top.exp()
                top = self._nucleus_logp(probs / probs.sum(-1, keepdim=True))
            return self._race(top, order, self._noise(order))
        every = torch.arange(vocab, device=logp.device).expand(rows, vocab)  # the full distribution
        return self._race(logp, None, self._noise(every))

    def _sample_nucleus(self, scaled: torch.Tensor) -> torch.Tensor:
        """top-p alone: the candidates are the top logits (the same order as the top probabilities), and
        probabilities are computed for them only (the vocabulary is read twice: logsumexp and top-k)."""
        rows, vocab = scaled.shape
        lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
        top_logits, order = torch.topk(scaled, min(self.candidates, vocab), dim=-1)
        top = (top_logits - lse).exp()
        token = self._race(self._nucleus_logp(top), order, self._noise(order))
        if top.shape[-1] < vocab:
            for row in torch.nonzero(top.sum(-1) < self.top_p).flatten().tolist():
                wide_top, wide_order = self._wide_nucleus_candidates((scaled[row] - lse[row]).exp())
                noise = self._noise(wide_order[None], torch.tensor([row]))
                token[row] = self._race(self._nucleus_logp(wide_top[None]), wide_order[None], noise)[0]
        return token

    def _nucleus_logp(self, top: torch.Tensor) -> torch.Tensor:
        """log-probabilities of sorted ``top`` probabilities, -inf outside the nucleus (the smallest prefix
        whose mass reaches top_p; the top token is always kept)."""
        return top.log().masked_fill(top.cumsum(-1) - top >= self.top_p, float("-inf"))

    @staticmethod
    def _race(logp: torch.Tensor, order: torch.Tensor | None, noise: torch.Tensor) -> torch.Tensor:
        """Gumbel-max: argmax of logp + Gumbel noise; ``noise`` holds each candidate's own uniform (by token id),
        aligned with ``logp`` (candidates in ``order``, or the whole vocabulary when ``order`` is None)."""
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


@dataclass
class EndControl:
    """An explicit end-of-conversation decision before each turn is decoded.

    ``ids``: the end marker's token ids as the model was trained to write them, EOS included.
    Each row's end probability is the model's own probability of that whole sequence after its
    prompt (teacher-forced, one extra forward over the marker on a copy of the prompt's KV cache):
    ``p``. The row ends with probability ``sigmoid(logit(p) + bias)`` (one uniform from the row's
    own stream; greedy rows end when that is >= 1/2); ``bias`` 0 keeps the model's own rate,
    ``bias`` > 0 ends more often. A row that does not end is not allowed to start with the marker's
    first token, so it cannot end a second way. ``logprobs`` is filled with each row's log ``p``.
    """

    ids: Sequence[int]
    bias: float = 0.0
    logprobs: list[float] = field(default_factory=list)


def end_logprobs(model: Any, cache: Any, logits: torch.Tensor, mask: torch.Tensor,
                 end_ids: Sequence[int]) -> torch.Tensor:
    """log P(end_ids | prompt) per prefilled row; the prompt's cache is left as it was (a copy is extended)."""
    ids = torch.tensor(list(end_ids), device=logits.device)
    logp = torch.log_softmax(logits.float(), dim=-1)[:, ids[0]]
    if len(ids) > 1:
        rows, extra = logits.shape[0], len(ids) - 1
        full = torch.cat([mask, mask.new_ones((rows, extra))], dim=-1)
        out = model(input_ids=ids[:-1].expand(rows, -1), attention_mask=full,
                    position_ids=(full.cumsum(-1) - 1)[:, -extra:], use_cache=True,
                    **{cache_kwarg(model): copy.deepcopy(cache)})
        steps = torch.log_softmax(out.logits[:, -extra:].float(), dim=-1)
        logp = logp + steps.gather(-1, ids[1:].expand(rows, -1).unsqueeze(-1)).squeeze(-1).sum(-1)
    return logp


def end_log_odds(logp: torch.Tensor) -> torch.Tensor:
    """logit(p) for log-probabilities ``logp`` (float64; p is kept below 1)."""
    logp = logp.double()
    return logp - torch.log(-torch.expm1(logp.clamp(max=-1e-7)))


def end_chance(logp: torch.Tensor, bias: float) -> torch.Tensor:
    """sigmoid(logit(p) + bias) for log-probabilities ``logp``: the chance the end decision ends a row."""
    return torch.sigmoid(end_log_odds(logp) + float(bias))


def end_decisions(logp: torch.Tensor, bias: float, sampler: "RowwiseSampler | None") -> list[bool]:
    """Whether each row ends: a draw at probability :func:`end_chance`, from the row's own stream."""
    q = end_chance(logp, bias).tolist()
    if sampler is None:
        return [v >= 0.5 for v in q]
    return [u < v for u, v in zip(sampler.decision_uniforms(), q)]


@torch.inference_mode()
def decode_rows(model: Any, prompts: Sequence[Sequence[int]], *, pad_id: int, eos_id: int | Sequence[int],
                max_new_tokens: int,
                sampler: RowwiseSampler | None = None, stop_texts: Sequence[str] = (), decode: Any = None,
                check_every: int = 4, banned_ids: Sequence[int] = (), end: EndControl | None = None) -> list[list[int]]:
    """New token ids per prompt (up to and including EOS: ``eos_id``, or any of several ids), with a KV cache,
    decoded row by row.

    Savings over ``model.generate`` for the eval's workload:
    * identical prompts (several samples of one context) are prefilled once and their cache rows
      copied, so a control's second sample costs decode steps only;
    * prompts are prefilled in groups of similar length and the caches merged (:func:`prefill`), so
      short prompts do not pay for the longest prompt's padding;
    * sampling sorts at most the tokens that can be in a row's nucleus (RowwiseSampler), not the vocabulary,
      and draws by a Gumbel-max race, which float-level logit differences between batch shapes do not move;
    * a row leaves the batch as soon as it ends (EOS, or one of ``stop_texts`` in its decoded text,
      checked every ``check_every`` steps), so the batch shrinks instead of waiting for its slowest row.
    Greedy when ``sampler`` is None; otherwise each row draws from its own stream (RowwiseSampler),
    so its tokens do not depend on its batch mates. ``banned_ids`` are never generated (control and
    unused tokens); ``end``: the explicit end-of-conversation decision (:class:`EndControl`), whose
    ended rows come back as exactly ``end.ids``.
    """
    if not prompts:
        return []
    device = next(model.parameters()).device
    unique: dict[tuple[int, ...], int] = {}
    source = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
    cache, logits, mask = prefill(model, [list(p) for p in unique], pad_id, device)
    rows = torch.tensor(source, device=device)
    end_logp = end_logprobs(model, cache, logits, mask, end.ids)[rows] if end is not None else None
    if len(unique) != len(prompts) or source != list(range(len(prompts))):
        cache.reorder_cache(rows)
    logits, mask = logits[rows], mask[rows]
    active = list(range(len(prompts)))  # active[j] = prompt index of batch row j
    new: list[list[int]] = [[] for _ in prompts]
    banned = torch.tensor(sorted(set(banned_ids)), dtype=torch.long, device=device)
    stops = {int(eos_id)} if isinstance(eos_id, int) else {int(e) for e in eos_id}
    if end is not None and end_logp is not None:
        end.logprobs[:] = end_logp.tolist()
        ended = end_decisions(end_logp, end.bias, sampler)
        for j in (j for j, e in enumerate(ended) if e):
            new[j] = list(end.ids)
        keep = [j for j, e in enumerate(ended) if not e]
        if not keep:
            return new
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.reorder_cache(index)
            logits, mask, active = logits[index], mask[index], keep
            if sampler is not None:
                sampler.select(keep)
        logits = logits.clone()
        logits[:, int(end.ids[0])] = float("-inf")  # a row that did not end does not start the marker
    for step in range(max_new_tokens):
        if banned.numel():
            logits = logits.index_fill(-1, banned, float("-inf"))
        token = logits.float().argmax(-1) if sampler is None else sampler.sample(logits)
        done = []
        for j, t in enumerate(token.tolist()):
            new[active[j]].append(t)
            if t in stops:
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


# Vocabulary entries that are never text a user types: reserved/unused slots, multimodal and turn
# control tokens, byte-fallback-free specials. HTML-like tags (<a>, <em>) are ordinary text and stay.
CONTROL_TOKEN = re.compile(r"<unused\d+>|<\|[^|<>]{1,60}\|>|<(start|end)_of_[a-z_]+>|<image_soft_token>|"
                           r"<(bos|eos|pad|unk|mask)>|\[multimodal\]|<reserved_special_token_\d+>")


def control_token_ids(tokenizer: Any) -> list[int]:
    """Ids a simulated user turn must never contain: the tokenizer's special tokens (but EOS, which closes
    a turn) and vocabulary entries named like control or unused tokens (:data:`CONTROL_TOKEN`)."""
    keep = {tokenizer.eos_token_id}
    ids = {int(i) for i in (tokenizer.all_special_ids or [])}
    ids |= {int(i) for tok, i in tokenizer.get_vocab().items() if CONTROL_TOKEN.fullmatch(tok)}
    return sorted(ids - keep)
