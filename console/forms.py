from __future__ import annotations

from django import forms

from recovery.permissions import Role


class UserRolesForm(forms.Form):
    roles = forms.MultipleChoiceField(
        choices=Role.choices, required=False, widget=forms.CheckboxSelectMultiple
    )
