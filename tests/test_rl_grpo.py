"""The TRL rollout at minimal size: exact token bookkeeping (loss only on the policy's tokens) and GRPO steps."""

import json

import pytest
import torch

from usersim.data_prep.prompt_format import Condition
from usersim.rl.rollout import PlainTranscriptFormat, SimulatorRollout
from usersim.rl.scenarios import Scenario

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def tiny_policy(tiny_run_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tiny_run_dir.parent / "base_model"
    return AutoModelForCausalLM.from_pretrained(base, use_safetensors=True), AutoTokenizer.from_pretrained(base)


def scenarios():
    return [Scenario(id="hike", condition=Condition(goal="talk about weekend plans", knowledge_asks=["a good hike"])),
            Scenario(id="greet", condition=Condition(goal="say hi"), opener="assistant")]


def test_rollout_tokens_are_the_policy_turns_and_the_rendered_user_turns_exactly(tiny_sim, tiny_policy):
    model, tokenizer = tiny_policy
    rollout = SimulatorRollout(tiny_sim, scenarios(), max_turns=3, policy_max_new_tokens=6,
                               user_generation={"max_new_tokens": 6})
    episodes, infos = rollout.play(model, tokenizer, scenarios() * 2, seeds=[1, 2, 3, 4])
    fmt, eos = PlainTranscriptFormat(tokenizer), tokenizer.eos_token_id
    for ep, info in zip(episodes, infos):
        turns = info["transcript"].turns
        opening = turns[0]["text"] if info["opener"] == "user" else None
        assert ep.prompt_ids == fmt.prompt_ids(opening)
        assert len(ep.completion_ids) == len(ep.env_mask)
        # split the completion into the policy's runs (mask 1) and the environment's runs (mask 0)
        runs, start = [], 0
        for i in range(1, len(ep.env_mask) + 1):
            if i == len(ep.env_mask) or ep.env_mask[i] != ep.env_mask[start]:
                runs.append((ep.env_mask[start], ep.completion_ids[start:i]))
                start = i
        assert [m for m, _ in runs] == [1, 0] * (len(runs) // 2) + [1] * (len(runs) % 2)
        assert runs[-1][0] == 1  # an episode ends on the policy's own last token
        assistant = [t["text"] for t in turns if t["role"] == "assistant"]
        users_after = [t["text"] for t in turns[(1 if opening is not None else 0):] if t["role"] == "user"]
        policy_runs = [ids for m, ids in runs if m == 1]
        assert [fmt.message_text(ids) for ids in policy_runs] == assistant
        for k, (m, ids) in enumerate(r for r in runs if r[0] == 0):
            closing = [] if policy_runs[k][-1] == eos else [eos]
            assert ids == closing + fmt.user_turn_ids(users_after[k])
        assert len(policy_runs) == info["assistant_turns"] <= 3
    assert rollout.last_stats["episodes"] == 4.0


def test_usersim_rl_main_runs_grpo_steps_and_writes_the_reward_curve(tiny_run_dir, tmp_path):
    from datasets import Dataset, DatasetDict
    from tiny_run import tiny_records

    from usersim.data_prep.stage_config import load_config
    from usersim.rl.config import RLConfig
    from usersim.rl.main import main

    DatasetDict({"test": Dataset.from_list(tiny_records())}).save_to_disk(str(tmp_path / "data" / "dataset"))
    cfg = load_config(RLConfig, None, [f"simulator_run={tiny_run_dir}", f"data_dir={tmp_path / 'data'}",
                                       f"output_dir={tmp_path / 'rl'}", "device=cpu", "max_steps=2", "max_turns=2",
                                       "policy_max_new_tokens=6", "user_max_new_tokens=6", "num_generations=2",
                                       "per_device_train_batch_size=4", "lora_r=0", "learning_rate=0.01",
                                       "num_samples_to_save=3"])
    out = main(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["step"] for s in metrics["steps"]] == [1, 2]
    for step in metrics["steps"]:
        assert isinstance(step["reward"], float) and 0.0 <= step["reward"] <= 2.0
        assert step["episodes"]["episodes"] == 4.0 and 1.0 <= step["episodes"]["assistant_turns"] <= 2.0
        assert "rewards/user_ended/mean" in step
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all(s["turns"] for s in samples)
    assert (out / "policy" / "model.safetensors").is_file() and not (out / "policy" / "training_args.bin").exists()
    assert (out / "config.yaml").is_file() and json.loads((out / "run_info.json").read_text())["stage"] == "rl"


def test_a_custom_reward_with_spread_moves_the_policy(tiny_run_dir, tiny_sim, tmp_path):
    from usersim.data_prep.stage_config import load_config
    from usersim.rl.config import RLConfig
    from usersim.rl.main import build_trainer

    def short_replies(transcript, scenario):  # any pure (transcript, scenario) -> float plugs in
        return -float(sum(len(t) for t in transcript.texts("assistant")))

    cfg = load_config(RLConfig, None, [f"simulator_run={tiny_run_dir}", "device=cpu", "max_steps=1", "max_turns=2",
                                       "policy_max_new_tokens=6", "user_max_new_tokens=6", "num_generations=2",
                                       "per_device_train_batch_size=4", "lora_r=0", "learning_rate=0.05"])
    trainer, rollout = build_trainer(cfg, tiny_sim, scenarios(), tmp_path, rewards={"short": (short_replies, 1.0)})
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "one GRPO step with non-zero advantages must change the policy"
    assert rollout.calls == 1 and "reward/short" in rollout.last_stats


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_policy():
    from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

    tok = train_tiny_tokenizer(["hello there how can I help", "system user assistant"] * 10, vocab_size=300)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHATML
    return build_tiny_model(tok, hidden_size=32, seed=3), tok


def test_an_instruct_policy_sees_its_chat_template_and_its_tokens_stay_its_own(tiny_sim, chat_policy):
    from usersim.rl.rollout import ChatTemplateFormat, policy_format

    model, tokenizer = chat_policy
    assert isinstance(policy_format(tokenizer), ChatTemplateFormat)
    rollout = SimulatorRollout(tiny_sim, scenarios(), max_turns=3, policy_max_new_tokens=6,
                               user_generation={"max_new_tokens": 6})
    episodes, infos = rollout.play(model, tokenizer, scenarios() * 2, seeds=[1, 2, 3, 4])
    fmt, eos = ChatTemplateFormat(tokenizer), tokenizer.eos_token_id
    for ep, info in zip(episodes, infos):
        turns = info["transcript"].turns
        opening = turns[0]["text"] if info["opener"] == "user" else None
        assert ep.prompt_ids == fmt.prompt_ids(opening)
        policy_runs, env_runs, start = [], [], 0
        for i in range(1, len(ep.env_mask) + 1):
            if i == len(ep.env_mask) or ep.env_mask[i] != ep.env_mask[start]:
                (policy_runs if ep.env_mask[start] else env_runs).append(ep.completion_ids[start:i])
                start = i
        assert [fmt.message_text(ids) for ids in policy_runs] == [t["text"] for t in turns if t["role"] == "assistant"]
        users_after = [t["text"] for t in turns[(1 if opening is not None else 0):] if t["role"] == "user"]
        for k, ids in enumerate(env_runs):
            closing = [] if policy_runs[k][-1] == eos else [eos]
            assert ids == closing + fmt.user_turn_ids(users_after[k])
        # what the policy was trained on reads, as text, as its own template's rendering of the conversation
        # (a turn cut by the token cap is closed by the environment with the end-of-turn token)
        msgs = [{"role": "user", "content": opening if opening is not None else
                 "(The user is waiting for you to start the conversation.)"}]
        for k, ids in enumerate(policy_runs):
            msgs.append({"role": "assistant", "content": tokenizer.decode(ids[:-1] if ids[-1] == eos else ids)})
            if k < len(env_runs):
                msgs.append({"role": "user", "content": users_after[k]})
        rendered = tokenizer.apply_chat_template([{"role": "system", "content": fmt.system}] + msgs, tokenize=False)
        text = tokenizer.decode(ep.prompt_ids + ep.completion_ids)
        assert len(text) > len(tokenizer.decode(ep.prompt_ids)) and rendered.startswith(text)


def test_the_policy_is_told_its_task_through_the_system_message(tiny_sim, chat_policy):
    """policy_system (RLConfig, bench/rl_cross.py --policy_system) is the chat view's system message."""
    from usersim.rl.config import CHAT_SYSTEM
    from usersim.rl.rollout import policy_format

    model, tokenizer = chat_policy
    task = "Ask them about their work."
    assert policy_format(tokenizer).system == CHAT_SYSTEM and policy_format(tokenizer, "auto", task).system == task
    rollout = SimulatorRollout(tiny_sim, scenarios(), max_turns=1, policy_max_new_tokens=4,
                               user_generation={"max_new_tokens": 4}, policy_system=task)
    episodes, infos = rollout.play(model, tokenizer, scenarios()[:1], seeds=[1])
    prompt = tokenizer.decode(episodes[0].prompt_ids)
    assert task in prompt and CHAT_SYSTEM not in prompt


def test_a_template_that_does_not_extend_conversations_is_refused():
    from transformers import AutoTokenizer  # noqa: F401

    from usersim.rl.rollout import ChatTemplateFormat
    from usersim.train.tiny_model import train_tiny_tokenizer

    tok = train_tiny_tokenizer(["hello"] * 5, vocab_size=280)
    tok.chat_template = "{{ messages[-1]['content'] }}{% if add_generation_prompt %}>{% endif %}"
    with pytest.raises(ValueError, match="does not extend a conversation"):
        ChatTemplateFormat(tok)
