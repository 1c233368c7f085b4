"""Routes of the dictionaries part of the narration studio (see urls.py)."""

urlpatterns: list = []
