"""Chit-chat (the Chit Chat Challenge, human-human chats): one conversation per participant.

File shape (chitchat-dataset's ``dataset.json``, a 40 MB JSON object, read member by member)::

    {chat_id: {"messages": [[{"sender", "text", "timestamp"}, ...], ...],
               "prompt": str, "ratings": {...}, "start": str}, ...}

Mapping:

- each participant (distinct ``sender``, in order of first message) gets one view: that person is
  the ``user`` (``user_id`` = sender), everyone else is the ``assistant`` side and is listed in
  ``other_user_ids``; a chat with one participant gives that participant's view only;
- messages are flattened in order and **consecutive messages of one sender are joined with "\\n"
  into one turn** (the corpus already groups them; the join also covers groups it split);
- ``id`` = ``{source}:{chat_id}:{sender}``, ``group_id`` = ``{source}:{chat_id}`` (shared by the
  views of one chat), ``location`` = ``path@byte_offset`` of the chat;
- metadata: ``prompt`` (the topic/goal shown to both), ``ratings``, ``start``, ``chat_id``,
  ``participants`` (count).

Accounting: a chat yields one item per participant, or one Quarantined when malformed
(not an object, no/empty ``messages``, a message without ``sender``, non-string ``text``...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from usersim.data_prep.adapters.json_stream import iter_json_container, record_location
from usersim.data_prep.adapters.paths import check_options, is_hf, resolve_files, source_name
from usersim.data_prep.adapters.record_checks import (BadRecord, metadata_value, quarantine_raw, require_encodable,
                                                      require_list, require_object)
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import ASSISTANT, USER, AdapterItem, Conversation, Quarantined, Reason, Turn

OPTIONS: tuple[str, ...] = ()


def default_path() -> Path:
    import chitchat_dataset

    return Path(chitchat_dataset.__file__).parent / "dataset.json"


def chat_messages(chat: dict) -> list[tuple[str, str]]:
    """(sender, text) of every message in order; raises BadRecord on a malformed entry."""
    groups = require_list(chat, "messages", "chat")
    out: list[tuple[str, str]] = []
    for g, group in enumerate(groups):
        if not isinstance(group, list):
            group = [group]  # tolerate a flat message list
        for m, msg in enumerate(group):
            where = f"messages[{g}][{m}]"
            if not isinstance(msg, dict):
                raise BadRecord(Reason.NOT_AN_OBJECT, f"{where} is not an object")
            sender, text = msg.get("sender"), msg.get("text")
            if sender is None or "text" not in msg:
                raise BadRecord(Reason.MISSING_FIELD, f"{where} has no {'sender' if sender is None else 'text'!r}")
            if not isinstance(sender, str) or not sender:
                raise BadRecord(Reason.MISSING_FIELD, f"{where}: sender is not a non-empty string")
            if not isinstance(text, str):
                raise BadRecord(Reason.NON_STRING_CONTENT, f"{where}: text is a {type(text).__name__}")
            out.append((sender, text))
    if not out:
        raise BadRecord(Reason.NO_TURNS, "chat has no messages")
    return out


def participant_turns(messages: list[tuple[str, str]], user: str) -> list[Turn]:
    """The chat as seen by ``user``: their messages are user turns, runs of one sender joined."""
    turns: list[Turn] = []
    last_sender = None
    for sender, text in messages:
        if sender == last_sender:
            turns[-1].text += "\n" + text
        else:
            turns.append(Turn(USER if sender == user else ASSISTANT, text))
        last_sender = sender
    return turns


def chat_views(chat_id: str, chat: Any, source: str, location: str) -> list[Conversation]:
    """One Conversation per participant of one chat entry (pure; raises BadRecord)."""
    chat = require_object(chat, "chat")
    messages = chat_messages(chat)
    senders = list(dict.fromkeys(s for s, _ in messages))
    metadata = {"chat_id": chat_id, "participants": len(senders)}
    for key in ("prompt", "ratings", "start"):
        if chat.get(key) is not None:
            metadata[key] = metadata_value(chat[key])
    return [
        require_encodable(Conversation(
            id=f"{source}:{chat_id}:{user}",
            source=source,
            user_id=user,
            turns=participant_turns(messages, user),
            metadata=dict(metadata),
            location=location,
            group_id=f"{source}:{chat_id}",
            other_user_ids=[s for s in senders if s != user],
        ))
        for user in senders
    ]


def read_chitchat(source: SourceConfig) -> Iterator[AdapterItem]:
    """Items of a chit-chat source (checks path/options now; reads lazily)."""
    check_options(source, OPTIONS)
    if is_hf(source.path):
        raise ValueError(f"source {source_name(source)!r}: the chitchat adapter reads the chit-chat JSON "
                         "file only (leave `path` empty for the packaged one); hf: ids are not supported")
    files = resolve_files(source.path or default_path(), (".json", ".json.gz"))
    return _read(files, source_name(source))


def _read(files: list[Path], name: str) -> Iterator[AdapterItem]:
    for path in files:
        for rec in iter_json_container(path):
            location = record_location(path, rec)
            if not rec.ok:
                yield quarantine_raw(name, location, rec)
                continue
            if rec.key is None:  # the file is an array, not {chat_id: chat}
                yield Quarantined(name, Reason.NOT_AN_OBJECT, location,
                                  "chit-chat file must be a JSON object {chat_id: chat}", rec.value)
                continue
            try:
                yield from chat_views(rec.key, rec.value, name, location)
            except BadRecord as e:
                yield Quarantined(name, e.reason, location, e.detail, {rec.key: rec.value})
