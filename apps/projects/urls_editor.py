"""Routes of the editor part of the narration studio (see urls.py)."""

urlpatterns: list = []
