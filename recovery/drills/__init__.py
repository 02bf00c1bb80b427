"""Scheduled recovery drills (issue 7): exercise capture, classification, replay and
verification end to end on a drill queue pair. See docs/drills.md."""
