from __future__ import annotations

from django import forms

from recovery.audit.export import AuditFilters
from recovery.models import AuditAction
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
