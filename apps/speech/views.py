"""The Speech page: text to speech in the studio."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.workspaces.access import workspace_view


@workspace_view()
@require_GET
def page(request):
    return render(request, "speech/page.html", {})
