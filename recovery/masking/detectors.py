"""The built-in detectors: e-mail addresses and card numbers (13-19 digits, single spaces or
dashes between them, passing Luhn). They return spans to replace, never raise, and run in linear
time on any input (a 10 MiB body of digits or of one long word included)."""

from __future__ import annotations

import re

MASK = "••••"
MAX_CARD_RUN_DIGITS = 64

# Linear-time patterns: a match may only start where the previous character cannot be part of it.
_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]"  # the characters of an address's local part (RFC 5322 atoms and dots)
_EMAIL = re.compile(rf"(?<!{_LOCAL}){_LOCAL}+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{{2,}}(?![\w-])")
# A maximal run of digit groups joined by single spaces or dashes, holding at least 13 digits.
_CARD_RUN = re.compile(r"(?=(?:[ -]?[0-9]){13})[0-9]+(?:[ -][0-9]+)*")
_DIGIT_GROUP = re.compile(r"[0-9]+")


def luhn(digits: str) -> bool:
    """The Luhn checksum of a string of ASCII digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_spans(run: str) -> list[tuple[int, int, str]]:
    """Spans of one run of digits (single spaces/dashes between them) to replace."""
    digits = run.replace(" ", "").replace("-", "")
    if len(digits) <= 19 and luhn(digits):
        return [(0, len(run), MASK + digits[-4:])]
    if len(digits) == len(run):
        return []  # one number without separators: a card only if the whole of it is one
    if len(digits) > MAX_CARD_RUN_DIGITS:
        return [(0, len(run), MASK)]
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(run)]
    windows: list[tuple[int, int, str]] = []
    first = 0
    while first < len(groups):
        count, best = 0, None
        for last in range(first, len(groups)):
            count += groups[last][1] - groups[last][0]
            if count > 19:
                break
            window = "".join(run[a:b] for a, b in groups[first : last + 1])
            if count >= 13 and luhn(window):
                best = last, window
        if best is None:
            first += 1
            continue
        last, window = best
        windows.append((groups[first][0], groups[last][1], MASK + window[-4:]))
        first = last + 1
    return windows


def spans(text: str, *, emails: bool, cards: bool) -> list[tuple[int, int, str]]:
    """(start, end, replacement) of every e-mail and card number in ``text``, sorted, disjoint."""
    found: list[tuple[int, int, str]] = []
    if emails and "@" in text:
        found.extend((m.start(), m.end(), MASK) for m in _EMAIL.finditer(text))
    if cards:
        for match in _CARD_RUN.finditer(text):
            found.extend((match.start() + a, match.start() + b, r) for a, b, r in _card_spans(match.group()))
    if emails and cards and found:
        found.sort()
        merged = [found[0]]
        for span in found[1:]:  # an e-mail can hold a card-like run: keep the outer span
            if span[0] < merged[-1][1]:
                if span[1] > merged[-1][1]:
                    merged[-1] = (merged[-1][0], span[1], MASK)
                continue
            merged.append(span)
        found = merged
    return found
