"""The rule editor's form: the rule's fields, and its conditions as rows of field / op / name /
value (or, as a fallback, one JSON text). Turns rows into the condition JSON that
recovery.classification.rules validates; every mistake becomes a message naming the row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django import forms
from django.http import QueryDict

from recovery.classification.rules import AGE_SINCE, FIELD_LABELS, FIELD_OPS, validate_conditions
from recovery.errors import InvalidInput
from recovery.models import Category, ClassificationRule, DeadLetterQueue, Disposition, Runbook

OP_LABELS = {
    "in": "is one of", "eq": "equals", "ne": "differs from", "lt": "less than", "gt": "greater than",
    "gte": "at least", "lte": "at most", "regex": "matches regex", "exists": "exists", "not_utf8": "is not UTF-8",
    "not_json": "is not valid JSON", "older_than": "older than (s)", "younger_than": "younger than (s)",
}  # fmt: skip
EXTRA_ROWS = 2


class RuleForm(forms.ModelForm):
    conditions_json = forms.CharField(
        required=False,
        label="Conditions as JSON",
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="When not empty, this list replaces the rows above, e.g. "
        '[{"field": "error_class", "op": "regex", "value": "(?i)timeout"}]',
    )
    runbook = forms.ModelChoiceField(queryset=Runbook.objects.order_by("title"), required=False)

    class Meta:
        model = ClassificationRule
        fields = ["name", "description", "enabled", "category", "disposition", "runbook"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["category"].choices = Category.choices
        self.fields["disposition"].choices = Disposition.choices
        self.conditions: list[dict[str, Any]] = []

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        try:
            self.conditions = conditions_from_post(self.data)
        except InvalidInput as exc:
            self.add_error(None, str(exc))
        return cleaned

    def service_data(self) -> dict[str, Any]:
        data = {k: self.cleaned_data[k] for k in ("name", "description", "enabled", "category", "disposition")}
        data["runbook"] = self.cleaned_data.get("runbook")
        data["conditions"] = self.conditions
        return data


@dataclass(frozen=True)
class Row:
    field: str = ""
    op: str = ""
    name: str = ""
    value: str = ""


def _dlq_ids(text: str, index: int) -> list[int]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    found = dict(DeadLetterQueue.objects.filter(name__in=names).values_list("name", "pk"))
    ids = []
    for name in names:
        if name in found:
            ids.append(found[name])
        elif name.isdigit():
            ids.append(int(name))
        else:
            raise InvalidInput(f"condition {index} (dlq): no dead-letter queue named {name!r}")
    return ids


def _json_value(text: str) -> Any:
    """A JSON literal when the text is one (42, true, null, "42"), else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return text if isinstance(value, dict | list) else value


def _row_condition(row: Row, index: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"field": row.field, "op": row.op}
    if row.field == "dlq":
        condition["value"] = _dlq_ids(row.value, index)
    elif row.field == "header":
        condition["name"] = row.name
        if row.op != "exists":
            condition["value"] = row.value
    elif row.field == "body_json":
        condition["path"] = row.name
        if row.op != "exists":
            condition["value"] = row.value if row.op == "regex" else _json_value(row.value)
    elif row.field == "age":
        condition["value"] = row.value
        condition["since"] = row.name or "captured_at"
    elif row.field != "body":
        condition["value"] = row.value
    return condition


def conditions_from_post(data: QueryDict | dict[str, Any]) -> list[dict[str, Any]]:
    """The validated conditions of a posted editor: the JSON text when given, else the rows
    (rows without a field are blank and skipped). InvalidInput names the bad condition."""
    text = (data.get("conditions_json") or "").strip()
    if text:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidInput(f"conditions JSON: {exc}") from None
        return validate_conditions(raw)
    getlist = data.getlist if isinstance(data, QueryDict) else (lambda key: data.get(key, []))
    columns = [getlist(key) for key in ("cond_field", "cond_op", "cond_name", "cond_value")]
    rows = [Row(*(c.strip() for c in values)) for values in zip(*columns, strict=False)]
    conditions = []
    for row in rows:
        if row.field:
            conditions.append(_row_condition(row, len(conditions) + 1))
    return validate_conditions(conditions)


def rows_from_conditions(conditions: list[dict[str, Any]]) -> list[Row]:
    """Editor rows for stored conditions, plus blank rows to add more."""
    names = dict(DeadLetterQueue.objects.values_list("pk", "name"))
    rows = []
    for c in conditions:
        value = c.get("value", "")
        if c["field"] == "dlq":
            value = ", ".join(names.get(pk, str(pk)) for pk in value)
        elif c["field"] == "body_json" and c["op"] != "regex":
            value = value if isinstance(value, str) and _json_value(value) == value else json.dumps(value)
        name = c.get("name") or c.get("path") or (c.get("since") if c["field"] == "age" else "") or ""
        rows.append(Row(c["field"], c["op"], name, str(value)))
    return rows + [Row()] * EXTRA_ROWS


def editor_choices() -> dict[str, Any]:
    """What the row widgets offer."""
    return {
        "field_choices": list(FIELD_LABELS.items()),
        "op_choices": [(op, OP_LABELS[op]) for op in dict.fromkeys(o for ops in FIELD_OPS.values() for o in ops)],
        "field_ops": {name: [OP_LABELS[o] for o in ops] for name, ops in FIELD_OPS.items()},
        "age_since": AGE_SINCE,
    }
