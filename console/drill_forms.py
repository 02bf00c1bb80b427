"""The drill definition form (create and edit). It only checks types; what a drill may hold
(a cron expression that fires, a scenario with messages, a drill queue pair unless an admin chose
otherwise) is decided by recovery.drills.validation inside the services, whose DrillInvalid names
the field: ``refuse`` puts that message on the field, so the form comes back with it and nothing
is saved."""

from __future__ import annotations

from typing import Any

from django import forms

from console.forms import JsonField
from recovery.drills.errors import DrillInvalid
from recovery.errors import RecoveryError
from recovery.models import Broker

QUEUE_CHOICE_FIELDS = ("allow_non_drill_queue", "non_drill_queue_reason")
SCENARIO_FIELDS = ("message_count", "transient_count", "poison_count", "consumer_recovers")
EXPECTATION_FIELDS = ("max_capture_seconds", "max_recover_seconds", "timeout_seconds")
TEMPLATE_FIELDS = ("rate_per_second", "batch_size", "workers", "verifications", "stop_conditions")


def _number(label: str, help_text: str = "") -> forms.IntegerField:
    return forms.IntegerField(label=label, help_text=help_text, widget=forms.NumberInput(attrs={"min": 0}))


class DrillForm(forms.Form):
    name = forms.CharField(max_length=50, help_text="a short slug: letters, digits, '-' or '_'")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    broker = forms.ModelChoiceField(queryset=Broker.objects.order_by("name"), empty_label="choose a broker")
    work_queue = forms.CharField(
        required=False, max_length=200, label="Work queue or topic",
        help_text="blank: drill-<name>-work; the drill creates its queues when missing",
    )  # fmt: skip
    dead_letter_queue = forms.CharField(
        required=False, max_length=200, label="Dead-letter queue or topic", help_text="blank: drill-<name>-dlq"
    )
    allow_non_drill_queue = forms.BooleanField(
        required=False, label="Use a queue that is not a drill queue (admin only: an explicit choice, with a reason)"
    )
    non_drill_queue_reason = forms.CharField(
        required=False, label="Why this drill may use them", widget=forms.Textarea(attrs={"rows": 2})
    )
    message_count = _number("Messages injected (N)")
    transient_count = _number("Of which fail transiently (T)", "failed until replayed: the replay must recover them")
    poison_count = _number("Of which are poison (P)", "always fail: they must be held, never replayed")
    consumer_recovers = forms.BooleanField(
        required=False, initial=True, label="The consumer recovers",
        help_text="off: the consumer stays broken and the drill must fail",
    )  # fmt: skip
    schedule = forms.CharField(
        max_length=100, label="Schedule (cron, UTC)",
        help_text="five fields: minute hour day month weekday, e.g. */30 * * * * or 15 3 * * 1",
    )  # fmt: skip
    enabled = forms.BooleanField(
        required=False, initial=True, label="Scheduled", help_text="off: the schedule pauses; Run now still works"
    )
    max_capture_seconds = _number("Expected time to capture (s)")
    max_recover_seconds = _number("Expected time to recover (s)")
    timeout_seconds = _number("Timeout (s)", "a run taking longer fails at the step it is in")
    rate_per_second = _number("Replay rate (messages per second)")
    batch_size = _number("Batch size")
    workers = _number("Workers")
    verifications = JsonField(
        required=False, label="Verification steps (JSON)", widget=forms.Textarea(attrs={"rows": 3}),
        help_text='e.g. [{"step": "no_redeadletter_within", "seconds": 5}]',
    )  # fmt: skip
    stop_conditions = JsonField(
        required=False, label="Stop conditions (JSON)", widget=forms.Textarea(attrs={"rows": 3}),
        help_text='e.g. [{"condition": "publish_error_rate", "max_percent": 10, "window_s": 60}]',
    )  # fmt: skip
    alert_webhook_url = forms.CharField(
        required=False, max_length=500, label="Alert webhook (optional)",
        help_text="a failing run POSTs its outcome here as JSON",
    )  # fmt: skip

    def __init__(self, *args: Any, can_choose_queue: bool = False, **kwargs: Any) -> None:
        """``can_choose_queue``: the user is an admin, the only one offered the non-drill-queue choice."""
        super().__init__(*args, **kwargs)
        if not can_choose_queue:
            for name in QUEUE_CHOICE_FIELDS:
                del self.fields[name]

    def groups(self) -> list[tuple[str, list[forms.BoundField]]]:
        """The fields in the sections the template shows."""
        placed = {*SCENARIO_FIELDS, *EXPECTATION_FIELDS, *TEMPLATE_FIELDS}
        sections = [
            ("Drill", [n for n in self.fields if n not in placed]),
            ("Scenario", list(SCENARIO_FIELDS)),
            ("Expected outcomes (also: no message lost, no unexplained duplicate)", list(EXPECTATION_FIELDS)),
            ("Replay plan template (what the approver approves)", list(TEMPLATE_FIELDS)),
        ]
        return [(title, [self[name] for name in names if name in self.fields]) for title, names in sections]

    def service_data(self) -> dict[str, Any]:
        """The cleaned values as the drill services take them (only the fields this user was offered)."""
        data = dict(self.cleaned_data)
        for name in ("verifications", "stop_conditions"):
            data[name] = data.get(name) or []
        return data

    def refuse(self, exc: RecoveryError) -> None:
        """Show a service's refusal: on the field it names, else above the form."""
        if isinstance(exc, DrillInvalid) and exc.field in self.fields:
            self.add_error(exc.field, str(exc).removeprefix(f"{exc.field}: "))
        else:
            self.add_error(None, str(exc))
