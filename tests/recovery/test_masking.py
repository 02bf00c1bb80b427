"""The masker (issue 5, part 6): detectors, JSON paths, headers and bodies, what a masked value
still gives away, and invariant 10 (hostile input never makes it raise, and it stays fast)."""

from __future__ import annotations

import base64
import json
import time

import pytest

from recovery.masking import MASK, MAX_DEPTH, WITHHELD, JsonPathError, Masker, parse_json_path

CARD = "4111 1111 1111 1111"  # a Visa test number: passes Luhn
masker = Masker()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to alice@example.com now", f"write to {MASK} now"),
        ("<alice.o'hara+dlq@mail.example.co.uk>", f"<{MASK}>"),
        ("to: 'alice@example.com'", f"to: {MASK}'"),
        ("üser@exämple.de", MASK),
        ("not an address: alice@localhost or @example.com", "not an address: alice@localhost or @example.com"),
        (f"card {CARD} declined", f"card {MASK}1111 declined"),
        ("card 4111-1111-1111-1111.", f"card {MASK}1111."),
        ("4111111111111111", f"{MASK}1111"),
        ("amex 378282246310005", f"amex {MASK}0005"),
        ("19 digits 4222222222222222224", f"19 digits {MASK}2224"),
        ("card and cvv 4111111111111111 123", f"card and cvv {MASK}1111 123"),
        (f"expiry after {CARD} 12 27", f"expiry after {MASK}1111 12 27"),
        ("two 4111-1111-1111-1111-5555-5555-5555-4444", f"two {MASK}1111-{MASK}4444"),
        ("fails Luhn 4111 1111 1111 1112", "fails Luhn 4111 1111 1111 1112"),
        ("12 digits 411111111111", "12 digits 411111111111"),
        ("a long id 41111111111111111111234", "a long id 41111111111111111111234"),
        ("order 2024-01-31 12:00:05 id 17", "order 2024-01-31 12:00:05 id 17"),
        ("inside a word x4111111111111111y", f"inside a word x{MASK}1111y"),
        ("4111111111111111@example.com", MASK),
        ("", ""),
    ],
)
def test_text_masks_emails_and_card_numbers(text: str, expected: str) -> None:
    assert masker.text(text) == expected


def test_a_masked_value_gives_no_length_hint() -> None:
    short, long = masker.text("a@b.io"), masker.text("a.very.long.name.indeed@subdomain.example.com")
    assert short == long == MASK
    assert masker.text("4111-1111-1111-1111") == masker.text("4111111111111111") == f"{MASK}1111"
    assert masker.text("4222222222222222224") == f"{MASK}2224"  # 19 digits: same shape as 16
    assert masker.json({"s": "x", "l": ["y"] * 50, "o": {"a": 1}}) == {"s": "x", "l": ["y"] * 50, "o": {"a": 1}}
    paths = Masker(json_paths=["$.s", "$.l", "$.o"])
    assert paths.json({"s": "x" * 999, "l": [1, 2, 3], "o": {"a": 1}}) == {"s": MASK, "l": MASK, "o": MASK}


def test_a_run_of_digits_too_long_to_check_is_masked_whole() -> None:
    run = " ".join(["1234"] * 20)  # 80 digits joined by spaces
    assert masker.text(f"x {run} y") == f"x {MASK} y"


def test_detectors_can_be_turned_off() -> None:
    text = f"alice@example.com {CARD}"
    assert Masker(emails=False).text(text) == f"alice@example.com {MASK}1111"
    assert Masker(cards=False).text(text) == f"{MASK} {CARD}"
    assert Masker(emails=False, cards=False).text(text) == text


def test_an_unmasked_viewer_sees_everything_as_it_is() -> None:
    clear = Masker(json_paths=["$.a"], headers=["authorization"], unmasked=True)
    body = json.dumps({"a": "alice@example.com"}).encode()
    assert not clear.active
    assert clear.text(f"alice@example.com {CARD}") == f"alice@example.com {CARD}"
    assert clear.json({"a": 1}) == {"a": 1}
    assert clear.headers({"Authorization": "Bearer x"}) == {"Authorization": "Bearer x"}
    assert clear.body(body) is body


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.customer.email", (("key", "customer"), ("key", "email"))),
        ("$.items[*].card", (("key", "items"), ("any", None), ("key", "card"))),
        ("$.items[0]", (("key", "items"), ("index", 0))),
        ("$.items[-1]", (("key", "items"), ("index", -1))),
        ("$['odd key'].x", (("key", "odd key"), ("key", "x"))),
        ('$["it\'s"]', (("key", "it's"),)),
        ("$.*", (("any", None),)),
        ("$..password", (("deep", "password"),)),
        ("$..['pass word']", (("deep", "pass word"),)),
        ("$.a-b.c_d", (("key", "a-b"), ("key", "c_d"))),
    ],
)
def test_json_paths_parse(path: str, steps: tuple) -> None:
    assert parse_json_path(path) == steps


@pytest.mark.parametrize(
    "path",
    ["", "customer.email", "$.", "$..", "$.a..", "$.a[", "$.a[x]", "$.a[*", "$a", "$.a b", "$.a['x]", "$" + "a" * 400],
)
def test_bad_json_paths_are_refused(path: str) -> None:
    with pytest.raises(JsonPathError):
        parse_json_path(path)


DOCUMENT = {
    "customer": {"email": "alice@example.com", "name": "Alice", "phone": "+44 20 7946 0958"},
    "items": [{"sku": "A-1", "card": "4111111111111111"}, {"sku": "B-2", "card": {"last4": "1111"}}],
    "nested": {"deeper": {"password": "hunter2"}, "list": [{"password": 1}]},
    "note": "contact bob@example.org",
    "amount": 12.5,
    "pan": 4111111111111111,
    "count": 3,
    "ok": True,
    "none": None,
}


@pytest.mark.parametrize(
    ("paths", "expected_changes"),
    [
        ([], {"note": f"contact {MASK}", "pan": f"{MASK}1111", "items": [{"sku": "A-1", "card": f"{MASK}1111"},
                                                                         {"sku": "B-2", "card": {"last4": "1111"}}],
              "customer": {"email": MASK, "name": "Alice", "phone": "+44 20 7946 0958"}}),
        (["$.customer.name"], {"customer": {"email": MASK, "name": MASK, "phone": "+44 20 7946 0958"}}),
        (["$.items[*].card"], {"items": [{"sku": "A-1", "card": MASK}, {"sku": "B-2", "card": MASK}]}),
        (["$.items[1]"], {"items": [{"sku": "A-1", "card": f"{MASK}1111"}, MASK]}),
        (["$.items[-1].sku"], {"items": [{"sku": "A-1", "card": f"{MASK}1111"},
                                         {"sku": MASK, "card": {"last4": "1111"}}]}),
        (["$..password"], {"nested": {"deeper": {"password": MASK}, "list": [{"password": MASK}]}}),
        (["$.nested.*"], {"nested": {"deeper": MASK, "list": MASK}}),
        (["$.missing.path", "$.count"], {"count": MASK}),
        (["$"], None),
    ],
    ids=["detectors-only", "key", "wildcard", "index", "negative-index", "any-depth", "star", "missing", "root"],
)  # fmt: skip
def test_json_masks_paths_and_detects_in_every_string(paths: list[str], expected_changes: dict | None) -> None:
    masked = Masker(json_paths=paths).json(DOCUMENT)
    if expected_changes is None:
        assert masked == MASK
        return
    detectors = Masker().json(DOCUMENT)
    for key, value in expected_changes.items():
        assert masked[key] == value, key
    for key in set(DOCUMENT) - set(expected_changes):
        assert masked[key] == detectors[key], key
    assert DOCUMENT["customer"]["email"] == "alice@example.com"  # the input is not changed


def test_json_keys_are_masked_and_collisions_kept_apart() -> None:
    masked = masker.json({"alice@example.com": 1, "bob@example.com": 2, "x": 3})
    assert masked == {MASK: 1, f"{MASK} (2)": 2, "x": 3}


def test_json_deeper_than_the_limit_is_masked_below_it() -> None:
    deep: object = "alice@example.com"
    for _ in range(MAX_DEPTH + 50):
        deep = [deep]
    masked = masker.json(deep)
    depth = 0
    while isinstance(masked, list):
        masked, depth = masked[0], depth + 1
    assert masked == MASK and depth == MAX_DEPTH


def test_headers_named_are_masked_whole_at_any_depth_and_any_case() -> None:
    headers = {
        "Authorization": "Bearer abc",
        "x-customer": "alice@example.com",
        "x-death": [{"queue": "orders", "X-API-KEY": "k", "count": 2}],
        "x-binary": {"$base64": base64.b64encode(b"\xff\xfe card 4111111111111111").decode()},
        "x-plain": "nothing to see",
    }
    masked = Masker(headers=["authorization", "x-api-key"]).headers(headers)
    assert masked["Authorization"] == MASK
    assert masked["x-customer"] == MASK
    assert masked["x-death"] == [{"queue": "orders", "X-API-KEY": MASK, "count": 2}]
    assert base64.b64decode(masked["x-binary"]["$base64"]) == b"\xff\xfe card " + f"{MASK}1111".encode()
    assert masked["x-plain"] == "nothing to see"
    assert headers["Authorization"] == "Bearer abc"


def test_an_undecodable_base64_header_is_masked_whole() -> None:
    assert masker.headers({"h": {"$base64": "not base64!"}}) == {"h": {"$base64": MASK}}


@pytest.mark.parametrize(
    ("body", "expected", "kind"),
    [
        (b'{"customer": {"email": "x", "id": 7}}', {"customer": {"email": MASK, "id": 7}}, "json"),
        (b'  [{"customer": {"email": "x"}}]', [{"customer": {"email": "x"}}], "json"),
        (b"mail alice@example.com", f"mail {MASK}".encode(), "text"),
        (b"\xff\xfe\x00 alice@example.com 4111111111111111", b"\xff\xfe\x00 " + MASK.encode() + b" " +
         f"{MASK}1111".encode(), "binary"),
        (b'{"broken": "alice@example.com"', f'{{"broken": "{MASK}"'.encode(), "text"),
        (b"", b"", "empty"),
    ],
    ids=["json-path", "json-path-misses-list", "text", "binary", "broken-json", "empty"],
)  # fmt: skip
def test_bodies_are_masked_by_kind(body: bytes, expected: object, kind: str) -> None:
    m = Masker(json_paths=["$.customer.email"])
    parts = m.body_parts(body)
    assert parts.kind == kind
    out = m.body(body)
    assert (json.loads(out) if kind == "json" else out) == expected


def test_a_json_body_is_reserialised_with_unicode_kept() -> None:
    out = masker.body('{"name": "Zoë", "to": "zoë@example.com"}'.encode())
    assert json.loads(out) == {"name": "Zoë", "to": MASK} and "Zoë".encode() in out


def test_json_too_deep_to_parse_falls_back_to_the_text_detectors() -> None:
    body = ("[" * 10_000 + '"alice@example.com"' + "]" * 10_000).encode()
    parts = masker.body_parts(body)
    assert parts.kind == "text" and "alice@example.com" not in parts.value and MASK in parts.value


def test_json_too_deep_to_parse_is_withheld_when_the_dlq_masks_paths() -> None:
    body = ('{"secret": "s3cr3t", "x": ' + "[" * 10_000 + "]" * 10_000 + "}").encode()
    m = Masker(json_paths=["$.secret"])
    assert m.body_parts(body).kind == "withheld"
    assert m.body(body) == WITHHELD.encode()
    assert b"s3cr3t" not in m.body(body)


def test_a_display_limit_masks_what_straddles_it() -> None:
    body = b"x" * 95 + b" alice@example.com tail " + b"y" * 1000
    parts = masker.body_parts(body, limit=100)
    assert parts.kind == "text" and parts.truncated
    assert parts.value == "x" * 95 + " " + MASK
    binary = b"\xff" + b"x" * 94 + b" 4111111111111111 " + b"z" * 1000
    parts = masker.body_parts(binary, limit=100)
    assert parts.kind == "binary" and parts.value == b"\xff" + b"x" * 94 + b" " + f"{MASK}1111".encode()


def test_body_text_gives_a_masked_excerpt() -> None:
    m = Masker(json_paths=["$.email"])
    assert m.body_text(b'{"email": "e", "n": 1}', 12) == f'{{"email": "{MASK}'[:12]
    assert m.body_text(b"\xffab", 10) == "\ufffdab"


@pytest.mark.parametrize(
    "body",
    [
        b"x" * (10 * 1024 * 1024),
        b"1" * (10 * 1024 * 1024),
        b"1 " * (5 * 1024 * 1024),
        b"a@" * (5 * 1024 * 1024),
        b"a@" + b"a." * (5 * 1024 * 1024),
        b"\xff" + b"4111 1111 " * (1024 * 1024),
    ],
    ids=["letters", "digits", "spaced-digits", "at-signs", "long-domain", "binary-digits"],
)
@pytest.mark.timing  # a speed bound: measured alone, in the serial phase
def test_hostile_bodies_are_masked_in_linear_time(body: bytes) -> None:
    started = time.monotonic()
    masker.body(body)
    masker.body_parts(body, limit=64 * 1024)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "value",
    [None, 0, -1, 1.5, float("nan"), True, "", "\x00\ud800", [None], {"": {}}, {1: 2}, ("t", "u"), object()],
)
def test_structures_of_any_shape_never_raise(value: object) -> None:
    m = Masker(json_paths=["$.a", "$[0]"], headers=["a"])
    m.json(value)
    m.headers(value)
