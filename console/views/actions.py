"""One shape for the POST buttons on an object's page (submit, approve, run now, ...): look the
object up, call one service, show its error or success message, go back to the object's page, or
to the page of what the service created (a run). The service checks the capability and four eyes;
a refusal becomes a 403, any other RecoveryError a message."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from recovery.errors import NotPermitted, RecoveryError
from recovery.permissions import Capability, capability_required


def object_action(
    model: type[Model], kwarg: str, detail: str, created: tuple[type[Model], str, str],
    call: Callable[[HttpRequest, Any], Any], success: str,
) -> Callable[..., HttpResponse]:  # fmt: skip
    """A view for ``detail`` (URL name taking ``kwarg``) that applies ``call`` to the object; when
    the service returns an instance of ``created[0]``, it redirects to ``created[1]`` with
    ``created[2]`` = its pk."""
    created_model, created_url, created_kwarg = created

    @require_POST
    @capability_required(Capability.VIEW)  # each service checks its own capability (and four eyes)
    def view(request: HttpRequest, **kwargs: int) -> HttpResponse:
        obj = get_object_or_404(model, pk=kwargs[kwarg])
        try:
            result = call(request, obj)
        except NotPermitted as exc:
            raise PermissionDenied(str(exc)) from None
        except RecoveryError as exc:
            messages.error(request, str(exc))
            return redirect(detail, **{kwarg: obj.pk})
        messages.success(request, success)
        if isinstance(result, created_model):
            return redirect(created_url, **{created_kwarg: result.pk})
        return redirect(detail, **{kwarg: obj.pk})

    return view
