from django.contrib.auth import views as auth_views
from django.urls import path

from console.views import audit, brokers, health, letters, overview, settings_pages, triage

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("health/", health.health, name="health"),
    path("health/rows/", health.health_rows, name="health-rows"),
    path("letters/", triage.dead_letters, name="dead-letters"),
    path("letters/total/", triage.letters_total, name="letters-total"),
    path("letters/bulk/", triage.letters_bulk, name="letters-bulk"),
    path("letters/jobs/<int:job_id>/", triage.triage_job, name="triage-job"),
    path("groups/", triage.groups, name="groups"),
    path("groups/<str:fingerprint>/", triage.group_detail, name="group-detail"),
    path("groups/<str:fingerprint>/runbook/", triage.group_runbook, name="group-runbook"),
    path("runbooks/", triage.runbooks, name="runbooks"),
    path("runbooks/new/", triage.runbook_edit, name="runbook-new"),
    path("runbooks/<int:runbook_id>/", triage.runbook_edit, name="runbook-edit"),
    path("plans/", triage.plans, name="plans"),
    path("plans/from-selection/", triage.plan_from_selection, name="plan-from-selection"),
    path("plans/<int:plan_id>/", triage.plan_detail, name="plan-detail"),
    path("letters/<int:letter_id>/", letters.letter_detail, name="letter-detail"),
    path("letters/<int:letter_id>/body/", letters.letter_body, name="letter-body"),
    path("dlqs/<int:dlq_id>/", letters.dlq_detail, name="dlq-detail"),
    path("dlqs/<int:dlq_id>/depth/", letters.dlq_depth, name="dlq-depth"),
    path("dlqs/<int:dlq_id>/capture/", letters.capture_now, name="capture-now"),
    path("settings/brokers/new/", brokers.broker_edit, name="broker-new"),
    path("settings/brokers/<int:broker_id>/", brokers.broker_edit, name="broker-edit"),
    path("settings/brokers/<int:broker_id>/test/", brokers.broker_test, name="broker-test"),
    path("settings/brokers/<int:broker_id>/discover/", brokers.broker_discover, name="broker-discover"),
    path("settings/dlqs/new/", brokers.dlq_edit, name="dlq-new"),
    path("settings/dlqs/<int:dlq_id>/", brokers.dlq_edit, name="dlq-edit"),
    path("audit/", audit.audit_page, name="audit"),
    path("audit/export/", audit.audit_export, name="audit-export"),
    path("audit/verify/", audit.audit_verify, name="audit-verify"),
    path("audit/verification/", audit.audit_verification_status, name="audit-verification"),
    path("audit/history/<str:object_type>/<str:object_id>/", audit.object_history, name="audit-history"),
    path("settings/", settings_pages.settings_page, name="settings"),
    path("settings/users/<int:user_id>/roles/", settings_pages.user_roles_update, name="user-roles-update"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]

handler403 = "console.views.errors.permission_denied"
