"""The transcripts pages speak human: durations as clocks, language names with their certainty,
the Export menu, the language picker, empty states per role (issue 14)."""

import pytest
from django.urls import reverse

from apps.transcripts.models import Transcript
from tests.transcripts.test_editor import make_transcript


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def page(client, name, *args) -> str:
    response = client.get(reverse(name, args=args))
    assert response.status_code == 200
    return response.content.decode()


def test_a_transcript_shows_a_clock_and_a_language_name(client_as, viewer, workspace, member):
    transcript = make_transcript(workspace, member)
    Transcript.objects.filter(pk=transcript.pk).update(duration_seconds=3.87977)
    html = page(client_as(viewer), "transcripts:detail", transcript.pk)
    assert "<span data-length>0:04</span>" in html
    assert "<span data-language>English (97% sure)</span>" in html
    assert "en (0.97)" not in html and "3.9 s" not in html


def test_the_list_shows_clocks_and_language_names(client_as, viewer, workspace, member):
    make_transcript(workspace, member)
    html = page(client_as(viewer), "transcripts:list")
    row = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert "<td>0:14</td>" in row and "<td>English</td>" in row
    assert " s</td>" not in row and "<td>en</td>" not in row


def test_the_export_menu_is_a_menu_of_downloads(client_as, viewer, workspace, member):
    transcript = make_transcript(workspace, member)
    html = page(client_as(viewer), "transcripts:detail", transcript.pk)
    menu = html.split('<details class="dropdown" data-menu data-export-menu>', 1)[1]
    menu = menu.split("</details>", 1)[0]
    assert '<summary class="button ghost">Export</summary>' in menu
    assert '<ul class="dropdown-list" aria-label="Export formats">' in menu
    url = reverse("transcripts:export", args=[transcript.pk, "srt"])
    assert f'<a href="{url}" download>SubRip captions (.srt)</a>' in menu


def test_entities_are_named_not_coded(client_as, viewer, workspace, member):
    transcript = make_transcript(workspace, member)
    Transcript.objects.filter(pk=transcript.pk).update(
        entities=[{"text": "ada@example.com", "entity_type": "email_address"}]
    )
    html = page(client_as(viewer), "transcripts:detail", transcript.pk)
    assert "1 entity detected" in html and "Email address" in html
    assert "email_address" not in html


def test_the_live_page_picks_a_language_by_name(client_as, member):
    html = page(client_as(member), "transcripts:live")
    assert '<select name="language_code" id="live-language" class="language-select"' in html
    assert '<option value="de">German</option>' in html
    assert '<option value="" selected>Detect automatically</option>' in html
    assert 'maxlength="3"' not in html


def test_the_upload_form_picks_a_language_and_refuses_an_unknown_one(client_as, member):
    client = client_as(member)
    html = page(client, "transcripts:new")
    assert '<option value="fr">French</option>' in html
    assert 'aria-describedby="id_language_code_helptext"' in html
    refused = client.post(reverse("transcripts:new"), {"language_code": "xx"})
    body = refused.content.decode()
    assert refused.status_code == 400
    assert "Choose a language from the list." in body and 'aria-invalid="true"' in body
    assert 'id="id_language_code_error"' in body


def test_the_language_field_takes_a_region_as_its_language():
    from apps.transcripts.forms import UploadForm

    form = UploadForm({"language_code": "en-GB", "tag_audio_events": "on"})
    assert form.is_valid(), form.errors
    assert form.options().language_code == "en"
    empty = UploadForm({"language_code": ""})
    assert empty.is_valid() and empty.options().language_code is None


@pytest.mark.parametrize(
    "role, says, offers",
    [
        ("member", "Upload an interview", True),
        ("viewer", "ask a member of", False),
    ],
)
def test_the_empty_list_says_what_to_do_next_per_role(client_as, request, role, says, offers):
    html = page(client_as(request.getfixturevalue(role)), "transcripts:list")
    empty = html.split('<div class="empty">', 1)[1].split("</div>", 1)[0]
    assert says in empty
    assert (reverse("transcripts:new") in empty) is offers
