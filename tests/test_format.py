"""The one place values are worded for pages (studio_site.format)."""

from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.template import Context, Template
from django.utils import timezone

from studio_site.format import count_of, duration_of, label_of, language_of, when_of


def test_labels_are_words_not_codes():
    assert label_of("stt_realtime") == "Live transcription"
    assert label_of("middle_aged") == "Middle-aged"
    assert label_of("use_case") == "Use case"
    assert label_of("some_new_code") == "Some new code"
    assert label_of(None) == ""


def test_counts_take_plural_forms():
    assert count_of(25, "character") == "25 characters"
    assert count_of(1, "character") == "1 character"
    assert count_of(Decimal("1.500"), "minute") == "1.5 minutes"
    assert count_of(1250, "credit") == "1,250 credits"
    assert count_of(0, "entry") == "0 entries"


def test_one_duration_format():
    assert duration_of(3.879770) == "0:04"
    assert duration_of(timedelta(seconds=3.87977)) == "0:04"
    assert duration_of(9.0) == "0:09"
    assert duration_of(3725) == "1:02:05"
    assert duration_of(None) == ""


def test_dates_in_the_active_time_zone():
    moment = datetime(2026, 12, 7, 13, 5, tzinfo=ZoneInfo("UTC"))
    with timezone.override(ZoneInfo("Europe/Berlin")):
        assert when_of(moment) == "7 Dec 2026, 14:05"
    assert when_of(moment, with_time=False) == "7 Dec 2026"


def test_languages_by_name():
    assert language_of("en") == "English"
    assert language_of("pt-BR") == "Brazilian Portuguese"
    assert language_of("xx") == "XX"


def test_filters_need_no_load_tag():
    page = '{{ c|label }} · {{ n|count:"character" }} · {{ s|duration }} · {{ l|language }}'
    out = Template(page).render(Context({"c": "tts", "n": 25, "s": 8.6, "l": "de"}))
    assert out == "Text to speech · 25 characters · 0:09 · German"


def test_percentages_are_whole():
    from studio_site.format import percent_of

    assert percent_of(0.974) == "97%"
    assert percent_of(1) == "100%"
    assert percent_of(0.005) == "1%"
    assert percent_of(None) == ""


def test_languages_engines_answer_with_are_named():
    assert language_of("eng") == "English"
    assert language_of("deu") == "German"
    assert language_of("zh") == "Chinese"
    assert language_of("en-GB") == "British English"
    assert language_of("eng-US") == "English"


def test_the_language_picker_offers_names_and_takes_codes():
    from studio_site.forms import LanguageField, language_choices

    choices = dict(language_choices())
    assert choices["en"] == "English" and choices["zh"] == "Chinese" and choices["de"] == "German"
    names = [name for _, name in language_choices()]
    assert names == sorted(names)
    field = LanguageField()
    assert field.clean("DE") == "de" and field.clean("pt_BR") == "pt" and field.clean("") == ""
    import pytest
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="Choose a language from the list"):
        field.clean("klingon")
    with pytest.raises(ValidationError):
        LanguageField(required=True).clean("")
