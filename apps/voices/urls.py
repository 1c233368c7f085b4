from django.urls import path

from . import views, views_clone, views_design

app_name = "voices"

urlpatterns = [
    path("", views.library, name="library"),
    path("sync/", views.library_sync, name="sync"),
    path("<int:pk>/favourite/", views.favourite, name="favourite"),
    path("<int:pk>/", views.voice_detail, name="detail"),
    path("<int:pk>/preview/", views.voice_preview, name="preview"),
    path("<int:pk>/propose/", views.voice_propose, name="propose"),
    path("<int:pk>/review/", views.voice_review, name="review"),
    path("<int:pk>/notes/", views.note_add, name="note_add"),
    path("<int:pk>/tags/", views.tag_add, name="tag_add"),
    path("<int:pk>/tags/<int:tag_pk>/remove/", views.tag_remove, name="tag_remove"),
    path("<int:pk>/collections/", views.collection_add, name="collection_add"),
    path(
        "<int:pk>/collections/<int:collection_pk>/remove/",
        views.collection_remove,
        name="collection_remove",
    ),
    path("<int:pk>/try/", views_clone.try_voice, name="try"),
    path("<int:pk>/try/estimate/", views_clone.try_estimate, name="try_estimate"),
    # Voice Design
    path("design/", views_design.design_new, name="design_new"),
    path("designs/", views_design.design_history, name="designs"),
    path("designs/compare/", views_design.design_compare, name="design_compare"),
    path("designs/<int:pk>/", views_design.design_detail, name="design"),
    path("designs/<int:pk>/reproduce/", views_design.design_reproduce, name="design_reproduce"),
    path("designs/<int:pk>/save/", views_design.design_save, name="design_save"),
    path("designs/<int:pk>/vote/", views_design.vote_open, name="vote_open"),
    path("votes/<int:pk>/", views_design.vote_detail, name="vote"),
    path("votes/<int:pk>/option/<int:option>/", views_design.vote_listen, name="vote_listen"),
    path("votes/<int:pk>/ballot/", views_design.vote_cast, name="vote_cast"),
    path("votes/<int:pk>/close/", views_design.vote_close, name="vote_close"),
    # Cloning and consent
    path("clone/", views_clone.clone_new, name="clone"),
    path("consents/", views_clone.consent_register, name="consents"),
    path("consents/<int:pk>/renew/", views_clone.consent_renew, name="consent_renew"),
    path("consents/<int:pk>/samples/<int:number>/", views_clone.clone_sample, name="clone_sample"),
    path("policy/", views_clone.policy, name="policy"),
]
