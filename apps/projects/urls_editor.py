"""Routes of the editor part of the narration studio (see urls.py): a chapter's page (blocks,
takes, the chapter player) and the actions on its blocks. Ids are public ids; a take is
named by its number."""

from django.urls import path

from . import views_editor as views

CHAPTER = "<str:project_id>/chapters/<str:chapter_id>/"
BLOCK = CHAPTER + "blocks/<str:block_id>/"

urlpatterns = [
    path(CHAPTER, views.chapter_page, name="chapter"),
    path(CHAPTER + "save/", views.chapter_save, name="chapter_save"),
    path(CHAPTER + "voices/", views.chapter_voices, name="chapter_voices"),
    path(CHAPTER + "blocks/new/", views.block_insert, name="block_insert_end"),
    path(BLOCK + "save/", views.block_save, name="block_save"),
    path(BLOCK + "settings/", views.block_settings, name="block_settings"),
    path(BLOCK + "split/", views.block_split, name="block_split"),
    path(BLOCK + "merge/", views.block_merge, name="block_merge"),
    path(BLOCK + "move/", views.block_move, name="block_move"),
    path(BLOCK + "insert/", views.block_insert, name="block_insert"),
    path(BLOCK + "delete/", views.block_delete, name="block_delete"),
    path(BLOCK + "takes/", views.block_takes, name="block_takes"),
    path(BLOCK + "takes/<int:take_id>/choose/", views.take_choose, name="take_choose"),
]
