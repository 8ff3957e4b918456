from collections import Counter

import pytest

from usersim.data_prep.pii import PLACEHOLDERS, scrub_text

POSITIVES = [
    ("write to john.doe+news@mail.example.co.uk today", "write to <EMAIL> today", "email"),
    ("me: A_B@x.io.", "me: <EMAIL>.", "email"),
    ("clone https://bob:hunter2@git.example.com/repo.git now", "clone <CREDENTIAL_URL> now", "credential_url"),
    ("GET https://api.example.com/v1/items?api_key=abc123&page=2", "GET <CREDENTIAL_URL>", "credential_url"),
    ("see http://x.org/cb?state=1&access_token=eyJhbGci", "see <CREDENTIAL_URL>", "credential_url"),
    ("link https://x.org/a?TOKEN=zzz", "link <CREDENTIAL_URL>", "credential_url"),
    ("server at 81.2.69.160 is down", "server at <IP> is down", "ip"),
    ("ping 8.8.8.8.", "ping <IP>.", "ip"),
    ("v6 2a00:1450:4001:0828:0000:0000:0000:200e ok", "v6 <IP> ok", "ip"),
    ("dns 2001:4860:4860::8888", "dns <IP>", "ip"),
    ("call +1 (555) 123-4567 now", "call <PHONE> now", "phone"),
    ("call 555-123-4567", "call <PHONE>", "phone"),
    ("or 555.123.4567.", "or <PHONE>.", "phone"),
    ("(555) 123 4567", "<PHONE>", "phone"),
    ("uk +44 20 7946 0958", "uk <PHONE>", "phone"),
]

NEGATIVES = [
    "on 2023-01-15 at 12:30 we met",
    "due 12/05/2024",
    "python 3.10.12 and v1.2.3.4 and 1.2.3",
    "it costs $1,000,000 or 1.000.000 EUR",
    "order id 1234567890",
    "pi is 3.14159",
    "std::vector<int> and a::b",
    "scores 10-20, 100 200 3000",
    "https://example.com/page?id=3&q=token",
    "the year 1999 and 2024",
    "email me at home (no address)",
    "room 101, floor 3, call ext. 4567",
    "ratio 16:9 at 10:30:45",
    "localhost 127.0.0.1, lan 192.168.1.1 and 10.0.0.7, mask 255.255.255.0, any 0.0.0.0",
    "docs 2001:0db8:85a3:0000:0000:8a2e:0370:7334 and fe80::1ff:fe23:4567:890a",
    "growth +14.6% and +26.2%",
]


@pytest.mark.parametrize("text,expected,kind", POSITIVES)
def test_scrubs_each_kind(text, expected, kind):
    counts = Counter()
    assert scrub_text(text, counts) == expected
    assert counts == Counter({kind: 1})


@pytest.mark.parametrize("text", NEGATIVES)
def test_leaves_ordinary_numbers_dates_versions_alone(text):
    counts = Counter()
    assert scrub_text(text, counts) == text
    assert not counts


def test_counts_every_occurrence_and_credential_url_is_not_an_email():
    counts = Counter()
    out = scrub_text("a@b.com, c@d.org and https://u:p@h.com and 93.184.216.34", counts)
    assert out == "<EMAIL>, <EMAIL> and <CREDENTIAL_URL> and <IP>"
    assert counts == Counter({"email": 2, "credential_url": 1, "ip": 1})


# Phone numbers in the national and international formats people type, emails with +tags, public
# IPv4 and credential URLs: each is one replacement of its kind.
MORE_POSITIVES = [
    ("call me on 555 123 4567 tonight", "call me on <PHONE> tonight", "phone"),
    ("555 123-4567", "<PHONE>", "phone"),
    ("cell: 555.123.4567", "cell: <PHONE>", "phone"),
    ("(555) 123-4567", "<PHONE>", "phone"),
    ("(555)123-4567", "<PHONE>", "phone"),
    ("toll free 1-800-555-0199 or 1 800 555 0199", "toll free <PHONE> or <PHONE>", "phone"),
    ("+1 555 123 4567", "<PHONE>", "phone"),
    ("+44 20 7946 0958", "<PHONE>", "phone"),
    ("+49 30 123456", "<PHONE>", "phone"),
    ("+33 1 23 45 67 89", "<PHONE>", "phone"),
    ("London 020 7946 0958.", "London <PHONE>.", "phone"),
    ("mobile 07700 900123", "mobile <PHONE>", "phone"),
    ("Paris 01 23 45 67 89", "Paris <PHONE>", "phone"),
    ("mail Jane.Doe+Promo@Example.COM now", "mail <EMAIL> now", "email"),
    ("bob+spam@gmail.com", "<EMAIL>", "email"),
    ("host 203.0.114.7:8080 is mine", "host <IP>:8080 is mine", "ip"),
    ("psql postgres://admin:s3cret@db.example.com:5432/app", "psql <CREDENTIAL_URL>", "credential_url"),
    ("https://user:pass@host", "<CREDENTIAL_URL>", "credential_url"),
]

MORE_NEGATIVES = [
    "in 2023 we moved",
    "order 12345678 has not arrived",
    "order #12345678, ref 2023-0042",
    "it was $19.99, now 24.50 EUR, or 1 299,00 kr",
    "meet at 10:45 or 18.30, back by 7 pm",
    "on 01.02.2023 and 15.12.2024",
    "zip 02139 and 90210",
    "buffers of 128 256 512 1024 bytes",
    "scores 100 200 3000",
    "ISBN 978-3-16-148410-0",
]


@pytest.mark.parametrize("text,expected,kind", MORE_POSITIVES)
def test_scrubs_common_phone_email_ip_and_url_formats(text, expected, kind):
    counts = Counter()
    assert scrub_text(text, counts) == expected
    assert counts == Counter({kind: expected.count(PLACEHOLDERS[kind])})


@pytest.mark.parametrize("text", MORE_NEGATIVES)
def test_leaves_years_order_ids_prices_and_times_alone(text):
    counts = Counter()
    assert scrub_text(text, counts) == text
    assert not counts
