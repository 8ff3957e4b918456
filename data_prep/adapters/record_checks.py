"""Small helpers shared by the adapters: quarantine records, metadata values, turn text."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any, Optional

from usersim.data_prep.adapters.json_stream import RawRecord
from usersim.data_prep.schema import ASSISTANT, USER, Conversation, Quarantined, Reason, Turn, stable_hash


_PLAIN_SCALARS = (bool, int, float, type(None))


class BadRecord(Exception):
    """Raised inside an adapter's pure mapping function; the adapter turns it into Quarantined."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def quarantine_raw(source: str, location: str, rec: RawRecord) -> Quarantined:
    """The Quarantined item for a record the reader could not parse (rec.error is set)."""
    return Quarantined(source=source, reason=rec.error or Reason.BAD_JSON, location=location,
                       detail=rec.detail, raw=rec.raw or None)


def metadata_value(value: Any) -> Any:
    """A JSON-serialisable metadata value: str/bool/int/float/None kept, datetimes as ISO text,
    lists/dicts converted recursively, anything else as ``str``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): metadata_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [metadata_value(v) for v in value]
    return str(value)


def require_object(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise BadRecord(Reason.NOT_AN_OBJECT, f"{what} is a {type(value).__name__}, not an object")
    return value


def require_field(obj: dict, key: str, what: str) -> Any:
    if key not in obj or obj[key] is None:
        raise BadRecord(Reason.MISSING_FIELD, f"{what} has no {key!r} field")
    return obj[key]


def require_list(obj: dict, key: str, what: str) -> list:
    value = require_field(obj, key, what)
    if not isinstance(value, list):
        raise BadRecord(Reason.MISSING_FIELD, f"{what}: {key!r} is a {type(value).__name__}, not a list")
    return value


def content_text(content: Any, what: str) -> str:
    """Turn text: a string, or an OpenAI-style list of parts whose ``text`` parts are joined
    with newlines (non-text parts, e.g. images, are ignored). Anything else, or a list without
    any text part -> non_string_content."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content
                 if isinstance(p, dict) and p.get("type", "text") == "text" and isinstance(p.get("text"), str)]
        if texts:
            return "\n".join(texts)
    raise BadRecord(Reason.NON_STRING_CONTENT, f"{what} content is a {type(content).__name__}, not text")


def optional_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def require_encodable(conv: Conversation) -> Conversation:
    """The conversation, if all its text is valid Unicode. JSON may spell an unpaired surrogate
    as an escape (``"\\ud83d"``, half an emoji): the text then cannot be written as UTF-8
    downstream, so such a record is ``invalid_utf8`` here rather than a crash later."""
    try:
        text = "".join([t.text for t in conv.turns])
        if not text.isascii():  # (constant time) ASCII text holds no surrogate
            text.encode("utf-8")
        "".join([conv.id, conv.user_id, conv.group_id, *conv.other_user_ids]).encode("utf-8")
        if not all(type(k) is str and k.isascii() and (type(v) is str and v.isascii() or type(v) in _PLAIN_SCALARS)
                   for k, v in conv.metadata.items()):  # (plain ASCII metadata holds no surrogate)
            json.dumps(conv.metadata, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadRecord(Reason.INVALID_UTF8, f"text holds an unpaired surrogate ({e.reason})") from None
    return conv


def text_hash(*parts: Any) -> str:
    """``stable_hash`` of parts that may hold unpaired surrogates (escaped first, so hashing
    never fails; valid text hashes exactly as ``stable_hash`` would)."""
    return stable_hash(*(str(p).encode("utf-8", "backslashreplace").decode("utf-8") for p in parts))


def map_role(role: Any, text: str, where: str, *, user_roles: frozenset, assistant_roles: frozenset,
             system_roles: frozenset, turns: list, system: list) -> None:
    """Append ``text`` as a user/assistant Turn (or to ``system``) by its corpus role name.

    Role names match case-insensitively; anything else raises BadRecord(unknown_role).
    """
    key = role.strip().lower() if isinstance(role, str) else role
    if key in user_roles:
        turns.append(Turn(USER, text))
    elif key in assistant_roles:
        turns.append(Turn(ASSISTANT, text))
    elif key in system_roles:
        system.append(text)
    else:
        raise BadRecord(Reason.UNKNOWN_ROLE, f"{where}: unknown role {role!r}")
