"""usersim.users: one interface for every simulated user; the backends by name; the completions backend.

The completions backend is checked here against a server on 127.0.0.1 that runs the tiny trained
simulator itself (so its echo log-probabilities are the model's): the request carries the training
prompt's token ids, the stop markers and the row seed, and the explicit end decision reads the same
log P(end) as the local engine. tests/test_completions_server.py runs it against a real
OpenAI-compatible server (llama-cpp-python) where that package is installed.
"""

from __future__ import annotations

import math

import pytest
import torch
from local_chat_server import LocalChatServer, no_proxy_for_localhost

from usersim.completions import CompletionsConfig, CompletionsUser
from usersim.data_prep.prompt_format import Condition, end_of_conversation_ids
from usersim.prompted import PromptedConfig, PromptedUser, generate_prompted_turns
from usersim.simulator import DEFAULT_GENERATION, SimulatorTurn, UserSimulator, derive_seed, row_seeds
from usersim.users import USER_BACKENDS, BaseUser, SimulatedUser, load_user, parse_user_spec

HISTORIES = [[], [{"role": "assistant", "text": "Hi! How can I help?"}],
             [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "Hello, what do you need?"}]]
CONDITIONS = [Condition(goal="plan a hike"), None, Condition(style={"length": "short"})]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    no_proxy_for_localhost(monkeypatch)


def test_backend_names_parse_and_bad_names_are_clear():
    assert parse_user_spec("prompted") == ("prompted", "")
    assert parse_user_spec("completions:http://h:8000/v1") == ("completions", "http://h:8000/v1")
    with pytest.raises(ValueError, match="unknown user backend 'gpt'.*simulator, base, prompted"):
        parse_user_spec("gpt")
    with pytest.raises(ValueError, match="needs the server's base URL"):
        parse_user_spec("completions")
    with pytest.raises(ValueError, match="takes its model from run_dir"):
        parse_user_spec("simulator:runs/x")
    with pytest.raises(ValueError, match="needs run_dir"):
        load_user("base")
    assert set(USER_BACKENDS) == {"simulator", "base", "prompted", "prompted-endpoint", "completions"}


def test_seeds_mean_the_same_in_every_backend():
    assert row_seeds(5, 3) == [derive_seed(5, i) for i in range(3)]
    assert row_seeds([1, 2], 2) == [1, 2]
    with pytest.raises(ValueError, match="3 rows but 2 seeds"):
        row_seeds([1, 2], 3)


def test_simulator_and_base_are_one_model_behind_one_interface(tiny_sim):
    sim = load_user("simulator", simulator=tiny_sim)
    base = load_user("base", simulator=tiny_sim)
    assert sim is tiny_sim and isinstance(base, BaseUser)
    assert isinstance(sim, SimulatedUser) and isinstance(base, SimulatedUser)
    got = base.respond_batch(HISTORIES, CONDITIONS, seed=3, max_new_tokens=8)
    with tiny_sim.adapter_disabled():
        want = tiny_sim.respond_batch(HISTORIES, CONDITIONS, seed=3, max_new_tokens=8,
                                      **{k: DEFAULT_GENERATION[k] for k in ("temperature", "top_p", "end_bias")})
    assert got == want and all(isinstance(t, SimulatorTurn) for t in got)
    # the adapter is back on after the call: the simulator's own turns differ from the base's
    logits = {}
    for name, ctx in (("on", None), ("off", tiny_sim.adapter_disabled())):
        ids = torch.tensor([tiny_sim.prompt_ids(HISTORIES[1])])
        if ctx is None:
            logits[name] = tiny_sim.model(input_ids=ids).logits[0, -1]
        else:
            with ctx:
                logits[name] = tiny_sim.model(input_ids=ids).logits[0, -1]
    assert not torch.allclose(logits["on"], logits["off"])


# ----------------------------------------------------------------------------- the prompted user


@pytest.fixture(scope="module")
def tiny_chat_dir(tmp_path_factory):
    from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

    tok = train_tiny_tokenizer(["hello there, how are you?", "plan a hike", "<|system|> <|user|> <|assistant|>"] * 5,
                               vocab_size=300)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    out = tmp_path_factory.mktemp("chat") / "tiny-chat"
    build_tiny_model(tok, hidden_size=32, seed=1, initializer_range=0.5).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return str(out)


def test_prompted_user_is_the_eval_system_behind_the_interface(tiny_chat_dir):
    user = load_user(f"prompted:{tiny_chat_dir}", device="cpu")
    assert isinstance(user, PromptedUser) and isinstance(user, SimulatedUser)
    turns = user.respond_batch(HISTORIES, CONDITIONS, seed=[11, 12, 13], max_new_tokens=6)
    cfg = PromptedConfig(model=tiny_chat_dir, max_new_tokens=6)
    items = [{"id": f"i{k}", "history": h, "condition": c or Condition()} for k, (h, c) in
             enumerate(zip(HISTORIES, CONDITIONS))]
    assert turns == PromptedUser(cfg, device="cpu").respond_items(items, [11, 12, 13])
    # eval's entry point is the same backend with item-derived seeds
    assert generate_prompted_turns(cfg, items, seed=0, device="cpu", show_progress=False) == \
        user.respond_items(items, [derive_seed(0, "prompted", it["id"]) for it in items], max_new_tokens=6)
    assert user.respond_batch(HISTORIES, CONDITIONS, seed=[11, 12, 13], max_new_tokens=6, do_sample=False) == \
        user.respond_batch(HISTORIES, CONDITIONS, seed=[1, 2, 3], max_new_tokens=6, do_sample=False)
    with pytest.raises(ValueError, match="end_bias"):
        user.respond_batch(HISTORIES, seed=0, end_bias=0.5)
    with pytest.raises(ValueError, match="repetition_penalty"):
        user.respond_batch(HISTORIES, seed=0, repetition_penalty=1.2)


# ----------------------------------------------------------------------------- the completions backend


class ModelServer(LocalChatServer):
    """``/v1/completions`` answered by the tiny simulator's own model (token-id prompts, echo logprobs)."""

    def __init__(self, sim: UserSimulator, write: str = "ok then"):
        self.sim = sim
        super().__init__(self._answer)
        self.write = write

    def _answer(self, body: dict, n: int) -> tuple[int, dict]:
        ids = body["prompt"]
        assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
        usage = {"prompt_tokens": len(ids), "completion_tokens": 3}
        if body.get("echo"):
            with torch.inference_mode():
                logp = torch.log_softmax(self.sim.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            values = [None] + [float(logp[k - 1, ids[k]]) for k in range(1, len(ids))] + [-1.0]
            return 200, {"choices": [{"text": "", "finish_reason": "length", "logprobs": {"token_logprobs": values}}],
                         "usage": {**usage, "completion_tokens": 1}}
        return 200, {"choices": [{"text": self.write, "finish_reason": "stop"}], "usage": usage}


def test_completions_backend_sends_the_training_prompt_and_reads_turns(tiny_sim):
    with ModelServer(tiny_sim) as server:
        user = CompletionsUser(CompletionsConfig(endpoint=server.url, model="usersim"), tiny_sim.tokenizer,
                               max_prompt_tokens=tiny_sim.max_prompt_tokens)
        turns = user.respond_batch(HISTORIES, CONDITIONS, seed=7, max_new_tokens=9)
    assert [t.text for t in turns] == ["ok then"] * 3 and not any(t.ends_conversation or t.hit_cap for t in turns)
    bodies = [r["body"] for r in server.requests]
    want = zip(row_seeds(7, 3), (tiny_sim.prompt_ids(h, c) for h, c in zip(HISTORIES, CONDITIONS)))
    assert sorted((b["seed"], b["prompt"]) for b in bodies) == sorted((s % 2**31, p) for s, p in want)
    assert all(b["max_tokens"] == 9 and b["model"] == "usersim" and b["stop"] == ["\nUser: ", "\nAssistant: "]
               and b["temperature"] == 1.0 and b["top_p"] == 0.95 for b in bodies)
    assert all(r["path"] == "/v1/completions" for r in server.requests)


def test_completions_end_marker_and_cap_map_like_the_local_backend(tiny_sim):
    for text, reason, want in (("[END OF CONVERSATION]", "stop", SimulatorTurn("", True, 3)),
                               ("sure thing [END OF CONVERSATION]", "stop", SimulatorTurn("sure thing", False, 3)),
                               ("and then I", "length", SimulatorTurn("and then I", False, 3, hit_cap=True))):
        with LocalChatServer(lambda body, n: (200, {"choices": [{"text": text, "finish_reason": reason}],
                                                    "usage": {"completion_tokens": 3}})) as server:
            user = CompletionsUser(CompletionsConfig(endpoint=server.url, model="m"), tiny_sim.tokenizer,
                                   max_prompt_tokens=64)
            assert user.respond_batch(HISTORIES[:1], seed=0) == [want]


def test_completions_end_decision_reads_the_local_engines_end_probability(tiny_sim):
    local = tiny_sim.respond_batch(HISTORIES, CONDITIONS, seed=5, max_new_tokens=4, end_bias=0.0)
    with ModelServer(tiny_sim) as server:
        user = CompletionsUser(CompletionsConfig(endpoint=server.url, model="m"), tiny_sim.tokenizer,
                               max_prompt_tokens=tiny_sim.max_prompt_tokens)
        remote = [user.end_logprob(tiny_sim.prompt_ids(h, c)) for h, c in zip(HISTORIES, CONDITIONS)]
        # a bias that makes every row end: no sampling request is sent
        ends = user.respond_batch(HISTORIES, CONDITIONS, seed=5, end_bias=60.0)
        echo_requests = [r for r in server.requests if r["body"].get("echo")]
    for lp_local, lp_remote in zip((t.end_logprob for t in local), remote):
        assert math.isclose(lp_local, lp_remote, abs_tol=1e-3)
    assert all(t.ends_conversation for t in ends) and len(server.requests) == len(echo_requests)
    assert echo_requests[0]["body"]["prompt"][-len(end_of_conversation_ids(tiny_sim.tokenizer)):] == \
        list(end_of_conversation_ids(tiny_sim.tokenizer))


def test_completions_end_decision_needs_prompt_logprobs(tiny_sim):
    from usersim.openai_http import EndpointError

    with LocalChatServer(lambda body, n: (200, {"choices": [{"text": "", "finish_reason": "length"}]})) as server:
        user = CompletionsUser(CompletionsConfig(endpoint=server.url, model="m"), tiny_sim.tokenizer,
                               max_prompt_tokens=64)
        with pytest.raises(EndpointError, match="end_bias=None"):
            user.respond_batch(HISTORIES[:1], seed=0, end_bias=0.0)
