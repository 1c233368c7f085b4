"""Routes of the media part of the narration studio (see urls.py)."""

urlpatterns: list = []
