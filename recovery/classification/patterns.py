r"""Regular expressions written by operators, made safe to run on hostile text (invariant 10).

Python's ``re`` has no time limit and backtracks, so a pattern is checked before it is saved.
Refused, with a message saying how to rewrite it:

- an unbounded repetition inside another: ``(a+)+``, ``(\w+\s?)*`` (exponential);
- a repeated alternation whose branches can start alike: ``(a|ab)*`` (exponential);
- two unbounded repetitions that can match the same characters with nothing between them but
  what they can both match: ``a*a*b``, ``\w+\d*``, ``x.*y.*z`` (cubic: ``x.*x.*y`` takes 8 s on
  4,000 "x"); bounded ones are fine: ``order .{0,200} failed .* timeout``;
- more than three unbounded repetitions in all.

A leading or trailing ``.*`` is dropped first (``search`` makes it redundant). What stays is at
worst quadratic, so ``search`` never lets a pattern see more than ``WINDOW`` characters: 16 KiB,
where a quadratic pattern takes ~0.1 s (64 KiB would take ~2 s per letter). Compiled patterns
are cached, so a rule applied to a million letters compiles once.

Case-insensitive patterns (a leading ``(?i)``, the usual way to write a rule) are slow in ``re``:
every position tries every branch in both cases. When it is safe, such a pattern also gets a
lower-cased, case-sensitive twin that runs on the lower-cased text (which a letter computes once
for all rules): about ten times faster, same answers for all practical text.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import lru_cache
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

WINDOW = 16 * 1024  # characters of a text that a pattern sees at most
MAX_PATTERN = 1000
MAX_UNBOUNDED = 3
_BIG = 16  # a repetition allowing more than this many turns counts as unbounded
_NESTED = (
    "a repetition inside a repetition (like (a+)+) can take exponential time on some input; "
    "rewrite it without the inner quantifier, or make it possessive (a++) or atomic ((?>a+))"
)
_AMBIGUOUS = (
    "a repeated alternation whose branches can start with the same character (like (a|ab)*) can take "
    "exponential time; make the branches start differently or the group atomic ((?>...))"
)
_ADJACENT = (
    "two unbounded repetitions that can match the same text with nothing else between them (like a*a*, "
    "\\w+\\d* or x.*y.*z) can take polynomial time on long text; merge them, bound one (.{0,200}) or make "
    "the first possessive (.*+)"
)
_TOO_MANY = (
    f"more than {MAX_UNBOUNDED} unbounded repetitions (*, +, {{n,}}) can take polynomial time on long text; "
    "use fewer, or bound them ({0,200})"
)
_DOT_STAR = re.compile(r"^(\(\?i\))?\.\*\??|(?<!\\)\.\*\??$")
# Characters that stand for the classes a single-character pattern item can match.
_SAMPLE = string.printable + "\x00\x7f\u00a0\u00e9\u00c9\u4e2d\u2028\u0660"
_ANY = frozenset(_SAMPLE)
_CATEGORIES = {
    sre.CATEGORY_DIGIT: str.isdecimal,
    sre.CATEGORY_NOT_DIGIT: lambda c: not c.isdecimal(),
    sre.CATEGORY_SPACE: str.isspace,
    sre.CATEGORY_NOT_SPACE: lambda c: not c.isspace(),
    sre.CATEGORY_WORD: lambda c: c.isalnum() or c == "_",
    sre.CATEGORY_NOT_WORD: lambda c: not (c.isalnum() or c == "_"),
}


class UnsafePattern(ValueError):
    """The pattern does not compile, is too long, or could backtrack without end."""


def _big(high: int) -> bool:
    return high == sre.MAXREPEAT or high > _BIG


def _in_set(items: Any, char: str) -> bool:
    negate, found = False, False
    for op, arg in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            found = found or ord(char) == arg
        elif op is sre.RANGE:
            found = found or arg[0] <= ord(char) <= arg[1]
        elif op is sre.CATEGORY:
            found = found or _CATEGORIES.get(arg, lambda _c: True)(char)
        else:
            return True  # unknown: assume it matches
    return found != negate


def _chars(item: tuple[Any, Any], ignore_case: bool) -> frozenset[str]:
    """The sample characters a single-character item matches (all of them when not simple)."""
    op, arg = item
    if op is sre.LITERAL:
        test = lambda c: ord(c) == arg  # noqa: E731
    elif op is sre.NOT_LITERAL:
        test = lambda c: ord(c) != arg  # noqa: E731
    elif op is sre.ANY:
        test = lambda c: c != "\n"  # noqa: E731
    elif op is sre.IN:
        test = lambda c: _in_set(arg, c)  # noqa: E731
    else:
        return _ANY
    if ignore_case:
        return frozenset(c for c in _SAMPLE if test(c) or test(c.lower()) or test(c.upper()))
    return frozenset(c for c in _SAMPLE if test(c))


def _ambiguous(items: Any) -> bool:
    """Whether a repeated body holds an alternation whose branches do not all start with
    different literal characters (sre_parse already turns (a|b) into a set and factors (ab|ac))."""
    for op, arg in items:
        if op is sre.SUBPATTERN and _ambiguous(arg[-1]):
            return True
        if op is sre.BRANCH:
            firsts = [branch[0] if len(branch) else (None, None) for branch in arg[1]]
            if any(first[0] is not sre.LITERAL for first in firsts):
                return True
            if len({first[1] for first in firsts}) != len(firsts):
                return True
    return False


class _Check:
    """One walk over the parsed pattern, counting unbounded repetitions."""

    def __init__(self, ignore_case: bool) -> None:
        self.ignore_case = ignore_case
        self.unbounded = 0

    def sequence(self, items: Any, inside: bool) -> str | None:
        pending: list[frozenset[str]] = []  # what the unbounded repetitions since the last separator match
        for op, arg in items:
            if op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
                low, high, sub = arg
                if _big(high):
                    if inside:
                        return _NESTED
                    if _ambiguous(sub):
                        return _AMBIGUOUS
                if high == sre.MAXREPEAT:
                    self.unbounded += 1
                    chars = _chars(sub[0], self.ignore_case) if len(sub) == 1 else _ANY
                    if any(chars & seen for seen in pending):
                        return _ADJACENT
                    if low:  # at least one character none of the pending ones can take
                        pending.clear()
                    pending.append(chars)
                elif low and len(sub) == 1:
                    self._separate(pending, sub[0])
                problem = self.sequence(sub, inside or _big(high))
            elif op is sre.SUBPATTERN:
                problem = self.sequence(arg[-1], inside)
            elif op is sre.BRANCH:
                problem = next((p for p in (self.sequence(b, inside) for b in arg[1]) if p), None)
            elif op in (sre.ASSERT, sre.ASSERT_NOT):
                problem = self.sequence(arg[1], inside)
            elif op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
                self._separate(pending, (op, arg))
                problem = None
            else:  # anchors, atomic groups, possessive repetitions: nothing to backtrack into
                problem = None
            if problem:
                return problem
        return _TOO_MANY if self.unbounded > MAX_UNBOUNDED else None

    def _separate(self, pending: list[frozenset[str]], item: tuple[Any, Any]) -> None:
        """A mandatory character ends the run of repetitions when it matches nothing they match."""
        if not any(_chars(item, self.ignore_case) & seen for seen in pending):
            pending.clear()


# Escapes kept as they are (\D is not \d); any other escape that is a letter or digit (\x41, \N{...},
# \1, \p) keeps the pattern off the lower-case path.
_CASELESS_ESCAPES = frozenset("bdswBDSWAZntrfv")


def _lowered(pattern: str) -> re.Pattern[str] | None:
    """The case-sensitive twin of a ``(?i)...`` pattern for lower-cased text, or None."""
    if not pattern.startswith("(?i)") or "(?-" in pattern[4:] or "(?i" in pattern[4:]:
        return None
    out, index, body = [], 0, pattern[4:]
    while index < len(body):
        char = body[index]
        if char == "\\":
            following = body[index + 1 : index + 2]
            if following.isalnum() and following not in _CASELESS_ESCAPES:
                return None
            out.append(body[index : index + 2])
            index += 2
            continue
        out.append(char.lower())
        index += 1
    try:
        return re.compile("".join(out))
    except re.error:
        return None


@dataclass(frozen=True)
class Pattern:
    regex: re.Pattern[str]
    lowered: re.Pattern[str] | None  # for lower-cased text, when the pattern ignores case


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Pattern:
    """The compiled pattern, or UnsafePattern saying what is wrong with it."""
    if len(pattern) > MAX_PATTERN:
        raise UnsafePattern(f"the pattern is longer than {MAX_PATTERN} characters")
    try:
        re.compile(pattern)
        pattern = _DOT_STAR.sub(lambda m: m.group(1) or "", pattern) or pattern
        compiled = re.compile(pattern)
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise UnsafePattern(f"not a valid regular expression: {exc}") from None
    problem = _Check(bool(parsed.state.flags & re.IGNORECASE)).sequence(parsed, inside=False)
    if problem:
        raise UnsafePattern(problem)
    return Pattern(compiled, _lowered(pattern))


def search(pattern: Pattern, text: str, lowered: str | None = None) -> bool:
    """Whether ``pattern`` occurs in the first WINDOW characters of ``text`` (``lowered``:
    ``text.lower()`` when the caller has it already)."""
    if pattern.lowered is not None:
        if lowered is None:
            lowered = text[:WINDOW].lower()
        return pattern.lowered.search(lowered if len(lowered) <= WINDOW else lowered[:WINDOW]) is not None
    return pattern.regex.search(text if len(text) <= WINDOW else text[:WINDOW]) is not None
