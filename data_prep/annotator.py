"""Optional LLM annotators that write conditioning fields (goal, persona) for a conversation.

An annotator is anything with ``annotate(conversation, fields) -> {field: text}``. Two are built
in: a local transformers model (:class:`HFAnnotator`, ``trust_remote_code`` only when the config
turns it on) and an OpenAI-compatible chat endpoint (:class:`OpenAICompatibleAnnotator`, ``POST
{base_url}/chat/completions`` via urllib; the API key is read from the env var named in the config
and never logged or written). :func:`annotate_or_fallback` keeps the heuristic value for any field
the annotator fails on (error, timeout, unparsable reply) and counts a warning.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from typing import Any, Protocol, Sequence

from usersim.data_prep.config import AnnotatorConfig
from usersim.data_prep.schema import USER, Conversation

ANNOTATABLE_FIELDS = ("goal", "persona")
_FIELD_HELP = {
    "goal": "what the user came to do or talk about, one short sentence",
    "persona": "who the user seems to be (background, situation, manner), one short sentence",
}


class Annotator(Protocol):
    def annotate(self, conversation: Conversation, fields: Sequence[str]) -> dict[str, str]: ...


class AnnotatorError(RuntimeError):
    """The annotator could not produce the requested fields (the caller falls back)."""


def annotation_prompt(conversation: Conversation, fields: Sequence[str], max_chars: int = 4000) -> str:
    lines = []
    for t in conversation.turns:
        who = "USER" if t.role == USER else "OTHER"
        lines.append(f"{who}: {t.text}")
    transcript = "\n".join(lines)[:max_chars]
    wanted = "\n".join(f'- "{f}": {_FIELD_HELP.get(f, f)}' for f in fields)
    return (
        "Read this conversation and describe the USER (not the other side).\n"
        f"Reply with one JSON object with these keys:\n{wanted}\n\nConversation:\n{transcript}\n\nJSON:"
    )


def parse_annotation(reply: str, fields: Sequence[str]) -> dict[str, str]:
    """The requested fields from a model reply (a JSON object, possibly inside other text)."""
    match = re.search(r"\{.*\}", reply, re.DOTALL)
    if not match:
        raise AnnotatorError("reply holds no JSON object")
    try:
        obj = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise AnnotatorError(f"reply JSON does not parse: {err}") from None
    out = {f: " ".join(str(obj[f]).split()) for f in fields if isinstance(obj, dict) and obj.get(f)}
    if not out:
        raise AnnotatorError("reply JSON has none of the requested fields")
    return out


class OpenAICompatibleAnnotator:
    """``POST {base_url}/chat/completions`` with ``Authorization: Bearer $<api_key_env>`` (if set)."""

    def __init__(self, cfg: AnnotatorConfig) -> None:
        if not cfg.base_url:
            raise ValueError("conditioning.annotator.base_url is empty; set it, e.g. http://127.0.0.1:8000/v1")
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        self.model = cfg.model
        self.timeout = cfg.timeout_s
        self._api_key_env = cfg.api_key_env

    def __repr__(self) -> str:  # never show the key
        return f"OpenAICompatibleAnnotator(url={self.url!r}, model={self.model!r})"

    def annotate(self, conversation: Conversation, fields: Sequence[str]) -> dict[str, str]:
        body = json.dumps({
            "model": self.model,
            "messages": [{"role": "user", "content": annotation_prompt(conversation, fields)}],
            "temperature": 0,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self._api_key_env, "") if self._api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError, ValueError) as err:
            # The message names the URL and error class only: never the headers (the key).
            raise AnnotatorError(f"{self.url}: {type(err).__name__}") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise AnnotatorError("response has no choices[0].message.content") from None
        return parse_annotation(content, fields)


class HFAnnotator:
    """A local transformers text-generation pipeline (loaded once)."""

    def __init__(self, cfg: AnnotatorConfig) -> None:
        if not cfg.model:
            raise ValueError("conditioning.annotator.model is empty; set a local model path or HF id")
        from transformers import pipeline

        self._pipe = pipeline("text-generation", model=cfg.model, trust_remote_code=cfg.trust_remote_code,
                              model_kwargs={"use_safetensors": True})

    def annotate(self, conversation: Conversation, fields: Sequence[str]) -> dict[str, str]:
        prompt = annotation_prompt(conversation, fields)
        try:
            out = self._pipe(prompt, max_new_tokens=96, do_sample=False, return_full_text=False)
            reply = out[0]["generated_text"]
        except Exception as err:  # a model failure must not stop the stage; counted by the caller
            raise AnnotatorError(f"generation failed: {type(err).__name__}") from None
        return parse_annotation(reply, fields)


def make_annotator(cfg: AnnotatorConfig) -> Annotator | None:
    """The configured annotator, or ``None`` for ``kind: none``."""
    bad = [f for f in cfg.fields if f not in ANNOTATABLE_FIELDS]
    if bad:
        raise ValueError(f"conditioning.annotator.fields: {bad} not annotatable; choose from {ANNOTATABLE_FIELDS}")
    if cfg.kind == "none":
        return None
    if cfg.kind == "openai":
        return OpenAICompatibleAnnotator(cfg)
    if cfg.kind == "hf":
        return HFAnnotator(cfg)
    raise ValueError(f"conditioning.annotator.kind {cfg.kind!r}: use none, hf or openai")


def annotate_or_fallback(annotator: Annotator, conversation: Conversation, fields: Sequence[str],
                         heuristic: dict[str, Any], counts: Counter) -> dict[str, Any]:
    """``heuristic`` with the annotator's fields written over it; on failure keep it and count."""
    try:
        got = annotator.annotate(conversation, fields)
    except AnnotatorError:
        counts["fallback"] += 1
        return dict(heuristic)
    out = dict(heuristic)
    for f in fields:
        if got.get(f):
            out[f] = got[f]
            counts[f"annotated_{f}"] += 1
        else:
            counts["fallback"] += 1
    return out
