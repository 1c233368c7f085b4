"""Routes of the exports part of the narration studio (see urls.py)."""

urlpatterns: list = []
