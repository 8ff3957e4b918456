"""usersim.eval.llm_judge: the paired test with an LLM judge behind an OpenAI-compatible endpoint.

Real chitchat humans (tests/real_turns.py) and a real HTTP server on 127.0.0.1 whose "judge" is a rule
we wrote, so every answer is known: a planted tell is caught, two samples of the same humans are not told
apart, a judge that always says "1" sits at chance and is reported as position-biased, garbage answers and
failed requests score 1/2 and are counted, and the key never leaks.
"""

import json
import random
import re
import traceback
from local_chat_server import LocalChatServer, chat_payload, no_proxy_for_localhost

import numpy as np
import pytest

from usersim import openai_http, prompted
from usersim.eval.judges import Context
from usersim.eval.llm_judge import (CUT_MARK, NO_CONVERSATION, LLMJudgeConfig, clip, judge_messages,
                                    llm_paired_discrimination, order_coins, pair_seed, parse_choice)
from usersim.eval.paired import PairedResult
from usersim.eval.permutation import Inference
from usersim.prompted import EndpointError

SECRET = "sk-test-llm-judge-do-not-leak-7c1e"
CANDIDATE = re.compile(r"Candidate ([12]):\n<<<\n(.*?)\n>>>", re.S)


# ----------------------------------------------------------------------------- a judge server on 127.0.0.1


class JudgeServer(LocalChatServer):
    """A judge behind a chat-completions server. ``decide(body, first, second)`` returns the answer text, or
    ``(status, text)`` for an error status; ``first``/``second`` are the candidates as shown."""

    def __init__(self, decide):
        def respond(body, n):
            shown = dict(CANDIDATE.findall(body["messages"][-1]["content"]))
            out = decide(body, shown["1"], shown["2"])
            status, text = out if isinstance(out, tuple) else (200, out)
            if status != 200:  # a real API may quote (part of) the key back
                return status, {"error": {"message": f"Incorrect API key provided: {SECRET}"}}
            return 200, chat_payload(body["model"], text)

        super().__init__(respond)

    def config(self, **kw) -> LLMJudgeConfig:
        return LLMJudgeConfig(endpoint=self.url, endpoint_model="judge-test", **{"concurrency": 4, **kw})


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch):
    no_proxy_for_localhost(monkeypatch)
    monkeypatch.setattr(openai_http, "RETRY_WAITS_S", (0.0, 0.0))


def upper_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(c.isupper() for c in letters) / len(letters) if letters else 0.0


def caps_judge(body, first, second):
    """Knows the tell: the simulated side shouts. The candidate with fewer capitals is the real one."""
    return "2" if upper_share(second) < upper_share(first) else "1"


def longer_judge(body, first, second):
    """Decides by a text property that says nothing under the null: the longer one is real."""
    return "Candidate 1" if len(first) > len(second) else "Candidate 2."


# ----------------------------------------------------------------------------- real humans


def real_groups(n_users: int, per_user: int, seed: int):
    """Two disjoint groups of real chitchat users, each user with ``2 * per_user`` (turn, context) rows."""
    from real_turns import chitchat_user_turns

    by_user = chitchat_user_turns()
    rng = random.Random(seed)
    users = rng.sample(sorted(u for u, ts in by_user.items() if len(ts) >= 2 * per_user), 2 * n_users)
    rows = {u: rng.sample(by_user[u], 2 * per_user) for u in users}
    return users[:n_users], users[n_users:], rows


def planted_pairs(n_users=20, per_user=3, seed=0):
    """Real turns vs *other* turns of the same users in ALL CAPS, each answering the real turn's context."""
    a, _, rows = real_groups(n_users, per_user, seed)
    real = [t for u in a for t, _ in rows[u][:per_user]]
    ctx = [c for u in a for _, c in rows[u][:per_user]]
    fake = [t.upper() for u in a for t, _ in rows[u][per_user:]]
    return real, fake, ctx, [u for u in a for _ in range(per_user)]


def null_pairs(n_users=20, per_user=3, seed=0):
    """Turns of group A vs turns of group B (other humans), each side in its own conversation."""
    a, b, rows = real_groups(n_users, per_user, seed)
    real = [t for u in a for t, _ in rows[u][:per_user]]
    ctx = [c for u in a for _, c in rows[u][:per_user]]
    other = [t for u in b for t, _ in rows[u][:per_user]]
    other_ctx = [c for u in b for _, c in rows[u][:per_user]]
    return real, other, ctx, other_ctx, [u for u in a for _ in range(per_user)]


# ----------------------------------------------------------------------------- prompt and parsing


def test_parse_choice_takes_the_first_standalone_1_or_2():
    for answer, want in [("1", 1), (" 2.\n", 2), ("Candidate 2", 2), ("**1**", 1), ("2 - the other sounds scripted", 2),
                         ("<think>1 is long, 2 is short</think>\n2", 2), ("<think>cut off while comparing 1 and", None),
                         ("12", None), ("1.5", None), ("0.2", None), ("neither", None), ("", None), (None, None)]:
        assert parse_choice(answer) == want, answer


def test_messages_show_recent_history_clipped_and_both_candidates():
    history = tuple(("user" if k % 2 == 0 else "assistant", f"turn {k} " + "x" * (300 if k == 5 else 5))
                    for k in range(6))
    cfg = LLMJudgeConfig(endpoint="http://x/v1", endpoint_model="m", max_history_turns=3, max_chars_per_turn=100)
    msgs = judge_messages(cfg, "first one", "second one", Context(previous=history[-1][1], history=history))
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[0]["content"] == cfg.system_prompt
    text = msgs[1]["content"]
    assert "turn 2" not in text and "Assistant: turn 3" in text and "User: turn 4" in text  # the 3 most recent
    assert CUT_MARK in text and text.index("turn 3") < text.index("turn 4") < text.index("turn 5")
    assert dict(CANDIDATE.findall(text)) == {"1": "first one", "2": "second one"}
    assert text.rstrip().endswith(cfg.question)
    # no history: the user's own last turn then the other side's; nothing at all says so
    fallback = judge_messages(cfg, "a", "b", Context(previous="how was it?", own_previous="i went hiking"))[1]
    assert "User: i went hiking\nAssistant: how was it?" in fallback["content"]
    assert NO_CONVERSATION in judge_messages(cfg, "a", "b", Context())[1]["content"]
    # each candidate in its own conversation
    own = judge_messages(cfg, "a", "b", Context(previous="P1"), Context(previous="P2"))[1]["content"]
    assert own.index("P1") < own.index("Candidate 1:\n<<<") < own.index("P2") < own.index("Candidate 2:\n<<<")
    assert clip("abcdefghij" * 50, 40).startswith("abcdefghij") and len(clip("y" * 500, 40)) <= 40


def test_config_and_inputs_are_checked_before_any_request():
    with pytest.raises(ValueError, match="llm judge is off"):
        llm_paired_discrimination(LLMJudgeConfig(), ["a"] * 4, ["b"] * 4, [Context()] * 4, list("abab"))
    with pytest.raises(ValueError, match="endpoint_model is empty"):
        llm_paired_discrimination(LLMJudgeConfig(endpoint="http://127.0.0.1:9"), ["a"] * 4, ["b"] * 4,
                                  [Context()] * 4, list("abab"))
    cfg = LLMJudgeConfig(endpoint="http://127.0.0.1:9", endpoint_model="m")
    with pytest.raises(ValueError, match="differ in length"):
        llm_paired_discrimination(cfg, ["a"] * 4, ["b"] * 3, [Context()] * 4, list("abab"))
    with pytest.raises(ValueError, match=">= 2 users"):
        llm_paired_discrimination(cfg, ["a"] * 4, ["b"] * 4, [Context()] * 4, list("aaaa"))


# ----------------------------------------------------------------------------- known answers


def test_planted_tell_is_caught_and_requests_are_what_the_config_says():
    real, fake, ctx, users = planted_pairs()
    with JudgeServer(caps_judge) as server:
        res = llm_paired_discrimination(server.config(max_tokens=5), real, fake, ctx, users, seed=0,
                                        n_permutations=2000)
    inf, n = res.inference, len(real)
    assert res.n_pairs == n == len(server.requests) and res.n_users == 20
    assert inf.accuracy > 0.9 and inf.p_value < 0.01 and inf.ci_low > 0.5, res.to_dict()
    assert res.n_unparsed == res.n_failed == 0
    # the rule is symmetric in position: no bias reported, the accuracy alike in both orders
    assert not res.position.biased and abs(res.position.first_share - 0.5) < 0.2
    assert min(res.position.accuracy_real_first, res.position.accuracy_real_second) > 0.85
    by_seed = {r["body"]["seed"]: r for r in server.requests}
    for i in range(n):
        r = by_seed[pair_seed(0, i)]
        assert r["path"] == "/v1/chat/completions" and r["auth"] is None
        body = r["body"]
        assert body["model"] == "judge-test" and body["temperature"] == 0 and body["max_tokens"] == 5
        shown = dict(CANDIDATE.findall(body["messages"][-1]["content"]))
        assert shown["1" if res.real_first[i] else "2"] == clip(real[i], 2000)  # the coin put the real turn there


def test_same_humans_are_not_told_apart():
    """Null: a turn of another group of the same population, each in its own conversation; the judge's
    rule (length) is a real property of the texts, uninformative under the null."""
    real, other, ctx, other_ctx, users = null_pairs(seed=0)
    with JudgeServer(longer_judge) as server:
        res = llm_paired_discrimination(server.config(), real, other, ctx, users, seed=0, n_permutations=2000,
                                        candidate_contexts=other_ctx)
        assert res.n_unparsed == 0 and res.inference.p_value > 0.05 and res.inference.ci_low <= 0.5 <= \
            res.inference.ci_high, res.to_dict()
        own = server.requests[0]["body"]["messages"][-1]["content"]
        assert "Conversation before Candidate 2" in own
        rejected = []
        for s in range(1, 9):  # fresh samples of humans and fresh orders: rejections stay rare
            real, other, ctx, other_ctx, users = null_pairs(seed=s)
            r = llm_paired_discrimination(server.config(), real, other, ctx, users, seed=s, n_permutations=1000,
                                          candidate_contexts=other_ctx)
            rejected.append(r.inference.p_value < 0.05)
    assert sum(rejected) <= 2, rejected


def test_a_judge_that_always_says_1_is_at_chance_and_reported_as_position_biased():
    real, fake, ctx, users = planted_pairs()
    with JudgeServer(lambda body, a, b: "1") as server:
        res = llm_paired_discrimination(server.config(), real, fake, ctx, users, seed=0)
    inf, pos = res.inference, res.position
    assert inf.ci_low <= 0.5 <= inf.ci_high and inf.p_value > 0.05, res.to_dict()
    assert inf.accuracy == pytest.approx(res.real_first.mean())  # right exactly when the real turn came first
    assert pos.first_share == 1.0 and pos.biased and pos.p_value < 1e-6 and pos.n_answered == len(real)
    assert pos.ci_low > 0.9 and pos.ci_high == 1.0
    assert pos.accuracy_real_first == 1.0 and pos.accuracy_real_second == 0.0
    assert pos.n_real_first + pos.n_real_second == len(real)
    d = res.to_dict()
    assert d["position_biased"] is True and d["position_first_share"] == 1.0


def test_a_position_biased_judge_that_can_tell_is_still_measured_fairly():
    """Half the time (by a property of the texts, not of the order) the judge just says "1"; otherwise it
    uses the tell. Expected accuracy 1/2 * 1 + 1/2 * 1/2 = 0.75 whatever the order."""
    real, fake, ctx, users = planted_pairs(n_users=30)
    lazy = lambda body, a, b: "1" if (len(a) + len(b)) % 2 else caps_judge(body, a, b)  # noqa: E731
    with JudgeServer(lazy) as server:
        res = llm_paired_discrimination(server.config(), real, fake, ctx, users, seed=0)
    assert 0.62 < res.inference.accuracy < 0.88 and res.inference.p_value < 0.01, res.to_dict()
    assert res.position.biased and res.position.first_share > 0.6
    assert res.position.accuracy_real_first > 0.9 > 0.7 > res.position.accuracy_real_second


def test_garbage_answers_count_as_unparsed_and_score_one_half():
    real, fake, ctx, users = planted_pairs()
    garbled = {i for i in range(len(real)) if i % 3 == 1}
    index_of = {pair_seed(0, i): i for i in range(len(real))}

    def sometimes_garbage(body, a, b):
        return "I cannot tell." if index_of[body["seed"]] in garbled else caps_judge(body, a, b)

    with JudgeServer(sometimes_garbage) as server:
        res = llm_paired_discrimination(server.config(), real, fake, ctx, users, seed=0)
    assert res.n_unparsed == len(garbled) and res.n_failed == 0
    assert all(res.scores[i] == 0.5 and res.choices[i] is None for i in garbled)
    assert res.position.n_answered == len(real) - len(garbled)
    with JudgeServer(lambda body, a, b: "Both look human to me.") as server:
        res = llm_paired_discrimination(server.config(), real, fake, ctx, users, seed=0)
    assert res.n_unparsed == len(real) and np.all(res.scores == 0.5)
    assert res.inference.accuracy == 0.5 and res.inference.p_value == 1.0
    assert res.position.n_answered == 0 and np.isnan(res.position.first_share)


def test_failed_requests_score_one_half_and_too_many_failures_raise():
    real, fake, ctx, users = planted_pairs()
    n = len(real)
    index_of = {pair_seed(0, i): i for i in range(n)}
    broken = {i for i in range(1, n) if i % 5 == 2}

    def flaky(body, a, b):
        return (503, "") if index_of[body["seed"]] in broken else caps_judge(body, a, b)

    with JudgeServer(flaky) as server:
        res = llm_paired_discrimination(server.config(), real, fake, ctx, users, seed=0)
    assert res.n_failed == len(broken) and res.n_unparsed == 0
    assert all(res.scores[i] == 0.5 for i in broken)
    assert len(server.requests) == n + 2 * len(broken)  # each failing pair was tried three times
    assert res.inference.accuracy > 0.8 and res.inference.p_value < 0.01

    mostly = lambda body, a, b: (503, "") if index_of[body["seed"]] % 4 else "1"  # noqa: E731
    with JudgeServer(mostly) as server, pytest.raises(EndpointError, match="more than half"):
        llm_paired_discrimination(server.config(), real, fake, ctx, users, seed=0)
    with JudgeServer(lambda body, a, b: (503, "")) as server, pytest.raises(EndpointError, match="first request"):
        llm_paired_discrimination(server.config(), real, fake, ctx, users, seed=0)
    assert len(server.requests) == 3  # only the first pair was sent (and retried)


# ----------------------------------------------------------------------------- the key


def test_key_goes_in_the_header_and_nowhere_else(monkeypatch, capsys):
    monkeypatch.setenv("USERSIM_JUDGE_KEY", SECRET)
    real, fake, ctx, users = planted_pairs(n_users=6)
    with JudgeServer(caps_judge) as server:
        res = llm_paired_discrimination(server.config(api_key_env="USERSIM_JUDGE_KEY"), real, fake, ctx, users)
    assert {r["auth"] for r in server.requests} == {f"Bearer {SECRET}"}
    out = capsys.readouterr()
    for text in (json.dumps(res.to_dict()), repr(res), res.description, out.out, out.err):
        assert SECRET not in text
    assert "USERSIM_JUDGE_KEY" in out.out

    with JudgeServer(lambda body, a, b: (401, "")) as server:
        with pytest.raises(EndpointError) as err:
            llm_paired_discrimination(server.config(api_key_env="USERSIM_JUDGE_KEY"), real, fake, ctx, users)
    assert len(server.requests) == 1  # 401 is not retried, and nothing else is sent
    message = str(err.value)
    assert "HTTP 401" in message and "<redacted>" in message
    chain = "".join(traceback.format_exception(err.value))
    out = capsys.readouterr()
    for text in (message, repr(err.value), chain, out.out, out.err):
        assert SECRET not in text

    monkeypatch.delenv("USERSIM_JUDGE_KEY")
    with pytest.raises(EndpointError, match="llm_judge.api_key_env.*USERSIM_JUDGE_KEY"):
        llm_paired_discrimination(LLMJudgeConfig(endpoint="http://127.0.0.1:9/v1", endpoint_model="m",
                                                 api_key_env="USERSIM_JUDGE_KEY"), real, fake, ctx, users)


# ----------------------------------------------------------------------------- seeds, post, result shape


def test_order_is_seeded_and_the_result_has_the_paired_keys():
    real, fake, ctx, users = planted_pairs()
    n = len(real)
    calls: list[tuple[str, dict]] = []

    def post(url, body, key, timeout_s):  # the injectable HTTP call, here a judge in-process
        calls.append((url, body))
        shown = dict(CANDIDATE.findall(body["messages"][-1]["content"]))
        return {"choices": [{"message": {"content": longer_judge(body, shown["1"], shown["2"])}}]}

    cfg = LLMJudgeConfig(endpoint="http://judge.invalid/v1", endpoint_model="m", concurrency=3)
    a = llm_paired_discrimination(cfg, real, fake, ctx, users, seed=7, n_permutations=500, post=post)
    b = llm_paired_discrimination(cfg, real, fake, ctx, users, seed=7, n_permutations=500, post=post)
    c = llm_paired_discrimination(cfg, real, fake, ctx, users, seed=8, n_permutations=500, post=post)
    assert len(calls) == 3 * n and {u for u, _ in calls} == {"http://judge.invalid/v1/chat/completions"}
    assert np.array_equal(a.real_first, b.real_first) and a.choices == b.choices and a.answers == b.answers
    assert a.to_dict() == b.to_dict()
    assert np.array_equal(a.real_first, order_coins(7, n)) and not np.array_equal(a.real_first, c.real_first)
    assert 0.3 < a.real_first.mean() < 0.7
    assert sorted(body["seed"] for _, body in calls[:n]) == sorted(pair_seed(7, i) for i in range(n))

    d = a.to_dict()
    paired_keys = PairedResult("x", Inference(*[0.5] * 8, 1), 1, 1, np.zeros(1)).to_dict().keys()
    assert set(paired_keys) <= set(d) and d["judge"] == "llm" and d["n_pairs"] == n and d["n_users"] == 20
    assert {"n_unparsed", "n_failed", "position_first_share", "position_ci_low", "position_ci_high",
            "position_p_value", "position_biased", "accuracy_real_first", "accuracy_real_second"} <= set(d)
    assert "m" in a.description and "judge.invalid" in a.description
