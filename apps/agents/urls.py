"""The agent pages (``/agents/``): agents, their versions and conversations, and knowledge."""

from django.urls import path

from . import views

app_name = "agents"

urlpatterns = [
    path("", views.agent_list, name="list"),
    path("new/", views.agent_new, name="new"),
    path("knowledge/", views.knowledge_list, name="knowledge"),
    path("knowledge/add/", views.knowledge_add, name="knowledge_add"),
    path("knowledge/<str:document_id>/", views.knowledge_document, name="document"),
    path("knowledge/<str:document_id>/delete/", views.knowledge_delete, name="knowledge_delete"),
    path("conversations/<str:conversation_id>/", views.conversation_detail, name="conversation"),
    path(
        "conversations/<str:conversation_id>/audio/<str:side>/",
        views.conversation_audio,
        name="conversation_audio",
    ),
    path("<str:agent_id>/", views.agent_detail, name="detail"),
    path("<str:agent_id>/edit/", views.agent_edit, name="edit"),
    path("<str:agent_id>/delete/", views.agent_delete, name="delete"),
    path("<str:agent_id>/versions/<int:number>/", views.agent_version, name="version"),
]
