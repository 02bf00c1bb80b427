from django.contrib.auth import views as auth_views
from django.urls import path

from console.views import audit, health, overview, settings_pages

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("health/", health.health, name="health"),
    path("health/rows/", health.health_rows, name="health-rows"),
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
