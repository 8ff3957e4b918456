"""The simulated user in TRL's environment mode and as an OpenEnv environment: episodes, rewards, one GRPO step each."""

from __future__ import annotations

import pytest

from usersim.data_prep.prompt_format import Condition
from usersim.rl.rewards import combine, resolve_rewards
from usersim.rl.scenarios import Scenario
from usersim.rl.tool_env import (ASSISTANT_OPENS, OPENING, TURNS_USED, USER_LEFT, UserConversation,
                                 environment_factory, tool_dataset)
from usersim.simulator import SimulatorTurn

SCENARIOS = [Scenario(id="dogs", condition=Condition(goal="find a trail", knowledge_discloses=["I have two dogs"])),
             Scenario(id="greet", condition=Condition(goal="say hi"), opener="assistant")]


class ScriptedUser:
    """A simulated user that says the next line of its script (the end marker ends the conversation)."""

    name = "scripted"

    def __init__(self, lines):
        self.lines, self.calls = list(lines), 0

    def respond_batch(self, histories, conditions=None, seed=None, **generation):
        out = []
        for _ in histories:
            line = self.lines[min(self.calls, len(self.lines) - 1)]
            self.calls += 1
            out.append(SimulatorTurn("", True, 1) if line is None else SimulatorTurn(line, False, 3))
        return out


def test_a_tool_conversation_plays_the_episode_and_scores_it():
    user = ScriptedUser(["hi, I need a trail", "I have two dogs", None])
    env = UserConversation(user, SCENARIOS, max_turns=4, rewards={"user_ended": 1.0, "elicited_after_asking": 1.0})
    assert env.reset(scenario="dogs", seed=3) == OPENING + "hi, I need a trail"
    assert env.send_message("Do you have dogs?") == "I have two dogs"
    assert env.send_message("Great, try the river loop.") == USER_LEFT
    assert env.send_message("Bye?") == USER_LEFT and user.calls == 3  # the user is not asked again
    t = env.transcript
    assert t.ended_by_user and [x["role"] for x in t.turns] == ["user", "assistant", "user", "assistant"]
    # user_ended 1 + one of one fact elicited after asking - 0.02 x 2 assistant turns
    assert env.get_reward() == pytest.approx(1.0 + 1.0 - 0.04)
    rewards = resolve_rewards({"user_ended": 1.0, "elicited_after_asking": 1.0})
    assert env.get_reward() == combine({n: f(t, SCENARIOS[0]) for n, (f, _) in rewards.items()}, {n: w for n, (_, w) in rewards.items()})


def test_the_turn_limit_and_an_assistant_opening_are_said_to_the_policy():
    env = environment_factory(ScriptedUser(["sure", "ok"]), SCENARIOS, max_turns=1, rewards={"user_ended": 1.0})()
    assert env.reset(scenario="greet", seed=0) == ASSISTANT_OPENS
    assert env.send_message("Hello!") == "sure\n" + TURNS_USED
    assert env.send_message("Still there?") == TURNS_USED and env.get_reward() == 0.0
    with pytest.raises(KeyError, match="nope"):
        env.reset(scenario="nope")
    rows = tool_dataset(SCENARIOS, n=5, seed=1)
    assert [r["scenario"] for r in rows] == ["dogs", "greet", "dogs", "greet", "dogs"]
    assert rows == tool_dataset(SCENARIOS, n=5, seed=1) and len({r["seed"] for r in rows}) == 5


def test_the_openenv_environment_follows_openenvs_interface():
    pytest.importorskip("openenv")
    from openenv.core.env_server.interfaces import Environment

    from usersim.rl.openenv_env import AssistantMessage, OpenEnvConversation, UserSimOpenEnv

    env = UserSimOpenEnv(ScriptedUser(["hello", "I have two dogs", None]), SCENARIOS, max_turns=3,
                         rewards={"user_ended": 1.0})
    assert isinstance(env, Environment)
    obs = env.reset(seed=1, scenario="dogs")
    assert obs.user_message == "hello" and not obs.done and obs.reward is None and obs.scenario == "dogs"
    obs = env.step(AssistantMessage(message="Any pets?"))
    assert obs.user_message == "I have two dogs" and not obs.done and env.state.step_count == 1
    obs = env.step(AssistantMessage(message="Nice."))
    assert obs.done and obs.ended_by_user and obs.reward == 1.0 and obs.metadata["rewards"] == {"user_ended": 1.0}
    conv = OpenEnvConversation(UserSimOpenEnv(ScriptedUser(["hello", None]), SCENARIOS, rewards={"user_ended": 1.0}))
    assert conv.reset(scenario="dogs", seed=0) == OPENING + "hello"
    assert conv.send_message("hi") == USER_LEFT and conv.get_reward() == 1.0


# ----------------------------------------------------------------------------- one GRPO step in TRL's environment mode


@pytest.fixture(scope="module")
def tool_policy(tmp_path_factory):
    """A tiny random policy whose tokenizer carries TRL's Qwen3 chat template (one TRL parses tool calls from)."""
    pytest.importorskip("trl")
    from trl.chat_template_utils import qwen3_chat_template

    from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

    specials = ["<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
                "<think>", "</think>"]
    tok = train_tiny_tokenizer(["send_message hello there what do you need", "system user assistant tool"] * 10,
                               vocab_size=400)
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = qwen3_chat_template
    model = build_tiny_model(tok, hidden_size=32, seed=2)
    out = tmp_path_factory.mktemp("policy") / "tool-policy"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return str(out)


def _one_grpo_step(policy_dir, factory, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, num_generations=2,
                      max_completion_length=12, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no",
                      max_tool_calling_iterations=2, learning_rate=1e-3, seed=0)
    trainer = GRPOTrainer(model=policy_dir, args=args, train_dataset=Dataset.from_list(tool_dataset(SCENARIOS, n=4)),
                          environment_factory=factory)
    trainer.train()
    return trainer


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_grpo_trains_a_step_against_the_simulator_through_the_send_message_tool(tool_policy, tiny_sim, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    made = []

    def factory():
        made.append(UserConversation(tiny_sim, SCENARIOS, max_turns=2, rewards={"user_ended": 1.0},
                                     generation={"max_new_tokens": 6}))
        return made[-1]

    trainer = _one_grpo_step(tool_policy, factory, tmp_path)
    assert trainer.state.global_step == 1
    assert any(e.transcript is not None for e in made)  # episodes were started with the simulator
    logged = trainer.state.log_history[0]
    assert "rewards/UserConversation/mean" in logged


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_grpo_trains_a_step_against_the_openenv_environment(tool_policy, tiny_sim, tmp_path, monkeypatch):
    pytest.importorskip("openenv")
    from usersim.rl.openenv_env import OpenEnvConversation, UserSimOpenEnv

    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer = _one_grpo_step(tool_policy, lambda: OpenEnvConversation(UserSimOpenEnv(
        tiny_sim, SCENARIOS, max_turns=2, rewards={"user_ended": 1.0}, generation={"max_new_tokens": 6})), tmp_path)
    assert trainer.state.global_step == 1 and "rewards/OpenEnvConversation/mean" in trainer.state.log_history[0]
