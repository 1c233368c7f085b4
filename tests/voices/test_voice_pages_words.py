"""Voice pages speak in words: labels, languages, engines, counts and dates as people read
them, never the codes behind them; the try-it box disables its own button and offers the clip
for download; the design form's guidance and loudness are sliders."""

import re

import pytest
from django.urls import reverse

from apps.voices import services_usage
from apps.voices.models import LibraryVoice
from apps.voices.services import library_sync

RAW = ("middle_aged", "Middle_aged", "use_case", "Use_case", "None", "[]")


@pytest.fixture
def labelled(workspace):
    return LibraryVoice.objects.create(
        workspace=workspace, engine="local", voice_id="v-lab", name="Labelled",
        gender="female", age="middle_aged", accent="british", language="en", use_case="narration",
        labels={"gender": "female", "age": "middle_aged", "accent": "british", "language": "en",
                "use_case": "narration"},
    )  # fmt: skip


def visible(html: str) -> str:
    """What people read on the page: its text and its labels for screen readers."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    spoken = " ".join(re.findall(r'aria-label="([^"]*)"', html))
    return re.sub(r"<[^>]+>", " ", html) + " " + spoken


def test_the_library_shows_labels_languages_and_engines_in_words(labelled, client_as, member):
    page = client_as(member).get(reverse("voices:library")).content.decode()
    assert "Female · Middle-aged · British · English · Narration" in page
    assert "Local (offline)" in page
    assert "Any use case" in page and ">Middle-aged</option>" in page
    assert ">English</option>" in page and "1 voice" in page
    for raw in RAW:
        assert raw not in visible(page), raw


def test_the_voice_page_shows_labels_in_words(labelled, client_as, viewer):
    page = client_as(viewer).get(reverse("voices:detail", args=[labelled.pk])).content.decode()
    assert "<dt>Use case</dt><dd>Narration</dd>" in page
    assert "<dt>Age</dt><dd>Middle-aged</dd>" in page
    assert "<dt>Language</dt><dd>English</dd>" in page
    assert "<dt>Used</dt><dd>Not yet</dd>" in page
    for raw in RAW:
        assert raw not in visible(page), raw


def test_the_try_it_button_is_disabled_by_its_own_id_and_the_textarea_inherits_nothing(
    labelled, client_as, member
):
    page = client_as(member).get(reverse("voices:detail", args=[labelled.pk])).content.decode()
    assert 'hx-disabled-elt="#try-speak"' in page and 'id="try-speak"' in page
    assert 'hx-disinherit="hx-disabled-elt hx-indicator"' in page
    assert "find button" not in page


def test_a_spoken_clip_comes_with_its_length_and_a_download_link(workspace, client_as, member):
    library_sync(workspace=workspace)
    voice = LibraryVoice.objects.get(workspace=workspace, voice_id="local-espeak-en-us")
    response = client_as(member).post(
        reverse("voices:try", args=[voice.pk]), {"text": "Hello there."}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html
    clip = re.search(r'src="(/history/\d+/audio/)"', html).group(1)
    assert f'href="{clip}" download' in html
    assert re.search(r"· 0:0\d", html) and " s<" not in html  # a clock, not "1.3 s"
    usage = services_usage.voice_usage(voice)
    assert usage.calls == 1


def test_the_design_form_has_sliders_for_guidance_and_loudness(workspace, client_as, member):
    page = client_as(member).get(reverse("voices:design_new")).content.decode()
    guidance = re.search(r"<input[^>]*id=\"id_guidance_scale\"[^>]*>", page).group(0)
    loudness = re.search(r"<input[^>]*id=\"id_loudness\"[^>]*>", page).group(0)
    for slider in (guidance, loudness):
        assert 'type="range"' in slider and 'step="any"' in slider
    assert 'min="0"' in guidance and 'max="100"' in guidance
    assert 'min="-1"' in loudness and 'max="1"' in loudness
    assert 'aria-describedby="id_guidance_scale_helptext"' in guidance


def test_the_clone_form_uses_plain_labelled_fieldsets(workspace, client_as, member):
    page = client_as(member).get(reverse("voices:clone")).content.decode()
    assert page.count("<fieldset") >= 4 and "<legend>Labels</legend>" in page
    for label in ("gender", "age", "accent", "language", "use_case", "descriptive"):
        assert f'<label for="clone-{label}">' in page
        assert re.search(rf'id="clone-{label}"[^>]*aria-describedby="clone-labels-help"', page)
    assert 'aria-describedby="clone-samples-help"' in page
