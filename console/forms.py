from __future__ import annotations

import json

from django import forms

from recovery.audit.export import AuditFilters
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


class DlqForm(forms.ModelForm):
    header_mapping = JsonField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    sources = JsonField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    class Meta:
        model = DeadLetterQueue
        fields = [
            "broker", "name", "address", "vhost", "consumer_group", "replay_target", "replay_routing_key",
            "capture_mode", "capture_interval", "capture_batch_size", "sources", "header_mapping", "enabled",
        ]  # fmt: skip

    def clean_header_mapping(self) -> dict:
        return self.cleaned_data.get("header_mapping") or {}

    def clean_sources(self) -> list:
        return self.cleaned_data.get("sources") or []
