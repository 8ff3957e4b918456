"""PII scrubbing: emails, phone numbers, IP addresses and credential-bearing URLs -> placeholders.

Each kind is one regular expression plus (where a pattern alone over-matches) a small check, and
is replaced by a fixed placeholder (``<EMAIL>``, ``<PHONE>``, ``<IP>``, ``<CREDENTIAL_URL>``).
The patterns are deliberately conservative so ordinary numbers survive: dates (2023-01-15,
12/05/2024), times (12:30), versions (v1.2.3, 3.10.12), prices and counts (1,000,000), ranges and
plain long numbers (1234567890 with no separators) are *not* phone numbers or IPs; the one
ambiguity left is three numbers on their own shaped like a phone ("256 512 1024"), which are
scrubbed. Addresses that identify no one (loopback 127.0.0.1, private 10.x/192.168.x/172.16-31.x, link-local, netmasks and
other reserved ranges, documentation ranges) are left as they are: they are everywhere in technical
chats and carry no personal information.

Order matters: credential URLs first (``user:pass@host`` would otherwise look like an email), then
emails, IPs, phones.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

PLACEHOLDERS = {
    "credential_url": "<CREDENTIAL_URL>",
    "email": "<EMAIL>",
    "ip": "<IP>",
    "phone": "<PHONE>",
}

# Any URL-ish token: scheme://... up to whitespace or a closing bracket/quote.
_URL = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s<>"'\])]+""")
# user:password@host inside a URL's authority part.
_URL_USERINFO = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/@:]+:[^\s/@]+@")
# Query/fragment parameters that carry a secret.
_SECRET_PARAM = re.compile(
    r"[?&#](?:token|access_token|refresh_token|id_token|api_key|apikey|api-key|key|secret|"
    r"client_secret|password|passwd|pwd|auth|sig|signature)=[^&\s#]+",
    re.IGNORECASE,
)

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not preceded by a word char, dot or "v" (versions), not followed by ".digit" (a longer dotted
# number is a version, not an address).
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
# Full 8-group IPv6, or compressed with '::' and at least 3 groups; groups must hold hex only and
# the address must contain a digit (so C++ ``std::vector`` or ``a::b`` are left alone).
_IPV6 = re.compile(
    r"(?<![\w:])(?:(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}"
    r"|(?:[0-9a-fA-F]{1,4}:){1,6}:(?:[0-9a-fA-F]{1,4}:){0,5}[0-9a-fA-F]{1,4})(?![\w:])"
)

# Phones, in the shapes people type them:
#   international   +CC then 2-5 groups of digits ("+44 20 7946 0958", "+1 (555) 123-4567");
#   North American  "(555) 123-4567", "555 123 4567", "555.123.4567", "1-800-555-0199": 3-3-4 digits
#                   split by spaces, dots or dashes; without brackets the area code must start
#                   with 2-9 (as real ones do), which keeps number lists such as "100 200 3000";
#   trunk-prefixed  national numbers starting with 0: "020 7946 0958", "07700 900123",
#                   "01 23 45 67 89" (10-11 digits, checked in ``scrub_text``).
# A match never touches a letter, a "+", or more digits; a national form also never sits inside a
# list of numbers ("128 256 512 1024"): a digit followed by a space or comma just before it, or a
# space or comma and a digit just after it, rules it out.
_PHONE = re.compile(
    r"""
    (?<![\w+])
    (?:
        \+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}
      | (?<!\d[ ,])
        (?:
            (?:1[ .-])?(?:\(\d{3}\)[ .-]?\d{3}[ .-]?\d{4}|[2-9]\d{2}[ .-]\d{3}[ .-]\d{4})
          | 0\d{2,4}[ .-]\d{3,4}[ .-]?\d{3,4}
          | 0[1-9](?:[ .-]\d{2}){4}
        )
        (?![ ,]\d)
    )
    (?![\w.-]?\d)
    """,
    re.VERBOSE,
)


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _is_ipv6(s: str) -> bool:
    groups = [g for g in s.split(":") if g]
    return any(c.isdigit() for c in s) and (s.count(":") == 7 or len(groups) >= 3)


def identifies_a_host(address: str) -> bool:
    """True for a public (globally routable) address; False for loopback/private/reserved/invalid."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
                or ip.is_unspecified)


# Cheap necessary conditions: each pattern's every match holds a substring these find, so text
# without one cannot change (they use the same \d as the patterns). Each starts with a literal
# character where it can, which the regex engine scans for quickly; a pattern that must start with
# a digit class has an ASCII twin ([0-9] is quicker than \d and means the same in ASCII text).
_ANY_DIGIT = re.compile(r"\d")  # IPs and phones (in ASCII text, one of "0123456789": see _has_digit)
# Emails: a local-part character, "@", a domain character.
_EMAIL_HINT = re.compile(r"@(?<=[A-Za-z0-9._%+-]@)[A-Za-z0-9-]")
_IPV4_HINT = re.compile(r"\.\d{1,3}\.\d{1,3}\.\d")  # the ".octet.octet.o" of octet.octet.octet.octet
# IPv6: a full address holds ":group:", a compressed one "::" then a hex digit.
_IPV6_HINT = re.compile(r":(?::[0-9a-fA-F]|[0-9a-fA-F]{1,4}:)")
# Phones: "+digit" (international); "0d dd dd" (the 0d dd dd dd dd form); 3 digits, maybe a
# separator, 3 digits (the last groups of the North American and 0ddd ddd dddd forms), searched
# last, with an ASCII twin, being the slowest.
_PHONE_HINTS = (re.compile(r"\+\d"), re.compile(r"0[1-9][ .-]\d\d[ .-]\d\d"))
_PHONE_DIGITS_HINT = re.compile(r"\d\d\d[ .-]?\d\d\d")
_PHONE_DIGITS_HINT_ASCII = re.compile(r"[0-9][0-9][0-9][ .-]?[0-9][0-9][0-9]")


def _has_digit(text: str) -> bool:
    if text.isascii():  # a substring test per digit is a memchr: quicker than a regex scan
        return any(d in text for d in "0123456789")
    return _ANY_DIGIT.search(text) is not None


def _may_hold_phone(text: str) -> bool:
    if any(hint.search(text) for hint in _PHONE_HINTS):
        return True
    return (_PHONE_DIGITS_HINT_ASCII if text.isascii() else _PHONE_DIGITS_HINT).search(text) is not None


def _count_and_replace(kind: str, counts: Counter):
    placeholder = PLACEHOLDERS[kind]

    def repl(m: re.Match) -> str:
        counts[kind] += 1
        return placeholder
    return repl


def _ip(counts: Counter, v6: bool = False):
    """Replacer for an IPv4 (or, ``v6``, an IPv6 candidate that parses) address that identifies a host."""
    def repl(m: re.Match) -> str:
        if (v6 and not _is_ipv6(m.group(0))) or not identifies_a_host(m.group(0)):
            return m.group(0)
        counts["ip"] += 1
        return PLACEHOLDERS["ip"]
    return repl


def _phone(counts: Counter):
    def repl(m: re.Match) -> str:
        s = m.group(0)
        n = _digits(s)
        if s.startswith("+") and not 8 <= n <= 15:
            return s
        if s.startswith("0") and not 10 <= n <= 11:
            return s
        counts["phone"] += 1
        return PLACEHOLDERS["phone"]
    return repl


def _url(counts: Counter):
    def repl(m: re.Match) -> str:
        u = m.group(0)
        if _URL_USERINFO.match(u) or _SECRET_PARAM.search(u):
            counts["credential_url"] += 1
            return PLACEHOLDERS["credential_url"]
        return u
    return repl


def scrub_text(text: str, counts: Counter | None = None) -> str:
    """``text`` with PII replaced by placeholders; ``counts[kind]`` is incremented per replacement.

    Each pattern runs only when the text, as the earlier replacements left it, holds what its every
    match (or every replaced match) holds: for URLs ``://`` and ``@`` or a secret parameter; for
    emails ``x@y``; then a digit, and for IPv4 four dotted numbers, for IPv6 ``::`` or seven colons
    and a colon-delimited hex group, for phones one of the digit shapes of ``_may_hold_phone``. So
    the result is the same as running every pattern; most turns hold none of it and cost a few
    substring checks.
    """
    counts = counts if counts is not None else Counter()
    # a URL is replaced only when it holds user info ("@") or a secret parameter
    if "://" in text and ("@" in text or _SECRET_PARAM.search(text)):
        text = _URL.sub(_url(counts), text)
    if "@" in text and _EMAIL_HINT.search(text):
        text = _EMAIL.sub(_count_and_replace("email", counts), text)
    if not _has_digit(text):
        return text
    if text.count(".") >= 3 and _IPV4_HINT.search(text):
        text = _IPV4.sub(_ip(counts), text)
    if ("::" in text or text.count(":") >= 7) and _IPV6_HINT.search(text):  # compressed or full 8-group
        text = _IPV6.sub(_ip(counts, v6=True), text)
    if _may_hold_phone(text):
        text = _PHONE.sub(_phone(counts), text)
    return text
