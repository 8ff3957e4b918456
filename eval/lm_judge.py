"""The ``lm`` judge: a causal LM reads each candidate turn *in its conversation*; a linear probe on its
hidden states is the classifier.

Why: the fast judge sees n-grams and style, the neural judge a frozen sentence embedding of the turn
and of its neighbours. Both miss a turn that is fluent and human in style but deaf to the context
(a greeting answering a goodbye, "I love classical music too" answering "I'm not a fan"). A causal
LM's hidden state at a turn's tokens is computed *from* the conversation before it, so a linear
probe on it can use how the turn fits what was said, as well as what the turn is. Classifiers built
on a language model's own view of a text are strong detectors of machine-written text (e.g. Verma et
al. 2024, "Ghostbuster", arXiv:2305.15047, a linear classifier on features of LM token
probabilities); measured here on real data in BENCHMARKS.md section 6.

What it computes, per (text, :class:`~usersim.eval.judges.Context`):

* the conversation is written as a plain transcript, one line per turn (``User: ...`` for the user
  being judged, ``Other: ...`` for the other side), the last ``max_context_tokens`` tokens kept
  (the oldest cut first), then ``User: <candidate>`` and a newline closing the turn;
* one forward pass of the LM (weights frozen, no fine-tuning); the candidate is cut to its first
  ``max_turn_tokens`` tokens;
* features: the mean hidden state over the candidate's tokens at three depths (a third, two thirds
  and the last layer), the hidden state of the closing newline at two thirds depth (the model's
  summary of the finished turn in its context), and log(1 + number of candidate tokens). Each block
  is standardised over all rows of a call and scaled to unit mean norm. Nothing looks at a label, so
  the permutation nulls of usersim.eval.paired and usersim.eval.discriminators stay exact.

A context is read once for all the candidates that share it (its KV cache is repeated across them),
which is what makes the judge affordable in eval: every system answers the same contexts.
Features are cached per (context, text) for the life of the judge, so the controls and every
system's comparison reuse them; :meth:`LMFeaturiser.warm` computes a whole eval's texts at once.

What it does not do: it never fine-tunes the LM (an end-to-end fine-tuned classifier cannot be
refitted for each of the thousands of permutations the exact null needs), and it reads no condition
(persona, goal): it judges the turn against the conversation, not against the hidden spec.
Cost: see BENCHMARKS.md ("Judges").
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Sequence

import numpy as np

from usersim.eval.judges import Context, Judge

USER_LABEL, OTHER_LABEL = "User", "Other"
DESCRIPTION = "a linear probe on the base LM's hidden states of the turn read in its conversation"


@dataclass(frozen=True)
class LMJudgeConfig:
    max_context_tokens: int = 128  # transcript tokens before the candidate (oldest cut first)
    max_turn_tokens: int = 48  # candidate tokens read (the eval compares turns on max_new_tokens anyway)
    max_context_turns: int = 6  # turns of the conversation written into the transcript
    max_chars_per_turn: int = 600  # each context turn cut to this many characters before tokenising
    batch_rows: int = 32  # candidates per forward pass


def transcript(context: Context, max_turns: int, max_chars: int) -> str:
    """The conversation before a turn as plain text lines, ``User:``/``Other:``; ending ready for ``User:``."""
    turns = list(context.history)[-max_turns:] if max_turns > 0 else []
    if not turns:  # no history: fall back to the two turns a Context always has
        turns = ([("user", context.own_previous)] if context.own_previous.strip() else []) + \
                ([("other", context.previous)] if context.previous.strip() else [])
    lines = [f"{USER_LABEL if role == 'user' else OTHER_LABEL}: {' '.join(text.split())[:max_chars]}"
             for role, text in turns if text.strip()]
    return "".join(line + "\n" for line in lines)


class LMFeaturiser:
    """``features(texts, contexts)`` for the lm judge; see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, cfg: LMJudgeConfig | None = None,
                 model_context: Callable[[], ContextManager[Any]] | None = None) -> None:
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg or LMJudgeConfig()
        self.model_context = model_context or contextlib.nullcontext  # e.g. a simulator's adapter_disabled
        n_layers = int(getattr(model.config, "num_hidden_layers", 0) or model.config.get_text_config().num_hidden_layers)
        self.layers = sorted({max(1, n_layers // 3), max(1, (2 * n_layers) // 3), n_layers})
        self._cache: dict[tuple[Context, str], np.ndarray] = {}
        nl = tokenizer.encode("\n", add_special_tokens=False)
        self._newline = nl[-1:] if nl else []
        bos = getattr(tokenizer, "bos_token_id", None)
        self._bos = [bos] if bos is not None else []

    # -- tokenisation
    def _context_ids(self, context: Context) -> list[int]:
        text = transcript(context, self.cfg.max_context_turns, self.cfg.max_chars_per_turn) + f"{USER_LABEL}:"
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return self._bos + ids[-self.cfg.max_context_tokens:]

    def _turn_ids(self, text: str) -> list[int]:
        ids = self.tokenizer.encode(" " + " ".join(str(text).split()), add_special_tokens=False)
        return ids[:self.cfg.max_turn_tokens] or self._newline[:]  # an empty turn is read as its closing newline

    # -- the forward passes
    def _group_features(self, context: Context, texts: list[str]) -> list[np.ndarray]:
        import torch

        from usersim.engine import cache_kwarg, cache_of

        model = self.model
        kw = cache_kwarg(model)
        device = next(model.parameters()).device
        ctx = torch.tensor([self._context_ids(context)], device=device)
        out: list[np.ndarray] = []
        with torch.no_grad():
            prefix = model(input_ids=ctx, use_cache=True, logits_to_keep=1)  # hidden states only: skip the LM head
            for start in range(0, len(texts), self.cfg.batch_rows):
                chunk = texts[start:start + self.cfg.batch_rows]
                rows = [self._turn_ids(t) + self._newline for t in chunk]
                width = max(len(r) for r in rows)
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
                cache = _repeated_cache(cache_of(prefix), len(rows))
                # right padding needs no mask: with causal attention no real token sees a later pad
                mask = torch.ones(len(rows), ctx.shape[1] + width, dtype=torch.long, device=device)
                res = model(input_ids=ids, **{kw: cache}, attention_mask=mask, use_cache=True,
                            output_hidden_states=True, logits_to_keep=1)
                hs = [res.hidden_states[layer].float() for layer in self.layers]
                for i, r in enumerate(rows):
                    n_turn = len(r) - len(self._newline)
                    means = [h[i, :n_turn].mean(0) for h in hs]
                    closing = hs[1 if len(hs) > 1 else 0][i, len(r) - 1]
                    out.append(np.concatenate([*(m.cpu().numpy() for m in means), closing.cpu().numpy(),
                                               [np.log1p(n_turn)]]).astype(np.float32))
        return out

    def warm(self, texts: Sequence[str], contexts: Sequence[Context], show_progress: bool = False) -> None:
        """Compute (and cache) the raw features of every (context, text) not seen yet, one pass per context."""
        todo: dict[Context, list[str]] = {}
        for t, c in zip(texts, contexts):
            if t is not None and (c, t) not in self._cache:
                todo.setdefault(c, [])
                if t not in todo[c]:
                    todo[c].append(t)
        groups = list(todo.items())
        if show_progress and groups:
            from tqdm.auto import tqdm

            groups = tqdm(groups, desc="lm judge", unit="context")
        was_training = getattr(self.model, "training", False)
        self.model.eval()
        try:
            with self.model_context():
                for c, ts in groups:
                    for t, f in zip(ts, self._group_features(c, ts)):
                        self._cache[(c, t)] = f
        finally:
            if was_training:
                self.model.train()

    def raw(self, texts: Sequence[str], contexts: Sequence[Context]) -> np.ndarray:
        self.warm(texts, contexts)
        return np.stack([self._cache[(c, t)] for t, c in zip(texts, contexts)]) if len(texts) else np.zeros((0, 1))

    def __call__(self, texts: Sequence[str], contexts: Sequence[Context]) -> np.ndarray:
        x = self.raw(list(texts), list(contexts)).astype(np.float64)
        if x.shape[0] == 0:
            return x
        dim = (x.shape[1] - 1) // (len(self.layers) + 1)
        blocks = [x[:, k * dim:(k + 1) * dim] for k in range(len(self.layers) + 1)] + [x[:, -1:]]
        out = []
        for b in blocks:  # standardise each block over the rows (label-free), then unit mean norm per block
            sd = b.std(0)
            z = (b - b.mean(0)) / np.where(sd > 0, sd, 1.0)
            out.append(z / np.sqrt(b.shape[1]))
        return np.hstack(out)


def _repeated_cache(cache: Any, n: int) -> Any:
    """A copy of a batch-1 KV cache repeated to ``n`` rows (the original is left as it is)."""
    import copy

    rep = copy.copy(cache)
    if hasattr(rep, "layers"):  # transformers 5 caches: one object per layer holding keys/values
        rep.layers = [copy.copy(layer) for layer in cache.layers]
    rep.batch_repeat_interleave(n)
    return rep


def lm_judge(model: Any, tokenizer: Any, cfg: LMJudgeConfig | None = None,
             model_context: Callable[[], ContextManager[Any]] | None = None) -> Judge:
    """The ``lm`` judge over ``model`` (frozen). A PEFT model is read with its adapter off: pass its
    ``disable_adapter`` (or a simulator's ``adapter_disabled``) as ``model_context``."""
    feats = LMFeaturiser(model, tokenizer, cfg, model_context)
    return Judge("lm", DESCRIPTION, feats, warm=feats.warm)


def load_judge_lm(path: str | None = None, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) of the judge's LM: ``path`` (a local checkpoint), or the packaged Gemma-3-270M
    base, dequantised once into the train stage's cache (safetensors; nothing is downloaded)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path:
        from usersim.train.base_model import convert_packaged_gguf
        from usersim.train.config import TrainConfig

        path = str(convert_packaged_gguf(TrainConfig()))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).to(device).eval()
    return model, tok
