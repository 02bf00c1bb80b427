from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from console.forms import UserRolesForm
from recovery.accounts.selectors import user_list_with_roles
from recovery.accounts.services import user_roles_set
from recovery.brokers.selectors import broker_list
from recovery.errors import RecoveryError
from recovery.models import DeadLetterQueue
from recovery.permissions import Capability, capability_required


@capability_required(Capability.MANAGE)
def settings_page(request: HttpRequest) -> HttpResponse:
    from django.conf import settings

    return render(
        request,
        "console/settings.html",
        {
            "users": user_list_with_roles(),
            "brokers": broker_list(),
            "dlqs": DeadLetterQueue.objects.select_related("broker").order_by("name"),
            "role_form": UserRolesForm(),
            "runtime": {
                "Job backend": settings.RECOVERY_JOB_BACKEND,
                "Scheduler interval": f"{settings.RECOVERY_SCHEDULER_INTERVAL} s",
                "HTTPS only": "yes" if settings.HTTPS_ONLY else "no",
                "Debug": "on" if settings.DEBUG else "off",
            },
        },
    )


@require_POST
@capability_required(Capability.MANAGE)
def user_roles_update(request: HttpRequest, user_id: int) -> HttpResponse:
    target = get_object_or_404(get_user_model(), pk=user_id)
    form = UserRolesForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Roles not changed: {form.errors.as_text()}")
        return redirect("settings")
    try:
        user_roles_set(actor=request.user, user=target, roles=form.cleaned_data["roles"])
    except RecoveryError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Roles of {target.get_username()} updated.")
    return redirect("settings")
