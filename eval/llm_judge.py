"""The ``llm`` judge of the paired test: a chat model behind any OpenAI-compatible endpoint is shown
the conversation so far and two candidate next user turns, the real one and a simulated one, and
asked which one the real person wrote.

This is the pairwise "LLM as a judge" set-up (Zheng et al. 2023, "Judging LLM-as-a-Judge with
MT-Bench and Chatbot Arena", arXiv:2306.05685, sections 3.1 and 3.3), turned from "which answer is
better" into "which message is human", i.e. the paired discrimination of usersim.eval.paired with a
judge that is prompted instead of fitted. The prompt wording is ours (:class:`LLMJudgeConfig`).

Scoring
    Per pair, 1 when the judge names the real turn, 0 when it names the other, 1/2 when its answer
    names neither (``n_unparsed``: the first standalone "1" or "2" of the answer counts, after any
    ``<think>`` block) or the request still failed after the client's retries (``n_failed``). More
    than half failed raises :class:`EndpointError`; so does a failure of the very first request
    (sent alone before the others: an endpoint that is down, or a wrong key or model name, fails
    fast instead of after ``n`` retried requests). Accuracy is the mean score; 0.5 = the judge
    cannot tell the two apart.

Order and seeds
    Which candidate is shown as "Candidate 1" is a fair coin per pair, drawn from
    ``derive_seed(seed, "llm_judge", "order", index)``; the endpoint gets
    ``derive_seed(seed, "llm_judge", index)`` as its ``seed``. Same seed, same orders and requests.

Inference (usersim.eval.permutation)
    The judge is fixed, not fitted on these pairs. Under the null (each user's real and simulated
    turns are exchangeable) swapping the two sides of a pair while flipping its order coin shows the
    judge exactly the same request, and the coin is fair, so the data are as likely either way and
    the swap turns a score ``s`` into ``1 - s``. The exact null distribution of the accuracy is
    therefore that of ``0.5 + mean(e_u(i) * (s_i - 0.5))`` with ``e_u = +-1`` drawn per *user* (all
    of a user's pairs flip together, which keeps the dependence between one user's pairs). No
    refitting is needed: thousands of null draws are one matrix product. The CI is the union of the
    test-inverting interval and the cluster-robust (by user) interval, as for every paired judge.

Position bias (reported, never corrected)
    LLM judges favour one position whatever the content (Zheng et al. 2023, section 3.3; Wang et al.
    2023, "Large Language Models are not Fair Evaluators", arXiv:2305.17926). Reported:

    * ``position_first_share``: among answered pairs, the share where the judge picked Candidate 1.
      0.5 = no preference. Its CI is the union of the exact (Clopper-Pearson) binomial interval and
      the cluster-robust interval by user.
    * ``position_p_value``: exact two-sided binomial test of that share against 0.5. Independence
      comes from the design, not from an assumption about users: if the judge treats both positions
      alike (showing a pair in the other order only changes which number names its pick), "picked
      Candidate 1" is the pair's own order coin XOR a choice that does not depend on it, so the
      answered pairs are independent fair coins whatever the users. ``position_biased``: p < 0.05.
    * ``accuracy_real_first`` / ``accuracy_real_second``: the accuracy on the pairs that showed the
      real turn as Candidate 1 / as Candidate 2 (counts ``n_real_first`` / ``n_real_second``). A
      judge that always answers "1" scores 1 and 0.

    Because the order is a fair coin per pair, a judge's preference for a position adds as often to
    the accuracy as it takes away: the accuracy stays an unbiased measure of how well the judge tells
    real from simulated, and the test above stays exact, whatever the position bias. Position bias
    only costs power (a judge that always answers "1" sits at 0.5 whatever the simulator).
"""

from __future__ import annotations

import re
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from scipy.stats import binomtest

from usersim.eval.judges import Context
from usersim.eval.permutation import ALPHA, CHANCE, Inference, cluster_robust_interval, permutation_inference
import usersim.openai_http as openai_http
from usersim.openai_http import EndpointError, api_key, chat_completions_url, redact
from usersim.simulator import derive_seed

NAME = "llm"
SETTING = "llm_judge"  # the eval config key the wiring is expected to use, named in error messages
CUT_MARK = " [...] "
NO_CONVERSATION = "(nothing yet: the candidate would be the user's first message)"

# The HTTP call: (url, request body, key or None, timeout_s) -> the decoded JSON answer; raises
# EndpointError when the request failed (usersim.openai_http.post_json, with its retries).
Post = Callable[[str, Mapping[str, Any], "str | None", float], Mapping[str, Any]]


@dataclass
class LLMJudgeConfig:
    """The ``llm`` judge: a chat model behind an OpenAI-compatible endpoint that picks, of two candidate
    next user turns, the one the real person wrote (see the module docstring)."""

    endpoint: str = ""  # OpenAI-compatible base URL (e.g. https://api.openai.com/v1); "" = the llm judge is off
    endpoint_model: str = ""  # model name sent to the endpoint (e.g. gpt-4o); required with endpoint
    api_key_env: str = ""  # NAME of the env var holding the endpoint's key ("" = send none); never the key itself
    max_history_turns: int = 8  # most recent turns of the conversation shown before the candidates; 0 = none
    # a longer context turn keeps its head and tail around " [...] " (the turn just before matters most at its end)
    max_chars_per_turn: int = 1000
    max_chars_per_candidate: int = 2000  # the same cut for each candidate (one rule for both sides: fair)
    temperature: float = 0.0  # 0 = greedy: the judge is a fixed function of its prompt (sampling is allowed)
    max_tokens: int = 8  # answer budget: one digit is asked for; a reasoning model needs far more
    timeout_s: float = 60.0  # seconds to wait for one response (each request is retried on 429/5xx)
    concurrency: int = 8  # requests in flight at once (threads)
    # What the model is told. Our wording, after the pairwise judges of Zheng et al. 2023 (arXiv:2306.05685).
    system_prompt: str = (
        "You will read a conversation between a person (the user) and an AI assistant, followed by two "
        "candidates for the user's next message. One candidate is the message the real person actually wrote "
        "next. The other was written by a computer program imitating that person. Judge which one is the real "
        "person's: consider how people really write in chats (length, tone, typos, what they would say at this "
        "point and what they would leave out), not which message is better. Reply with a single digit: 1 if "
        "Candidate 1 is the real person's message, 2 if Candidate 2 is. Write nothing else."
    )
    question: str = "Which candidate is the real person's next message? Reply with 1 or 2 only."  # asked after the candidates


def check_config(cfg: LLMJudgeConfig) -> None:
    """Raise ValueError on a config that cannot run (before any request is sent)."""
    if not cfg.endpoint:
        raise ValueError(f"{SETTING}.endpoint is empty (the llm judge is off): nothing to ask")
    if not cfg.endpoint_model:
        raise ValueError(f"{SETTING}.endpoint is set but {SETTING}.endpoint_model is empty: name the model to request")
    if cfg.max_history_turns < 0 or cfg.max_chars_per_turn < 1 or cfg.max_chars_per_candidate < 1:
        raise ValueError(f"{SETTING}.max_history_turns must be >= 0 and max_chars_per_turn/max_chars_per_candidate "
                         ">= 1")
    if cfg.max_tokens < 1 or cfg.concurrency < 1 or cfg.timeout_s <= 0:
        raise ValueError(f"{SETTING}.max_tokens and {SETTING}.concurrency must be >= 1 and timeout_s > 0")
    if cfg.temperature < 0:
        raise ValueError(f"{SETTING}.temperature must be >= 0; got {cfg.temperature}")


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment (for logs and descriptions)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) if parts.scheme else url


def describe(cfg: LLMJudgeConfig) -> str:
    """One line for reports (the counterpart of ``usersim.eval.judges.Judge.description``)."""
    where = urlsplit(cfg.endpoint).hostname or public_url(cfg.endpoint)
    return (f"the LLM {cfg.endpoint_model or '?'} (via {where}) reads up to {cfg.max_history_turns} turns of context "
            "and both candidates, shown in a random order, and names the real one; a fixed judge (nothing fitted), "
            "read against an exact user-level sign-flip null")


# ----------------------------------------------------------------------------- prompt


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and its tail around ``CUT_MARK``."""
    text = text.strip()
    if len(text) <= limit:
        return text
    keep = max(limit - len(CUT_MARK), 2)
    return text[:keep - keep // 2].rstrip() + CUT_MARK + text[len(text) - keep // 2:].lstrip()


def context_turns(ctx: Context) -> list[tuple[str, str]]:
    """The conversation before a turn as ``(role, text)``, oldest first.

    ``ctx.history`` when known; otherwise what ``previous``/``own_previous`` tell (the user's own last
    turn, then the other side's last turn when that is a different one).
    """
    history = tuple(getattr(ctx, "history", ()) or ())  # getattr: a Context built before history existed
    if history:
        return [(str(r), str(t)) for r, t in history]
    turns = []
    if ctx.own_previous.strip():
        turns.append(("user", ctx.own_previous))
    if ctx.previous.strip() and ctx.previous != ctx.own_previous:
        turns.append(("assistant", ctx.previous))
    return turns


def render_conversation(ctx: Context, cfg: LLMJudgeConfig) -> str:
    turns = context_turns(ctx)[-cfg.max_history_turns:] if cfg.max_history_turns else []
    if not turns:
        return NO_CONVERSATION
    return "\n".join(f"{'User' if role == 'user' else 'Assistant'}: {clip(text, cfg.max_chars_per_turn)}"
                     for role, text in turns)


def _candidate(k: int, text: str, cfg: LLMJudgeConfig) -> str:
    return f"Candidate {k}:\n<<<\n{clip(text, cfg.max_chars_per_candidate)}\n>>>"


def judge_messages(cfg: LLMJudgeConfig, first: str, second: str, context: Context,
                   second_context: Context | None = None) -> list[dict[str, str]]:
    """Chat messages asking which of ``first`` (Candidate 1) and ``second`` (Candidate 2) is real.

    Both answer ``context``; with ``second_context``, each candidate is shown after its own conversation.
    """
    if second_context is None:
        body = (f"The conversation so far (oldest first; earlier messages may be left out):\n"
                f"{render_conversation(context, cfg)}\n\n{_candidate(1, first, cfg)}\n\n{_candidate(2, second, cfg)}")
    else:
        body = ("The two candidates answer different conversations; each is shown after its own (oldest first; "
                "earlier messages may be left out).\n\n"
                f"Conversation before Candidate 1:\n{render_conversation(context, cfg)}\n\n{_candidate(1, first, cfg)}"
                f"\n\nConversation before Candidate 2:\n{render_conversation(second_context, cfg)}\n\n"
                f"{_candidate(2, second, cfg)}")
    return [{"role": "system", "content": cfg.system_prompt},
            {"role": "user", "content": f"{body}\n\n{cfg.question}"}]


_THOUGHT = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)  # a reasoning block, closed or cut by max_tokens
_CHOICE = re.compile(r"(?<![\w.])([12])(?!\w|\.\d)")  # a standalone 1 or 2 (not 12, 1.5, 0.2, v1)


def parse_choice(answer: str | None) -> int | None:
    """1 or 2: the first standalone "1" or "2" of the answer outside a ``<think>`` block; None if none."""
    match = _CHOICE.search(_THOUGHT.sub(" ", answer or ""))
    return int(match.group(1)) if match else None


def answer_text(payload: Mapping[str, Any]) -> str:
    """The text of ``choices[0].message.content`` (a list of content parts is joined)."""
    try:
        content = payload["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise EndpointError("unexpected chat-completions response (no choices[0].message)") from None
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content or "")


# ----------------------------------------------------------------------------- seeds


def pair_seed(seed: int, index: int) -> int:
    """The ``seed`` sent with pair ``index``'s request."""
    return derive_seed(seed, SETTING, index) % (2 ** 31)


def order_coins(seed: int, n: int) -> np.ndarray:
    """Per pair, True when the real turn is shown as Candidate 1: a fair coin from the seed and the index."""
    return np.array([derive_seed(seed, SETTING, "order", i) & 1 == 1 for i in range(n)], dtype=bool)


# ----------------------------------------------------------------------------- result


@dataclass
class PositionBias:
    """How much the judge prefers a position (see the module docstring)."""

    first_share: float  # among answered pairs, the share where the judge picked Candidate 1 (0.5 = none)
    ci_low: float  # union of the exact binomial and the cluster-robust (by user) 95% intervals
    ci_high: float
    p_value: float  # exact two-sided binomial test of first_share = 0.5 (independent by design)
    n_answered: int  # pairs whose answer named a candidate
    accuracy_real_first: float  # accuracy on the pairs that showed the real turn as Candidate 1
    accuracy_real_second: float  # ... as Candidate 2
    n_real_first: int
    n_real_second: int

    @property
    def biased(self) -> bool:
        return bool(self.p_value < ALPHA)

    def to_dict(self) -> dict[str, Any]:
        r = lambda x: round(float(x), 4)  # noqa: E731
        return {"position_first_share": r(self.first_share), "position_ci_low": r(self.ci_low),
                "position_ci_high": r(self.ci_high), "position_p_value": r(self.p_value),
                "position_biased": self.biased, "n_answered": self.n_answered,
                "accuracy_real_first": r(self.accuracy_real_first),
                "accuracy_real_second": r(self.accuracy_real_second),
                "n_real_first": self.n_real_first, "n_real_second": self.n_real_second}


@dataclass
class LLMPairedResult:
    """The paired result of the llm judge; ``to_dict`` has the keys of ``PairedResult.to_dict`` and more."""

    judge: str
    description: str
    model: str
    inference: Inference
    n_pairs: int
    n_users: int
    n_unparsed: int  # answers that named neither candidate (scored 1/2)
    n_failed: int  # requests that failed after retries (scored 1/2)
    position: PositionBias
    scores: np.ndarray = field(repr=False)  # per pair: 1 real picked, 0 other picked, 1/2 unparsed or failed
    real_first: np.ndarray = field(repr=False)  # per pair: the real turn was Candidate 1
    choices: list[int | None] = field(repr=False)  # per pair: 1, 2 or None
    answers: list[str] = field(repr=False)  # per pair: the raw answer ("" where the request failed)

    def to_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, **self.inference.to_dict(), "n_pairs": self.n_pairs, "n_users": self.n_users,
                "n_unparsed": self.n_unparsed, "n_failed": self.n_failed, **self.position.to_dict(),
                "judge_model": self.model}


def position_bias(choices: Sequence[int | None], real_first: np.ndarray, scores: np.ndarray,
                  users: Sequence[str]) -> PositionBias:
    answered = np.array([c is not None for c in choices], dtype=bool)
    picked_first = np.array([c == 1 for c in choices], dtype=float)[answered]
    m, k = int(answered.sum()), int(picked_first.sum())
    nan = float("nan")
    if m:
        test = binomtest(k, m, 0.5)
        exact = test.proportion_ci(confidence_level=1 - ALPHA, method="exact")
        cluster = cluster_robust_interval(picked_first, [u for u, a in zip(users, answered) if a])
        lo, hi = exact.low, exact.high
        if all(np.isfinite(cluster)):
            lo, hi = min(lo, cluster[0]), max(hi, cluster[1])
        share, p, lo, hi = k / m, float(test.pvalue), max(0.0, lo), min(1.0, hi)
    else:
        share = p = lo = hi = nan
    first, second = scores[real_first], scores[~real_first]
    return PositionBias(share, lo, hi, p, m, float(first.mean()) if first.size else nan,
                        float(second.mean()) if second.size else nan, int(first.size), int(second.size))


def sign_flip_null(scores: np.ndarray, users: Sequence[str], n_permutations: int, seed: int) -> np.ndarray:
    """Null accuracies: ``0.5 + mean(e_u * (s - 0.5))`` with a fair sign ``e_u`` per user (module docstring)."""
    distinct = sorted(set(users))
    index = {u: j for j, u in enumerate(distinct)}
    per_user = np.bincount([index[u] for u in users], weights=scores - CHANCE, minlength=len(distinct))
    signs = np.random.default_rng(derive_seed(seed, SETTING, "null")).choice([-1.0, 1.0],
                                                                              size=(n_permutations, len(distinct)))
    return CHANCE + signs @ per_user / len(scores)


# ----------------------------------------------------------------------------- entry point


def llm_paired_discrimination(cfg: LLMJudgeConfig, real: Sequence[str], candidate: Sequence[str],
                              contexts: Sequence[Context], users: Sequence[str], *, seed: int = 0,
                              n_permutations: int = 2000, post: Post | None = None,
                              candidate_contexts: Sequence[Context] | None = None,
                              show_progress: bool = False) -> LLMPairedResult:
    """Paired accuracy of the llm judge on (real, candidate) pairs, with its exact sign-flip null.

    Both sides of a pair answer ``contexts`` (the usual case); ``candidate_contexts`` gives the
    candidate side its own conversation, shown before it (e.g. a calibration pairing two humans' turns,
    each from its own conversation), as in usersim.eval.paired.paired_discrimination. ``post`` replaces
    the HTTP call (default: usersim.openai_http.post_json); it signals a failed request
    by raising EndpointError. Pairs whose sides are empty or cut should be left out by the caller
    (usersim.eval.paired.complete_pairs), as for the other judges.
    """
    check_config(cfg)
    n = len(real)
    cand_ctx = None if candidate_contexts is None else list(candidate_contexts)
    if not (n == len(candidate) == len(contexts) == len(users)) or (cand_ctx is not None and len(cand_ctx) != n):
        raise ValueError(f"paired inputs differ in length: {n} real, {len(candidate)} candidate, "
                         f"{len(contexts)} contexts, {len(users)} users"
                         + ("" if cand_ctx is None else f", {len(cand_ctx)} candidate contexts"))
    users = [str(u) for u in users]
    n_users = len(set(users))
    if n < 4 or n_users < 2:
        raise ValueError(f"paired discrimination needs >= 4 pairs from >= 2 users (got {n} pairs, {n_users} users)")
    key = api_key(cfg.api_key_env, f"{SETTING}.api_key_env")
    call = post if post is not None else openai_http.post_json
    url = chat_completions_url(cfg.endpoint)
    shown = public_url(url)
    real_first = order_coins(seed, n)
    print(f"[eval] llm judge: {n} pairs to {shown} (model {cfg.endpoint_model!r}"
          f"{', key from $' + cfg.api_key_env if cfg.api_key_env else ', no key'})", flush=True)

    def ask(i: int) -> str:
        sides = [(real[i], contexts[i]), (candidate[i], contexts[i] if cand_ctx is None else cand_ctx[i])]
        (first, ctx1), (second, ctx2) = sides if real_first[i] else sides[::-1]
        body = {"model": cfg.endpoint_model, "messages": judge_messages(cfg, first, second, ctx1,
                                                                         None if cand_ctx is None else ctx2),
                "max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "seed": pair_seed(seed, i)}
        return redact(answer_text(call(url, body, key, cfg.timeout_s)), key)

    answers: list[str] = [""] * n
    failed: dict[int, str] = {}
    try:  # the first request alone: a dead endpoint, a wrong key or model fails here, not after n requests
        answers[0] = ask(0)
    except EndpointError as err:
        raise EndpointError(f"{SETTING}: the first request to {shown} failed, so the other {n - 1} were not sent: "
                            f"{redact(str(err), key)}") from None
    with ThreadPoolExecutor(max_workers=min(cfg.concurrency, n - 1)) as pool:
        pending = {pool.submit(ask, i): i for i in range(1, n)}
        progress = _progress(n, show_progress)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                try:
                    answers[i] = fut.result()
                except EndpointError as err:
                    failed[i] = redact(str(err), key)
                progress(1)
            if len(failed) > n / 2:
                for fut in pending:
                    fut.cancel()
                first_problem = failed[min(failed)]
                raise EndpointError(f"{SETTING}: {len(failed)} of {n} requests to {shown} failed after retries "
                                    f"(more than half; stopped): {first_problem}")
        progress(0, close=True)

    choices = [None if i in failed else parse_choice(a) for i, a in enumerate(answers)]
    scores = np.array([CHANCE if c is None else float((c == 1) == bool(rf)) for c, rf in zip(choices, real_first)])
    n_failed = len(failed)
    n_unparsed = sum(c is None for c in choices) - n_failed
    if n_unparsed > n / 2:
        print(f"[eval] llm judge: {n_unparsed} of {n} answers named neither candidate (scored 1/2); "
              f"e.g. {answers[next(i for i, c in enumerate(choices) if c is None and i not in failed)][:80]!r}",
              file=sys.stderr, flush=True)
    null = sign_flip_null(scores, users, n_permutations, seed)
    inference = permutation_inference(float(scores.mean()), null, cluster_ci=cluster_robust_interval(scores, users))
    return LLMPairedResult(NAME, describe(cfg), cfg.endpoint_model, inference, n, n_users, n_unparsed, n_failed,
                           position_bias(choices, real_first, scores, users), scores, real_first, choices, answers)


def _progress(total: int, show: bool) -> Callable[..., None]:
    if not show:
        return lambda k, close=False: None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=1, desc="paired (llm judge)", unit="pair")

    def step(k: int, close: bool = False) -> None:
        bar.update(k)
        if close:
            bar.close()

    return step
