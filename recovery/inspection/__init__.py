"""Reading one dead letter in full: its page (masked content, body display, classification,
runbooks, timeline) and its body download (issue 5, part 4; invariant 10)."""
