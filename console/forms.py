from __future__ import annotations

import json

from django import forms

from recovery.audit.export import AuditFilters
from recovery.masking import JsonPathError, parse_json_path
from recovery.masking.paths import MAX_PATHS
from recovery.models import AuditAction, Broker, DeadLetterQueue
from recovery.permissions import Role


class UserRolesForm(forms.Form):
    roles = forms.MultipleChoiceField(choices=Role.choices, required=False, widget=forms.CheckboxSelectMultiple)


class AuditFilterForm(forms.Form):
    """Filters of the audit page, also carried by its export buttons."""

    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    actor = forms.CharField(required=False, max_length=150)
    action = forms.ChoiceField(required=False, choices=[("", "any action"), *AuditAction.choices])
    object_type = forms.CharField(required=False, max_length=60)
    object_id = forms.CharField(required=False, max_length=64)

    def filters(self) -> AuditFilters:
        data = self.cleaned_data if self.is_bound and self.is_valid() else {}
        return AuditFilters(
            since=data.get("since"),
            until=data.get("until"),
            actor=data.get("actor", ""),
            action=data.get("action", ""),
            object_type=data.get("object_type", ""),
            object_id=data.get("object_id", ""),
        )


class JsonField(forms.JSONField):
    """A JSON text area that shows the value as indented JSON."""

    def prepare_value(self, value: object) -> str:
        if isinstance(value, str):
            return value
        return json.dumps(value, indent=2) if value not in (None, "") else ""


class BrokerForm(forms.ModelForm):
    options = JsonField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    class Meta:
        model = Broker
        fields = ["name", "kind", "endpoint", "credentials_ref", "options", "enabled"]

    def clean_options(self) -> dict:
        value = self.cleaned_data.get("options") or {}
        if not isinstance(value, dict):
            raise forms.ValidationError("options must be a JSON object")
        secretish = [k for k in value if any(w in k.lower() for w in ("password", "secret", "token", "key_id"))]
        if secretish:
            raise forms.ValidationError(
                f"options hold no secrets ({', '.join(secretish)}): use the credentials reference instead"
            )
        return value


class LinesField(forms.CharField):
    """A list of strings edited as a text area, one per line (blank lines and repeats dropped)."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3}))
        super().__init__(strip=False, **kwargs)  # type: ignore[arg-type]

    def prepare_value(self, value: object) -> object:
        return "\n".join(str(v) for v in value) if isinstance(value, list | tuple) else value

    def to_python(self, value: object) -> list[str]:  # type: ignore[override]
        text = super().to_python(value) or ""
        return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


class DlqForm(forms.ModelForm):
    header_mapping = JsonField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    sources = JsonField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    mask_json_paths = LinesField(
        required=False,
        label="Masked body fields",
        help_text="JSON paths, one per line: $.customer.email, $.items[*].card, $.list[0], $['odd key'], "
        "$..password (at any depth). Shown as •••• to users without the unmask grant.",
    )
    mask_headers = LinesField(
        required=False,
        label="Masked headers",
        help_text="header (and broker property) names, one per line, any case; their values are masked whole",
    )

    class Meta:
        model = DeadLetterQueue
        fields = [
            "broker", "name", "address", "vhost", "consumer_group", "replay_target", "replay_routing_key",
            "capture_mode", "capture_interval", "capture_batch_size", "sources", "header_mapping", "enabled",
            "mask_json_paths", "mask_headers", "mask_emails", "mask_card_numbers",
        ]  # fmt: skip

    def clean_header_mapping(self) -> dict:
        return self.cleaned_data.get("header_mapping") or {}

    def clean_sources(self) -> list:
        return self.cleaned_data.get("sources") or []

    def clean_mask_json_paths(self) -> list[str]:
        paths = self.cleaned_data.get("mask_json_paths") or []
        errors = []
        for number, path in enumerate(paths, start=1):
            try:
                parse_json_path(path)
            except JsonPathError as exc:
                errors.append(f"line {number}: {exc}")
        if len(paths) > MAX_PATHS:
            errors.append(f"at most {MAX_PATHS} paths")
        if errors:
            raise forms.ValidationError(errors)
        return paths

    def clean_mask_headers(self) -> list[str]:
        names = self.cleaned_data.get("mask_headers") or []
        if len(names) > MAX_PATHS or any(len(name) > 200 for name in names):
            raise forms.ValidationError(f"at most {MAX_PATHS} names of at most 200 characters")
        return names
