"""A small client for OpenAI-compatible HTTP endpoints (chat completions and completions).

Used by every system that runs on a server: the prompted user (``/chat/completions``), the trained
simulator served by an inference engine (``/completions``, usersim.completions) and the LLM judge.
Standard library only (urllib), so nothing extra is installed for it.

Keys: a key is read from the environment variable *named* in a config (``api_key``) and sent in the
``Authorization`` header only; every error message passes through :func:`redact`, so the key never
reaches a log, a config or an output file.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Mapping

RETRY_STATUS = (429, 500, 502, 503, 504)  # endpoint answers worth another try (rate limit, server trouble)
RETRY_WAITS_S = (1.0, 4.0)  # pauses before the 2nd and 3rd try


class EndpointError(RuntimeError):
    """An OpenAI-compatible endpoint failed; the message never contains the API key."""


def _url(endpoint: str, path: str) -> str:
    base = endpoint.rstrip("/")
    return base if base.endswith(path) else base + path


def chat_completions_url(endpoint: str) -> str:
    """``<base>/chat/completions`` for an OpenAI-compatible base URL (a full URL is kept as is)."""
    return _url(endpoint, "/chat/completions")


def completions_url(endpoint: str) -> str:
    """``<base>/completions`` for an OpenAI-compatible base URL (a full URL is kept as is)."""
    return _url(endpoint, "/completions")


def api_key(env_name: str, setting: str = "prompted.api_key_env") -> str | None:
    """The key in the environment variable *named* ``env_name`` (None when ``env_name`` is "").

    ``setting`` is the config key that named it, for the error when the variable is unset.
    """
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise EndpointError(f"{setting} names the environment variable {env_name!r}, "
                            "which is not set (or empty)")
    return key


def redact(text: str, key: str | None) -> str:
    """``text`` with every occurrence of ``key`` replaced by ``<redacted>``."""
    return text.replace(key, "<redacted>") if key else text


def post_json(url: str, body: Mapping[str, Any], key: str | None, timeout_s: float) -> dict[str, Any]:
    """POST one JSON request; retried on 429/5xx and network errors; raises EndpointError."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode()
    problem = ""
    for attempt in range(len(RETRY_WAITS_S) + 1):
        if attempt:
            time.sleep(RETRY_WAITS_S[attempt - 1])
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                payload = response.read()
            try:
                return json.loads(payload)
            except json.JSONDecodeError:
                raise EndpointError(f"{url} answered with something that is not JSON: "
                                    f"{redact(payload[:200].decode(errors='replace'), key)!r}") from None
        except urllib.error.HTTPError as err:
            detail = redact(err.read()[:500].decode(errors="replace"), key)
            problem = f"{url} answered HTTP {err.code} {err.reason}: {detail}"
            if err.code not in RETRY_STATUS:
                break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            problem = f"could not reach {url}: {redact(str(reason), key)}"
    raise EndpointError(problem)



