"""The trained simulator served by an inference engine: any OpenAI-compatible ``/completions`` endpoint.

Rollouts at scale belong on an engine (vLLM, SGLang, llama.cpp's server), not in the trainer's
process. This backend sends the simulator's own prompt to such a server and reads back the next
user turn, with the local backend's (:class:`usersim.simulator.UserSimulator`) prompt format, end
marker, cleaning and seed rule:

- **prompt**: the token ids of :func:`usersim.data_prep.prompt_format.tokenize_conversation`
  (condition header, turns, generation cue; oldest whole turns dropped to fit the length the model
  was trained at), sent as a list of ids (``prompt_as: ids``, the OpenAI completions API's token
  array) so the server sees exactly the training tokenisation; ``prompt_as: text`` sends the decoded
  string instead, for servers that take text only;
- **stop**: the next turn's role markers; the turn ends at the model's EOS, which servers stop at;
- **seeds**: row ``i`` gets the same per-row seed as the local backend (:func:`usersim.simulator.row_seeds`),
  sent as the request's ``seed`` (mod 2**31). A server reproduces its own samples for a seed; it does
  not reproduce the local backend's samples (another sampler, another kernel);
- **end decision** (``end_bias`` not None, e.g. from the run's decoding.json): one extra request per
  row with ``echo`` and ``logprobs`` over ``prompt + end marker + EOS`` reads log P(end), and the row
  ends with probability ``sigmoid(logit p + end_bias)``, drawn from the row's own stream as locally.
  A row that goes on and still writes the marker first is re-asked (new derived seed) up to
  ``end_retries`` times, then counts as an end: the local engine instead forbids the marker's first
  token, which a ``logit_bias`` cannot do for the first step only. Servers that do not return
  prompt log-probabilities (``echo``) raise a clear error: pass ``end_bias=None`` there.

Not done here: control/unused tokens are not banned (a 6,000-entry ``logit_bias`` is refused by most
servers); eval's ``artefact_rate`` shows a regression if the served model writes them.

Servers: vLLM and SGLang take token-id prompts and return ``echo`` log-probabilities (everything above).
``transformers serve`` (CPU, no compiling; the ``serve`` extra) takes text prompts only and no ``echo``:
``prompt_as: text``, ``end_bias=None``; it serves a merged checkpoint, not an adapter, and samples only
when that checkpoint's generation_config.json says ``do_sample: true``. In text mode a server re-tokenises
the decoded prompt, which can merge tokens the training format kept apart (``Assistant: Hi`` is one piece
less), so the model reads a slightly different prompt than in training; tests/test_completions_transformers_serve.py
checks every other part of the protocol against that real server in CI.

Serving a trained run with vLLM (GPU; the adapter directory is the train run)::

    vllm serve <base checkpoint dir> --enable-lora --lora-modules usersim=runs/default/train \\
        --max-lora-rank 16 --port 8000
    usersim chat --user completions:http://localhost:8000/v1 --run_dir runs/default/train --model usersim
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from usersim.data_prep.prompt_format import (ASSISTANT_MARKER, USER_MARKER, Condition, end_of_conversation_ids,
                                             tokenize_conversation)
from usersim.openai_http import EndpointError, api_key, completions_url, post_json
from usersim.run_files import read_decoding, trained_max_seq_len
from usersim.simulator import DEFAULT_GENERATION, SimulatorTurn, as_turns, derive_seed, row_seeds, turn_from_text


@dataclass
class CompletionsConfig:
    """Where the served simulator is (``usersim chat --user completions:URL``, ``UserSimEnv``, the RL study)."""

    endpoint: str  # OpenAI-compatible base URL, e.g. http://localhost:8000/v1
    model: str  # the model name the server serves the simulator under (vLLM: the --lora-modules name)
    api_key_env: str = ""  # NAME of the env var holding the key ("" = send none); never the key itself
    prompt_as: str = "ids"  # "ids": token ids (exact training tokenisation) | "text": the decoded prompt
    timeout_s: float = 60.0  # seconds to wait for one response
    concurrency: int = 16  # requests in flight at once
    end_retries: int = 2  # with the end decision: re-asks of a row that chose to go on but wrote the marker


class CompletionsUser:
    """A simulated user whose turns come from a completions endpoint (backend ``completions``)."""

    name = "completions"

    def __init__(self, cfg: CompletionsConfig, tokenizer: Any, *, max_prompt_tokens: int,
                 decoding: Mapping[str, Any] | None = None):
        if cfg.prompt_as not in ("ids", "text"):
            raise ValueError(f"prompt_as must be 'ids' or 'text', got {cfg.prompt_as!r}")
        if not cfg.endpoint or not cfg.model:
            raise ValueError("the completions backend needs an endpoint URL and the served model's name")
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.max_prompt_tokens = int(max_prompt_tokens)
        self.decoding = dict(decoding or {})
        self.url = completions_url(cfg.endpoint)
        # the BOS the tokenizer adds to any text by itself (None: it adds none), left out of text prompts
        probe = tokenizer("a").input_ids if cfg.prompt_as == "text" else []
        bos = getattr(tokenizer, "bos_token_id", None)
        self._server_bos = bos if probe and bos is not None and probe[0] == bos else None
        self.key = api_key(cfg.api_key_env, "completions api_key_env")

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, cfg: CompletionsConfig) -> "CompletionsUser":
        """Tokenizer, trained length and decoding.json from a train run (the weights stay on the server)."""
        from transformers import AutoTokenizer

        run_dir = Path(run_dir).expanduser()
        if not (run_dir / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{run_dir} holds no tokenizer: pass the train run directory the server serves")
        tok = AutoTokenizer.from_pretrained(str(run_dir))
        return cls(cfg, tok, max_prompt_tokens=trained_max_seq_len(run_dir), decoding=read_decoding(run_dir))

    # -- the interface ---------------------------------------------------------------------------
    def respond_batch(self, histories: Sequence[Sequence[Any]], conditions: Sequence[Condition | None] | None = None,
                      seed: int | Sequence[int] | None = None, **generation: Any) -> list[SimulatorTurn]:
        """Next user turns, one request per row (``concurrency`` at once); arguments as the local backend's."""
        conditions = list(conditions) if conditions is not None else [None] * len(histories)
        if len(conditions) != len(histories):
            raise ValueError(f"{len(histories)} histories but {len(conditions)} conditions")
        options = {**DEFAULT_GENERATION, **self.decoding, **generation}
        unknown = set(options) - set(DEFAULT_GENERATION)
        if unknown:
            raise ValueError(f"the completions backend does not take generation options {sorted(unknown)}")
        if options["top_k"]:
            raise ValueError("top_k is not sent to completions endpoints (not in the OpenAI API); use top_p")
        prompts = [tokenize_conversation(c or Condition(), as_turns(h), self.tokenizer, max_tokens=self.max_prompt_tokens,
                                         generation_prompt=True).input_ids for h, c in zip(histories, conditions)]
        seeds = row_seeds(seed, len(prompts))
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(self.cfg.concurrency, len(prompts)))) as pool:
            return list(pool.map(lambda i: self._row(prompts[i], seeds[i], options), range(len(prompts))))

    # -- one row ---------------------------------------------------------------------------------
    def _row(self, prompt: list[int], seed: int, options: Mapping[str, Any]) -> SimulatorTurn:
        end_bias = options["end_bias"]
        end_logprob = None
        if end_bias is not None:
            end_logprob = self.end_logprob(prompt)
            if _decide_end(end_logprob, float(end_bias), seed, bool(options["do_sample"])):
                return SimulatorTurn(text="", ends_conversation=True, tokens=0, end_logprob=end_logprob)
        tries = 1 + (self.cfg.end_retries if end_bias is not None else 0)
        for attempt in range(tries):
            row_seed = seed if attempt == 0 else derive_seed(seed, "retry", attempt)
            turn = self._sample(prompt, row_seed, options)
            if not (end_bias is not None and turn.ends_conversation):
                break
        turn.end_logprob = end_logprob
        return turn

    def _body(self, prompt: list[int]) -> dict[str, Any]:
        if self.cfg.prompt_as == "ids":
            return {"model": self.cfg.model, "prompt": list(prompt)}
        # a server tokenises text with the tokenizer's special tokens, so a BOS the tokenizer adds itself is
        # left out of the text (sent as "<bos>..." it would come back twice)
        if prompt and self._server_bos is not None and prompt[0] == self._server_bos:
            prompt = prompt[1:]
        return {"model": self.cfg.model, "prompt": self.tokenizer.decode(prompt)}

    def _sample(self, prompt: list[int], seed: int, options: Mapping[str, Any]) -> SimulatorTurn:
        body = {**self._body(prompt), "max_tokens": int(options["max_new_tokens"]),
                "stop": [USER_MARKER, ASSISTANT_MARKER], "seed": int(seed) % (2**31)}
        if options["do_sample"]:
            body.update(temperature=float(options["temperature"]), top_p=float(options["top_p"]))
        else:
            body["temperature"] = 0.0
        payload = post_json(self.url, body, self.key, self.cfg.timeout_s)
        choice = _choice(payload)
        tokens = int((payload.get("usage") or {}).get("completion_tokens") or 0)
        return turn_from_text(str(choice.get("text") or ""), closed=choice.get("finish_reason") != "length",
                              tokens=tokens)

    def end_logprob(self, prompt: list[int]) -> float:
        """log P(end marker + EOS | prompt) from the server's prompt log-probabilities (``echo``)."""
        end_ids = end_of_conversation_ids(self.tokenizer)
        body = {**self._body(list(prompt) + list(end_ids)), "max_tokens": 1, "echo": True, "logprobs": 1,
                "temperature": 0.0}
        payload = post_json(self.url, body, self.key, self.cfg.timeout_s)
        choice = _choice(payload)
        values = ((choice.get("logprobs") or {}).get("token_logprobs") or [])
        # echo returns the prompt's log-probabilities, then the generated token's (if one was generated); the
        # marker's are the last of the prompt's, counted from the end so a server's own BOS does not shift them
        generated = int((payload.get("usage") or {}).get("completion_tokens", 1) or 0)
        stop = len(values) - generated
        tail = values[stop - len(end_ids):stop] if stop >= len(end_ids) else []
        if len(tail) != len(end_ids) or any(v is None for v in tail):
            raise EndpointError(f"{self.url} returned no prompt log-probabilities (echo + logprobs), which the "
                                "explicit end decision needs: serve with prompt logprobs on, or use end_bias=None")
        return float(sum(tail))


def _choice(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    try:
        return payload["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise EndpointError(f"unexpected completions response (no choices[0]): {str(payload)[:300]}") from None


def _decide_end(logp: float, bias: float, seed: int, sample: bool) -> bool:
    """The local engine's decision (usersim.engine.end_decisions) for one row with this seed."""
    import torch

    from usersim.engine import RowwiseSampler, end_chance

    chance = float(end_chance(torch.tensor([min(logp, 0.0)]), bias)[0])
    if not sample:
        return chance >= 0.5
    return RowwiseSampler([seed]).decision_uniforms()[0] < chance if not math.isnan(chance) else False
