"""Periodic billing work: the reservation sweeper, the spend forecasts and anomaly rules, and
the forecast e-mail (the plan sync is the core's: ``generation.tasks``)."""

import logging
from datetime import timedelta

from celery import shared_task
from django.core.mail import send_mail
from django.utils import timezone

from apps.workspaces.models import Membership, Role, Workspace

from . import anomalies, forecast, services
from .models import ForecastNotice, SpendRollup
from .reconcile import reconcile_nightly  # noqa: F401 (registers the night task)

log = logging.getLogger(__name__)


@shared_task(name="billing.reservations_sweep", ignore_result=True)
def reservations_sweep() -> int:
    """Close reservations whose process died (flagged in the ledger): settled on the
    progress they recorded, failed at 0 without any."""
    swept = services.reservations_sweep()
    if swept:
        log.warning("swept %s stale usage reservations", swept)
    return swept


# --- The spend review: forecasts and anomalies (issue 16) ------------------------------------


@shared_task(name="billing.forecasts_check", ignore_result=True)
def forecasts_check() -> int:
    """Forecast every workspace with plan credits or a cap; tell managers of a crossing
    once per period (``forecast.forecast_notices_send``). The notices sent."""
    sent = 0
    for workspace in forecast.workspaces_to_forecast().iterator():
        try:
            sent += len(forecast.forecast_notices_send(workspace))
        except Exception:  # one workspace's failure does not stop the others
            log.exception("the forecast of workspace %s failed", workspace.pk)
    return sent


@shared_task(
    name="billing.forecast_notice_mail",
    ignore_result=True,
    autoretry_for=(OSError,),
    retry_backoff=True,
    max_retries=5,
)
def forecast_notice_mail(notice_id: int) -> int:
    """E-mail the managers a forecast notice (sent after the notice's commit); the number of
    recipients. Quietly nothing when the notice is gone."""
    notice = ForecastNotice.objects.select_related("workspace").filter(pk=notice_id).first()
    if notice is None:
        return 0
    emails = sorted(
        Membership.objects.filter(
            workspace=notice.workspace, role__in=[Role.OWNER, Role.MANAGER]
        ).values_list("user__email", flat=True)
    )
    if not emails:
        return 0
    # One message each: a manager's address is not shown to the others.
    subject = f"Chorus: {notice.workspace.name} is projected over its credits"
    text = forecast.notice_text(notice)
    for email in emails:
        send_mail(subject=subject, message=text, from_email=None, recipient_list=[email])
    return len(emails)


@shared_task(name="billing.anomalies_check", ignore_result=True)
def anomalies_check() -> int:
    """Run the spike and off-hours rules on every workspace with spend in the last days;
    the number of new flags."""
    since = timezone.now() - timedelta(days=anomalies.CHECK_DAYS + 1)
    raised = 0
    workspace_ids = (
        SpendRollup.objects.filter(hour__gte=since)
        .values_list("workspace_id", flat=True)
        .distinct()
        .order_by("workspace_id")
    )
    for workspace in Workspace.objects.filter(pk__in=list(workspace_ids)).order_by("pk"):
        try:
            raised += len(anomalies.anomalies_check(workspace))
        except Exception:
            log.exception("the anomaly check of workspace %s failed", workspace.pk)
    return raised
