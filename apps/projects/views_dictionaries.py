"""Pronunciation dictionary pages: the team's list, a new dictionary (rules or a PLS file), a
dictionary's rules (add, remove, try them out, export), and a project's dictionaries.

Viewers read and download; members and above change. Services: ``dictionaries``.
"""

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.engines.local.tts import DEFAULT_VOICE_ID, LOCAL_VOICES
from apps.engines.pronunciation import ALIAS, CMU, IPA, PHONEME
from apps.generation.errors import ApiInvalid, ApiRefused
from apps.voices.models import LibraryVoice
from apps.workspaces.access import get_scoped, scoped, workspace_view
from apps.workspaces.forms import StudioForm
from apps.workspaces.models import ROLE_RANK, EngineKind, Role
from studio_site.forms import LanguageField

from . import dictionaries
from .models import Project, PronunciationDictionary

PAGE_SIZE = 25
NEW_RULE_ROWS = 5

KINDS = (
    ("alias", "Alias: say it as another spelling"),
    ("ipa", "Phonemes in IPA"),
    ("cmu", "Phonemes in CMU Arpabet"),
)


# --- Forms --------------------------------------------------------------------------------


class RuleForm(StudioForm):
    """One rule: the word, how it is said (an alias, or phonemes in IPA or CMU) and the two
    matching flags. ``rule()`` is the API's rule object."""

    string_to_replace = forms.CharField(label="Word or phrase", max_length=500)
    kind = forms.ChoiceField(label="Say it as", choices=KINDS, initial="alias")
    replacement = forms.CharField(
        label="Alias or phonemes",
        max_length=500,
        help_text="An alias such as “tie-land”, or phonemes such as “ˈtaɪlænd” (IPA) "
        "or “T AY1 L AE2 N D” (CMU).",
    )
    case_sensitive = forms.BooleanField(label="Match case", required=False, initial=True)
    word_boundaries = forms.BooleanField(label="Whole words only", required=False, initial=True)

    def rule(self) -> dict:
        data = self.cleaned_data
        item = {"string_to_replace": data["string_to_replace"].strip()}
        if data["kind"] == "alias":
            item.update(type=ALIAS, alias=data["replacement"].strip())
        else:
            alphabet = IPA if data["kind"] == "ipa" else CMU
            item.update(type=PHONEME, phoneme=data["replacement"].strip(), alphabet=alphabet)
        item.update(case_sensitive=data["case_sensitive"], word_boundaries=data["word_boundaries"])
        return item


class NewRuleForm(RuleForm):
    """A row of the new dictionary's rules table: a row left empty is skipped."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("string_to_replace", "replacement"):
            self.fields[name].required = False

    def clean(self):
        data = super().clean()
        word, said = data.get("string_to_replace"), data.get("replacement")
        if word and not said:
            self.add_error("replacement", "Say how the word is pronounced.")
        if said and not word:
            self.add_error("string_to_replace", "Which word is pronounced like that?")
        return data

    def rule(self) -> dict | None:
        if not self.cleaned_data.get("string_to_replace"):
            return None
        return super().rule()


RuleRows = forms.formset_factory(NewRuleForm, extra=NEW_RULE_ROWS, max_num=200)


class DictionaryForm(StudioForm):
    name = forms.CharField(label="Name", max_length=dictionaries.MAX_NAME)
    description = forms.CharField(
        label="Description",
        required=False,
        max_length=dictionaries.MAX_DESCRIPTION,
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    language = LanguageField(empty_label="Any language")


class NewDictionaryForm(DictionaryForm):
    lexicon = forms.FileField(
        label="Or import a PLS file",
        required=False,
        help_text=f"A W3C PLS lexicon (.pls), at most {dictionaries.MAX_PLS_BYTES // 1024} kB. "
        "Its rules are used instead of the table.",
        widget=forms.ClearableFileInput(attrs={"accept": ".pls,.xml,application/pls+xml"}),
    )


class TryForm(StudioForm):
    text = forms.CharField(
        label="Sentence",
        max_length=dictionaries.MAX_TRY_TEXT,
        initial="",
        widget=forms.TextInput(attrs={"placeholder": "A sentence with the words of the rules"}),
    )
    voice_id = forms.ChoiceField(label="Voice", choices=())

    def __init__(self, *args, voices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["voice_id"].choices = voices


# --- Helpers ------------------------------------------------------------------------------


def _can_edit(request) -> bool:
    membership = request.membership
    return membership is not None and ROLE_RANK[Role(membership.role)] >= ROLE_RANK[Role.MEMBER]


def _dictionary(request, dictionary_id: str) -> PronunciationDictionary:
    return get_scoped(
        request,
        PronunciationDictionary.objects.select_related("created_by"),
        public_id=dictionary_id,
    )


def _local_voices(workspace) -> list[tuple[str, str]]:
    """The local engine's voices as the library names them (the engine's own if none)."""
    rows = LibraryVoice.objects.filter(
        workspace=workspace, engine=EngineKind.LOCAL, withdrawn_at__isnull=True
    ).order_by("name", "pk")
    voices = [(row.voice_id, row.name) for row in rows]
    return voices or [(voice.voice_id, voice.name) for voice in LOCAL_VOICES]


def _rows(dictionary) -> list[dict]:
    """The rules as the page shows them."""
    rows = []
    for rule in dictionaries.dictionary_rules(dictionary):
        if rule.type == ALIAS:
            said, kind = rule.alias, "Alias"
        else:
            said, kind = rule.phoneme, "IPA" if rule.alphabet == IPA else "CMU Arpabet"
        rows.append({"rule": rule, "said": said, "kind": kind})
    return rows


def _detail(
    request,
    dictionary,
    *,
    rule_form=None,
    edit_form=None,
    try_form=None,
    tried=None,
    error: str = "",
    status: int = 200,
):
    voices = _local_voices(request.workspace)
    default_voice = DEFAULT_VOICE_ID if any(v == DEFAULT_VOICE_ID for v, _ in voices) else ""
    context = {
        "dictionary": dictionary,
        "rows": _rows(dictionary),
        "can_edit": _can_edit(request),
        "rule_form": rule_form or RuleForm(),
        "edit_form": edit_form
        or DictionaryForm(
            initial={
                "name": dictionary.name,
                "description": dictionary.description,
                "language": dictionary.language,
            }
        ),
        "try_form": try_form
        or TryForm(voices=voices, initial={"voice_id": default_voice or voices[0][0]}),
        "tried": tried,
        "error": error,
        "versions": dictionary.versions.order_by("-created_at", "-id")[:10],
    }
    partial = request.htmx and tried is None
    template = "projects/dictionary.html#rules" if partial else "projects/dictionary.html"
    return render(request, template, context, status=status)


def _to_dictionary(request, dictionary):
    target = reverse("projects:dictionary", args=[dictionary.public_id])
    if request.htmx:
        return _detail(request, dictionary)
    return HttpResponseRedirect(target, status=303)


# --- Pages --------------------------------------------------------------------------------


@workspace_view()
@require_GET
def dictionary_list(request):
    """The team's dictionaries (search by name), newest first; archived ones last."""
    rows = scoped(request, PronunciationDictionary).select_related("created_by")
    query = request.GET.get("q", "").strip()
    if query:
        rows = rows.filter(name__icontains=query)
    rows = rows.order_by("archived", "-created_at", "-id")
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "projects/dictionaries.html", {"page": page, "q": query, "mode": "list"})


def _new_page(request, form, rules, *, error: str = "", status: int = 200):
    context = {"form": form, "rules": rules, "error": error, "mode": "new"}
    return render(request, "projects/dictionaries.html", context, status=status)


@workspace_view(Role.MEMBER)
@require_http_methods(["GET", "POST"])
def dictionary_new(request):
    """A new dictionary from the rules table, or from a PLS file."""
    if request.method == "GET":
        return _new_page(request, NewDictionaryForm(), RuleRows(prefix="rules"))
    form = NewDictionaryForm(request.POST, request.FILES)
    rules = RuleRows(request.POST, prefix="rules")
    form_ok, rules_ok = form.is_valid(), rules.is_valid()
    if not form_ok:
        return _new_page(request, form, rules, status=400)
    lexicon = form.cleaned_data.get("lexicon")
    data = form.cleaned_data
    try:
        if lexicon is not None:
            if lexicon.size > dictionaries.MAX_PLS_BYTES:
                raise dictionaries.DictionaryRefused(
                    f"The file is {lexicon.size:,} bytes; a PLS file may be at most "
                    f"{dictionaries.MAX_PLS_BYTES // 1024:,} kB."
                )
            dictionary = dictionaries.dictionary_create_from_pls(
                workspace=request.workspace,
                user=request.user,
                name=data["name"],
                data=lexicon.read(),
                description=data["description"],
                language=data["language"],
            )
        else:
            if not rules_ok:
                return _new_page(request, form, rules, status=400)
            dictionary = dictionaries.dictionary_create(
                workspace=request.workspace,
                user=request.user,
                name=data["name"],
                rules=[r for r in (row.rule() for row in rules.forms) if r],
                description=data["description"],
                language=data["language"],
            )
    except dictionaries.DictionaryRefused as exc:
        return _new_page(request, form, rules, error=str(exc), status=400)
    rules_num = dictionary.version_rules_num
    messages.success(request, f"“{dictionary.name}” is ready with {rules_num} rules.")
    return HttpResponseRedirect(
        reverse("projects:dictionary", args=[dictionary.public_id]), status=303
    )


@workspace_view()
@require_GET
def dictionary_detail(request, dictionary_id: str):
    return _detail(request, _dictionary(request, dictionary_id))


@workspace_view(Role.MEMBER)
@require_POST
def dictionary_edit(request, dictionary_id: str):
    """Rename, describe or set the language of the dictionary."""
    dictionary = _dictionary(request, dictionary_id)
    form = DictionaryForm(request.POST)
    if not form.is_valid():
        return _detail(request, dictionary, edit_form=form, status=400)
    try:
        dictionaries.dictionary_update(dictionary=dictionary, **form.cleaned_data)
    except dictionaries.DictionaryRefused as exc:
        return _detail(request, dictionary, edit_form=form, error=str(exc), status=400)
    messages.success(request, "Saved.")
    return _to_dictionary(request, dictionary)


@workspace_view(Role.MEMBER)
@require_POST
def dictionary_rule_add(request, dictionary_id: str):
    """Add a rule (one for the same word replaces it): a new version."""
    dictionary = _dictionary(request, dictionary_id)
    form = RuleForm(request.POST)
    if not form.is_valid():
        return _detail(request, dictionary, rule_form=form, status=400)
    try:
        dictionary = dictionaries.dictionary_rules_add(dictionary=dictionary, rules=[form.rule()])
    except dictionaries.DictionaryRefused as exc:
        return _detail(request, dictionary, rule_form=form, error=str(exc), status=400)
    return _to_dictionary(request, dictionary)


@workspace_view(Role.MEMBER)
@require_POST
def dictionary_rule_remove(request, dictionary_id: str):
    """Remove the rule for one word: a new version."""
    dictionary = _dictionary(request, dictionary_id)
    word = request.POST.get("string_to_replace", "")
    if not word:
        return _detail(request, dictionary, error="Choose the rule to remove.", status=400)
    dictionary = dictionaries.dictionary_rules_remove(dictionary=dictionary, strings=[word])
    return _to_dictionary(request, dictionary)


@workspace_view(Role.MEMBER)
@require_POST
def dictionary_archive(request, dictionary_id: str):
    """Archive the dictionary (``restore=1``: bring it back). Locators still reach it."""
    dictionary = _dictionary(request, dictionary_id)
    restore = request.POST.get("restore") == "1"
    dictionaries.dictionary_update(dictionary=dictionary, archived=not restore)
    messages.success(request, "Restored." if restore else "Archived.")
    return HttpResponseRedirect(
        reverse("projects:dictionary", args=[dictionary.public_id]), status=303
    )


@workspace_view()
@require_GET
def dictionary_download(request, dictionary_id: str):
    """The PLS file of the latest version (``?version=`` another one)."""
    dictionary = _dictionary(request, dictionary_id)
    try:
        filename, data = dictionaries.dictionary_pls(
            dictionary=dictionary, version_id=request.GET.get("version") or None
        )
    except dictionaries.DictionaryRefused as exc:
        return _detail(request, dictionary, error=str(exc), status=404)
    response = HttpResponse(data, content_type="application/pls+xml")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@workspace_view(Role.MEMBER)
@require_POST
def dictionary_try(request, dictionary_id: str):
    """Speak a sentence without and with the dictionary on the local engine (free)."""
    dictionary = _dictionary(request, dictionary_id)
    voices = _local_voices(request.workspace)
    form = TryForm(request.POST, voices=voices)
    if not form.is_valid():
        return _detail(request, dictionary, try_form=form, status=400)
    try:
        tried = dictionaries.dictionary_try(
            workspace=request.workspace,
            user=request.user,
            dictionary=dictionary,
            text=form.cleaned_data["text"],
            voice_id=form.cleaned_data["voice_id"],
        )
    except dictionaries.DictionaryRefused as exc:
        return _detail(request, dictionary, try_form=form, error=str(exc), status=400)
    except (ApiRefused, ApiInvalid) as exc:
        message = getattr(exc, "message", None) or str(exc)
        return _detail(request, dictionary, try_form=form, error=message, status=400)
    return _detail(request, dictionary, try_form=form, tried=tried)


@workspace_view(Role.MEMBER)
@require_POST
def project_dictionaries(request, project_id: str):
    """Attach exactly the checked dictionaries (``dictionaries``, public ids, repeated) to
    the project; back to ``next`` (a page of this site) or the project."""
    project = get_scoped(request, Project, public_id=project_id)
    chosen = [value for value in request.POST.getlist("dictionaries") if value]
    try:
        dictionaries.project_dictionaries_set(project, chosen)
    except dictionaries.DictionaryRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "The project's pronunciation dictionaries are saved.")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("projects:detail", args=[project.public_id])
    return HttpResponseRedirect(target, status=303)
