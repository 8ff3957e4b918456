"""The RL environment: episode flow, termination vs truncation, batching, seeds, scenario sources."""

import json

import pytest

from usersim.data_prep.prompt_format import Condition
from usersim.rl.env import BatchUserSimEnv, UserSimEnv
from usersim.rl.scenarios import Scenario, load_scenarios_file, scenarios_from_dataset, scenarios_from_dicts
from usersim.simulator import SimulatorTurn

END = "<END>"


class ScriptedSimulator:
    """Stands in for UserSimulator: the k-th user turn of a conversation is script[goal][k]; END ends it."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.calls = []  # (batch size, seeds) of every respond_batch call

    def respond_batch(self, histories, conditions, seed=None, **generation):
        self.calls.append((len(histories), list(seed)))
        out = []
        for history, condition in zip(histories, conditions):
            k = sum(t["role"] == "user" for t in history)
            text = self.scripts[condition.goal][k]
            out.append(SimulatorTurn("", True, 1) if text == END else SimulatorTurn(text, False, 3))
        return out


def scenario(goal, opener="user", **knowledge):
    return Scenario(id=goal, condition=Condition(goal=goal, **knowledge), opener=opener)


SCRIPTS = {"leaves": ["hi, a trail?", "thanks", END], "stays": ["hello", "more", "more", "more", "more"],
           "quiet": [END, END, END, END, "finally", "ok", END]}


def test_user_ends_the_episode_terminated_with_the_reward_on_the_last_step_only():
    sim = ScriptedSimulator(SCRIPTS)
    env = UserSimEnv(sim, [scenario("leaves", knowledge_asks=["good trail"])], max_turns=5,
                     rewards={"user_ended": 1.0, "asks_answered": 2.0})
    obs, info = env.reset(seed=0)
    assert obs == "hi, a trail?" and info["opener"] == "user" and info["transcript"].turns == [
        {"role": "user", "text": "hi, a trail?"}]
    obs, reward, terminated, truncated, info = env.step("The good trail is by the river.")
    assert (obs, reward, terminated, truncated) == ("thanks", 0.0, False, False)
    obs, reward, terminated, truncated, info = env.step("You're welcome.")
    assert (obs, terminated, truncated) == ("", True, False)
    assert info["rewards"] == {"user_ended": 1.0, "asks_answered": 1.0} and reward == 3.0
    assert [t["role"] for t in info["transcript"].turns] == ["user", "assistant", "user", "assistant"]
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step("anything else?")


def test_turn_limit_truncates_after_asking_the_user_once_more():
    env = UserSimEnv(ScriptedSimulator(SCRIPTS), [scenario("stays")], max_turns=2, rewards=["user_ended"])
    env.reset(seed=1)
    assert env.step("a")[2:4] == (False, False)
    obs, reward, terminated, truncated, info = env.step("b")
    assert (obs, reward, terminated, truncated) == ("more", 0.0, False, True)
    assert info["transcript"].hit_turn_limit and not info["transcript"].ended_by_user
    assert info["assistant_turns"] == 2 and len(info["transcript"].turns) == 5


def test_assistant_opener_and_the_fallback_when_the_user_will_not_open():
    sim = ScriptedSimulator(SCRIPTS)
    env = UserSimEnv(sim, [scenario("stays", opener="assistant")], max_turns=3)
    obs, info = env.reset(seed=0)
    assert obs == "" and info["transcript"].turns == [] and not sim.calls  # nothing asked of the simulator
    assert env.step("Hi! How can I help?")[0] == "hello"
    # "quiet" ends 4 times in a row when asked to open: 3 retries, then the assistant opens
    env = UserSimEnv(sim, [scenario("quiet")], max_turns=3, opening_retries=3)
    obs, info = env.reset(seed=0)
    assert obs == "" and info["opener"] == "assistant" and info["opening_retries"] == 4
    # the script follows the user turns (none yet), so the user's answer is END: terminated
    assert env.step("Hello?")[:4] == ("", 1.0, True, False)  # default rewards: user_ended 1 + goal_progress None


def test_batch_steps_live_episodes_through_one_respond_batch_call():
    sim = ScriptedSimulator(SCRIPTS)
    env = BatchUserSimEnv(sim, [], max_turns=4)
    obs, infos = env.reset(seed=3, scenarios=[scenario("leaves"), scenario("stays")])
    assert obs == ["hi, a trail?", "hello"] and sim.calls[-1][0] == 2
    obs, rewards, terminated, truncated, _ = env.step(["x", "y"])
    assert obs == ["thanks", "more"] and sim.calls[-1][0] == 2
    obs, rewards, terminated, truncated, _ = env.step(["x", "y"])
    assert terminated == [True, False] and obs[0] == "" and env.live == [False, True]
    n_calls = len(sim.calls)
    env.step([None, "z"])
    assert len(sim.calls) == n_calls + 1 and sim.calls[-1][0] == 1  # only the live episode is stepped
    with pytest.raises(ValueError, match="episode 0 is finished"):
        env.step(["late", "z"])


def test_seeds_decide_scenarios_and_user_seeds_independently_of_the_batch():
    pool = [scenario(g) for g in SCRIPTS]
    a, b = ScriptedSimulator(SCRIPTS), ScriptedSimulator(SCRIPTS)
    env_a, env_b = BatchUserSimEnv(a, pool), BatchUserSimEnv(b, pool)
    _, infos_a = env_a.reset(seed=7, n=3)
    _, infos_b = env_b.reset(seed=7, n=3)
    assert [i["scenario"].id for i in infos_a] == [i["scenario"].id for i in infos_b]
    assert a.calls == b.calls
    # an episode's seed alone fixes its user seeds: alone or in a batch of 3, episode 1 samples the same
    single = ScriptedSimulator(SCRIPTS)
    BatchUserSimEnv(single, pool).reset(seeds=[infos_a[1]["seed"]], scenarios=[infos_a[1]["scenario"]])
    assert single.calls[0][1][0] == a.calls[0][1][1]  # every episode opens: row 1 of the first call


def test_real_simulator_episode_replays_exactly_with_the_same_seed(tiny_sim):
    env = UserSimEnv(tiny_sim, [scenario("talk about weekend plans")], max_turns=2,
                     generation={"max_new_tokens": 8})

    def play(seed):
        env.reset(seed=seed)
        info = None
        for message in ["hello there", "tell me more"]:
            *_, terminated, truncated, info = env.step(message)
            if terminated or truncated:
                break
        return info["transcript"].to_dict()

    assert play(5) == play(5)
    assert play(5) != play(6)


def test_scenarios_from_dicts_files_and_a_data_run(tmp_path):
    items = [{"id": "a", "goal": "fix a flaky test", "knowledge": {"asks": ["retry flag"]}, "style": {"length": "short"}},
             {"goal": "chat", "opener": "assistant", "knowledge_discloses": ["I like tea"]},
             Condition(goal="bare")]
    s = scenarios_from_dicts(items)
    assert [x.id for x in s] == ["a", "scenario-1", "scenario-2"] and s[1].opener == "assistant"
    assert s[0].condition.knowledge_asks == ["retry flag"] and s[0].condition.style == {"length": "short"}
    assert s[1].condition.knowledge_discloses == ["I like tea"]
    with pytest.raises(ValueError, match="unknown keys \\['gaol'\\]"):
        scenarios_from_dicts([{"gaol": "typo"}])
    with pytest.raises(ValueError, match="appears twice"):
        scenarios_from_dicts([{"id": "x"}, {"id": "x"}])
    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in items[:2]) + "\n")
    assert [x.id for x in load_scenarios_file(path)] == ["a", "scenario-1"]

    from datasets import Dataset, DatasetDict
    from tiny_run import tiny_records

    DatasetDict({"test": Dataset.from_list(tiny_records())}).save_to_disk(str(tmp_path / "data" / "dataset"))
    held_out = scenarios_from_dataset(tmp_path / "data", "test", opener="record")
    assert [x.id for x in held_out] == ["conv0", "conv1", "conv2"]
    assert held_out[0].condition.knowledge_asks == ["a good hike nearby"] and held_out[0].opener == "user"
    assert len(scenarios_from_dataset(tmp_path / "data", "test", max_scenarios=2, seed=1)) == 2
    with pytest.raises(ValueError, match="no split 'validation'"):
        scenarios_from_dataset(tmp_path / "data", "validation")
