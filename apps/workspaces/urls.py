from django.urls import path

from . import views

app_name = "workspaces"

urlpatterns = [
    path("", views.home, name="home"),
    path("workspaces/new/", views.workspace_create, name="create"),
    path("workspaces/switch/", views.workspace_switch, name="switch"),
    path("workspaces/leave/", views.workspace_leave, name="leave"),
    path("settings/", views.workspace_settings, name="settings"),
    path("settings/export/", views.workspace_export, name="export"),
    path("settings/engine/", views.engine_settings, name="engine"),
    path("settings/engine/test/", views.engine_test, name="engine_test"),
    path("members/", views.members, name="members"),
    path("members/invite/", views.invitation_create, name="invite"),
    path("members/<int:pk>/role/", views.member_role, name="member_role"),
    path("members/<int:pk>/remove/", views.member_remove, name="member_remove"),
    path("invitations/<int:pk>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("audit/", views.audit_log, name="audit"),
]
