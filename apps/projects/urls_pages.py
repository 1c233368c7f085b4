"""Routes of the pages part of the narration studio (see urls.py)."""

urlpatterns: list = []
