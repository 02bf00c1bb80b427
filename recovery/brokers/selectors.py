from __future__ import annotations

from django.db.models import QuerySet

from recovery.models import Broker


def broker_list() -> QuerySet[Broker]:
    return Broker.objects.order_by("name")
