"""The completions backend against a real OpenAI-compatible server: ``transformers serve`` on the packaged Gemma.

``transformers serve`` (transformers' own FastAPI server, the ``serve`` extra: fastapi, uvicorn, openai)
runs on these CPUs without compiling anything, so CI runs this test. It serves the *base* Gemma-3-270M
(the dequantised packaged GGUF, the checkpoint every train run starts from) and takes text prompts only
(``prompt_as: text``) without ``echo``/``logprobs``, so the explicit end decision is not exercised here
(tests/test_users.py checks it against a server that runs the tiny simulator). Checked: the simulator's
prompt is accepted, greedy turns equal the same model run locally by our engine on the tokens the server
read, turns come back cleaned (no role markers), a row's seed reproduces it, and a turn cut by the cap is marked ``hit_cap`` as locally.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="transformers serve needs the serve extra (pip install -e '.[serve]')")
pytest.importorskip("uvicorn", reason="transformers serve needs the serve extra (pip install -e '.[serve]')")
pytest.importorskip("openai", reason="transformers serve needs the serve extra (pip install -e '.[serve]')")

from usersim.completions import CompletionsConfig, CompletionsUser  # noqa: E402
from usersim.data_prep.prompt_format import ASSISTANT_MARKER, USER_MARKER, Condition  # noqa: E402
from server_process import free_port, serving  # noqa: E402

HISTORIES = [[{"role": "assistant", "text": "Hi! How can I help you today?"}],
             [{"role": "user", "text": "hey"}, {"role": "assistant", "text": "Hello! What are you up to this weekend?"}]]
CONDITIONS = [Condition(goal="plan a weekend hike"), Condition(style={"length": "short"})]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from usersim.train.base_model import convert_packaged_gguf
    from usersim.train.config import TrainConfig

    converted = convert_packaged_gguf(TrainConfig())
    # transformers serve samples only where the served checkpoint's generation_config says do_sample (a
    # request's temperature alone does not turn sampling on there): serve a view of the checkpoint that does
    work = tmp_path_factory.mktemp("serve")
    checkpoint = work / "gemma"
    checkpoint.mkdir()
    for f in converted.iterdir():
        if f.name != "generation_config.json":
            (checkpoint / f.name).symlink_to(f)
    gen_config = json.loads((converted / "generation_config.json").read_text())
    (checkpoint / "generation_config.json").write_text(json.dumps({**gen_config, "do_sample": True}))
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "transformers"), "serve", str(checkpoint), "--device", "cpu",
           "--dtype", "float32", "--host", "127.0.0.1", "--port", str(port)]
    with serving(cmd, port, work / "server.log") as url:
        yield url, checkpoint


@pytest.fixture(scope="module")
def local(served):
    from usersim.simulator import UserSimulator

    return UserSimulator.from_base(str(served[1]), device="cpu")


@pytest.fixture(scope="module")
def user(served, local):
    url, checkpoint = served
    return CompletionsUser(CompletionsConfig(endpoint=url, model=str(checkpoint), prompt_as="text", concurrency=1),
                           local.tokenizer, max_prompt_tokens=512)


def test_greedy_turns_equal_the_local_engine_on_the_tokens_the_server_read(user, local):
    gen = dict(do_sample=False, max_new_tokens=16, end_bias=None)
    remote = user.respond_batch(HISTORIES, CONDITIONS, seed=0, **gen)
    for history, condition, turn in zip(HISTORIES, CONDITIONS, remote):
        prompt = local.prompt_ids(history, condition)
        # what the server read: the text prompt through the tokenizer, BOS added by the tokenizer itself
        text = user._body(prompt)["prompt"]
        read = local.tokenizer(text).input_ids
        assert read[0] == local.tokenizer.bos_token_id and read.count(local.tokenizer.bos_token_id) == 1
        mine = local.generate_from_prompt_ids([read], seeds=[0], do_sample=False, max_new_tokens=16)[0]
        assert turn.text == mine.text and turn.text.strip()
        assert not turn.ends_conversation
        assert USER_MARKER.strip() not in turn.text and ASSISTANT_MARKER.strip() not in turn.text


def test_a_rows_seed_reproduces_it_and_the_cap_leaves_the_turn_open(user):
    gen = dict(do_sample=True, temperature=1.0, top_p=0.95, max_new_tokens=8, end_bias=None)
    first = user.respond_batch(HISTORIES, CONDITIONS, seed=[11, 12], **gen)
    again = user.respond_batch(HISTORIES, CONDITIONS, seed=[11, 12], **gen)
    assert [t.text for t in first] == [t.text for t in again]
    other = user.respond_batch(HISTORIES * 3, CONDITIONS * 3, seed=[21, 22, 23, 24, 25, 26], **gen)
    assert {t.text for t in other} - {t.text for t in first}, "other seeds drew the very same turns"
    capped = [t for t in first + other if t.tokens >= 8 and t.text]
    assert capped and all(t.hit_cap and not t.ends_conversation for t in capped)

