from django.urls import path

from . import views

app_name = "transcripts"

urlpatterns = [
    path("", views.transcript_list, name="list"),
    path("new/", views.transcript_new, name="new"),
    path("live/", views.live_page, name="live"),
    path("live/start/", views.live_start, name="live_start"),
    path("<int:pk>/watch/", views.live_watch, name="watch"),
    path("<int:pk>/", views.transcript_detail, name="detail"),
    path("<int:pk>/progress/", views.transcript_progress, name="progress"),
    path("<int:pk>/media/", views.transcript_media, name="media"),
    path("<int:pk>/retry/", views.transcript_retry, name="retry"),
    path("<int:pk>/delete/", views.transcript_delete, name="delete"),
    path("<int:pk>/speakers/", views.speaker_rename, name="speaker_rename"),
    path("<int:pk>/p/<int:number>/", views.paragraph_edit, name="paragraph_edit"),
    path("<int:pk>/p/<int:number>/speaker/", views.paragraph_speaker, name="paragraph_speaker"),
    path("<int:pk>/p/<int:number>/split/", views.paragraph_split, name="paragraph_split"),
    path("<int:pk>/p/<int:number>/merge/", views.paragraph_merge, name="paragraph_merge"),
    path("<int:pk>/export/<str:fmt>/", views.transcript_export, name="export"),
]
