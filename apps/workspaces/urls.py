from django.urls import path

from . import views

app_name = "workspaces"

urlpatterns = [
    path("workspaces/new/", views.workspace_create, name="create"),
    path("workspaces/switch/", views.workspace_switch, name="switch"),
    path("workspaces/leave/", views.workspace_leave, name="leave"),
    path("members/", views.members, name="members"),
    path("members/invite/", views.invitation_create, name="invite"),
    path("members/<int:pk>/role/", views.member_role, name="member_role"),
    path("members/<int:pk>/role/undo/", views.member_role_undo, name="member_role_undo"),
    path("members/<int:pk>/remove/", views.member_remove, name="member_remove"),
    path("invitations/<int:pk>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("audit/", views.audit_log, name="audit"),
]
