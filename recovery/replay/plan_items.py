"""What an approver reads on a submitted plan: the breakdown of its frozen items (the dry run's
shape, computed from the items themselves, so it is what will run and not what the selection
holds now) and the items, paged and filtered.

Items show the letter's id, DLQ, category, disposition and failure class, never its body or
headers. The failure class is a masked field (recovery.masking.letters.MASKED_TEXT_FIELDS): it is
shown only through the reader's masker for the letter's DLQ, so a mask holds here as on the
letters list (fails closed: the masker is built per row's DLQ, with no unmasked default).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.core.paginator import Page, Paginator
from django.db.models import Count, QuerySet

from recovery.masking.letters import letter_masker
from recovery.models import Broker, Category, Disposition, PlanItem, PlanItemState, ReplayPlan
from recovery.replay import targets

ITEMS_PER_PAGE = 50


@dataclass
class FrozenBreakdown:
    included: int = 0
    excluded: int = 0
    by_category: list[tuple[str, int]] = field(default_factory=list)
    by_disposition: list[tuple[str, int]] = field(default_factory=list)
    exclusions: list[tuple[str, int]] = field(default_factory=list)
    targets: list[tuple[str, int]] = field(default_factory=list)


def frozen_breakdown(plan: ReplayPlan) -> FrozenBreakdown:
    """Counts of the plan's items: included/excluded, letters by category and disposition (as
    the letters are now), exclusion reasons, and included letters per described target."""
    items = PlanItem.objects.filter(plan=plan)
    result = FrozenBreakdown()
    counts = dict(items.values_list("state").annotate(n=Count("id")).order_by())
    result.included = counts.get(PlanItemState.INCLUDED, 0)
    result.excluded = counts.get(PlanItemState.EXCLUDED, 0)
    result.by_category = _counted(items, "letter__category")
    result.by_disposition = _counted(items, "letter__disposition")
    result.exclusions = _counted(items.filter(state=PlanItemState.EXCLUDED), "exclusion")
    names = dict(Broker.objects.values_list("id", "name"))
    described: Counter[str] = Counter()
    included = items.filter(state=PlanItemState.INCLUDED)
    for target, n in included.values_list("target").annotate(n=Count("id")).order_by():
        described[targets.describe(target, names)] += n
    result.targets = described.most_common()
    return result


def _counted(items: QuerySet, column: str) -> list[tuple[str, int]]:
    rows = items.values_list(column).annotate(n=Count("id")).order_by("-n", column)
    return [(value, n) for value, n in rows]


@dataclass(frozen=True)
class ItemFilter:
    """The item list's filters, from the query string (unknown values are ignored, not errors:
    a stale bookmark still shows the plan)."""

    state: str = ""
    category: str = ""
    disposition: str = ""
    exclusion: str = ""

    @classmethod
    def from_params(cls, params: Any) -> ItemFilter:
        state = params.get("item_state", "")
        category = params.get("item_category", "")
        disposition = params.get("item_disposition", "")
        return cls(
            state=state if state in PlanItemState.values else "",
            category=category if category in Category.values else "",
            disposition=disposition if disposition in Disposition.values else "",
            exclusion=params.get("item_exclusion", "")[:200],
        )

    def apply(self, items: QuerySet) -> QuerySet:
        if self.state:
            items = items.filter(state=self.state)
        if self.category:
            items = items.filter(letter__category=self.category)
        if self.disposition:
            items = items.filter(letter__disposition=self.disposition)
        if self.exclusion:
            items = items.filter(exclusion=self.exclusion)
        return items

    def as_params(self) -> dict[str, str]:
        pairs = {
            "item_state": self.state,
            "item_category": self.category,
            "item_disposition": self.disposition,
            "item_exclusion": self.exclusion,
        }
        return {k: v for k, v in pairs.items() if v}


@dataclass(frozen=True)
class ItemRow:
    item: PlanItem
    target: str
    failure: str  # the letter's error class, masked for the reader


def items_page(plan: ReplayPlan, item_filter: ItemFilter, page_number: Any, *, user: Any) -> tuple[Page, list[ItemRow]]:
    """One page of the plan's items in letter order, with each target described and each
    letter's failure class masked for ``user``."""
    items = item_filter.apply(
        PlanItem.objects.filter(plan=plan)
        .select_related("letter", "letter__dlq")
        .only(
            "state",
            "exclusion",
            "target",
            "target_source",
            "replay_again",
            "ordering_group",
            "ordering_position",
            "replay_id",
            "letter__id",
            "letter__category",
            "letter__disposition",
            "letter__error_class",
            "letter__state",
            "letter__dlq__name",
            "letter__dlq__mask_json_paths",
            "letter__dlq__mask_headers",
            "letter__dlq__mask_emails",
            "letter__dlq__mask_card_numbers",
        )  # fmt: skip
        .order_by("letter_id")
    )
    page = Paginator(items, ITEMS_PER_PAGE).get_page(page_number)
    names = dict(Broker.objects.values_list("id", "name"))
    rows = [
        ItemRow(
            item=i,
            target=targets.describe(i.target, names) if i.target else "",
            failure=letter_masker(i.letter, user).text(i.letter.error_class),
        )
        for i in page.object_list
    ]
    return page, rows
