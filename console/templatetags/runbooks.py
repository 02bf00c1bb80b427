"""``runbook_markdown``: a small, safe subset of markdown for runbooks.

Everything is escaped first; only then are a few constructs turned back into markup: headings
(``#``), bullet lists (``-`` / ``*``), paragraphs, ``**bold**``, ``*italic*``, ```code```, and links
``[text](url)`` whose URL is http(s). Raw HTML in a runbook stays text (invariant 10's rule
for anything an operator or a message can write: it is shown, never run).
"""

from __future__ import annotations

import re

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
_ITALIC = re.compile(r"(?<![*\w])\*([^*\n]+)\*(?![*\w])")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)\"'<>]+)\)")


def _inline(text: str) -> str:
    """Inline markup over already-escaped text."""
    text = _CODE.sub(r"<code>\1</code>", text)
    text = _BOLD.sub(r"<strong>\1</strong>", text)
    text = _ITALIC.sub(r"<em>\1</em>", text)
    return _LINK.sub(r'<a href="\2" rel="noopener noreferrer" target="_blank">\1</a>', text)


@register.filter
def runbook_markdown(source: str | None) -> SafeString:
    if not source:
        return mark_safe("")  # noqa: S308 - constant
    blocks: list[str] = []
    items: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            blocks.append("<p>" + "<br>".join(paragraph) + "</p>")
            paragraph.clear()
        if items:
            blocks.append("<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>")
            items.clear()

    for raw in str(source)[:100_000].splitlines():
        line = _inline(escape(raw.rstrip()))
        heading = re.match(r"^(#{1,4})\s+(.*)$", line)
        bullet = re.match(r"^\s*[-*]\s+(.*)$", line)
        if not line.strip():
            flush()
        elif heading:
            flush()
            level = len(heading.group(1)) + 2  # h3..h6 inside a page
            blocks.append(f"<h{level}>{heading.group(2)}</h{level}>")
        elif bullet:
            if paragraph:
                flush()
            items.append(bullet.group(1))
        else:
            if items:
                flush()
            paragraph.append(line)
    flush()
    return mark_safe("\n".join(blocks))  # noqa: S308 - built from escaped text only
