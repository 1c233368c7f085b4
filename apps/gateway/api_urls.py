"""Routes of the ElevenLabs-compatible API; every one starts with ``v1/`` or ``v2/``."""

from django.urls import path, re_path

from . import (
    api,
    api_convai,
    api_history,
    api_jobs,
    api_media,
    api_pronunciation,
    api_studio,
    api_unserved,
    api_usage,
)

urlpatterns = [
    path("v1/text-to-speech/<str:voice_id>", api.speech, name="api_tts"),
    path("v1/text-to-speech/<str:voice_id>/stream", api.speech_stream, name="api_tts_stream"),
    path(
        "v1/text-to-speech/<str:voice_id>/with-timestamps",
        api.speech_with_timestamps,
        name="api_tts_timestamps",
    ),
    path(
        "v1/text-to-speech/<str:voice_id>/stream/with-timestamps",
        api.speech_stream_with_timestamps,
        name="api_tts_stream_timestamps",
    ),
    path("v1/voices", api.voices, name="api_voices"),
    # Before v1/voices/<voice_id>, which would take "add" for a voice id.
    path("v1/voices/add", api_media.voice_add, name="api_voice_add"),
    path("v1/voices/<str:voice_id>", api.voice, name="api_voice"),
    path("v2/voices", api.voices_search, name="api_voices_search"),
    path("v1/models", api.models, name="api_models"),
    path("v1/user", api.user, name="api_user"),
    path("v1/user/subscription", api.subscription, name="api_subscription"),
    path("v1/speech-to-text", api_media.speech_to_text, name="api_stt"),
    path("v1/sound-generation", api_media.sound_generation, name="api_sound"),
    path("v1/text-to-voice", api_media.voice_design_save, name="api_voice_design_save"),
    path("v1/text-to-voice/design", api_media.voice_design, name="api_voice_design"),
    path("v1/text-to-voice/create-previews", api_media.voice_design, name="api_voice_previews"),
    path(
        "v1/text-to-voice/<str:generated_voice_id>/stream",
        api_media.voice_design_stream,
        name="api_voice_design_stream",
    ),
    path("v1/voices/<str:voice_id>/edit", api_media.voice_edit, name="api_voice_edit"),
    path(
        "v1/voices/settings/default",
        api_media.voice_settings_default,
        name="api_voice_settings_default",
    ),
    path("v1/voices/<str:voice_id>/settings", api_media.voice_settings, name="api_voice_settings"),
    path(
        "v1/voices/<str:voice_id>/settings/edit",
        api_media.voice_settings_edit,
        name="api_voice_settings_edit",
    ),
    path("v1/music", api_jobs.music, name="api_music"),
    path("v1/music/stream", api_jobs.music_stream, name="api_music_stream"),
    path("v1/dubbing", api_jobs.dubbing, name="api_dubbing"),
    path("v1/dubbing/<str:dubbing_id>", api_jobs.dubbing_item, name="api_dubbing_item"),
    path(
        "v1/dubbing/<str:dubbing_id>/audio/<str:language_code>",
        api_jobs.dubbing_audio,
        name="api_dubbing_audio",
    ),
    path(
        "v1/dubbing/<str:dubbing_id>/transcript/<str:language_code>",
        api_jobs.dubbing_transcript,
        name="api_dubbing_transcript",
    ),
    path(
        "v1/dubbing/<str:dubbing_id>/transcripts/<str:language_code>/format/<str:format_type>",
        api_jobs.dubbing_transcripts,
        name="api_dubbing_transcripts",
    ),
    path("v1/history", api_history.history, name="api_history"),
    path("v1/usage/character-stats", api_usage.character_stats, name="api_usage_stats"),
    path("v1/history/<str:history_item_id>", api_history.history_item, name="api_history_item"),
    path(
        "v1/history/<str:history_item_id>/audio",
        api_history.history_audio,
        name="api_history_audio",
    ),
    # Before v1/pronunciation-dictionaries/<id>, which would take "add-from-rules" for an id.
    path(
        "v1/pronunciation-dictionaries/add-from-rules",
        api_pronunciation.add_from_rules,
        name="api_pronunciation_add_rules",
    ),
    path(
        "v1/pronunciation-dictionaries/add-from-file",
        api_pronunciation.add_from_file,
        name="api_pronunciation_add_file",
    ),
    path(
        "v1/pronunciation-dictionaries",
        api_pronunciation.dictionary_list,
        name="api_pronunciation_list",
    ),
    path(
        "v1/pronunciation-dictionaries/<str:dictionary_id>",
        api_pronunciation.dictionary_item,
        name="api_pronunciation_item",
    ),
    path(
        "v1/pronunciation-dictionaries/<str:dictionary_id>/add-rules",
        api_pronunciation.rules_add,
        name="api_pronunciation_rules_add",
    ),
    path(
        "v1/pronunciation-dictionaries/<str:dictionary_id>/remove-rules",
        api_pronunciation.rules_remove,
        name="api_pronunciation_rules_remove",
    ),
    path(
        "v1/pronunciation-dictionaries/<str:dictionary_id>/set-rules",
        api_pronunciation.rules_set,
        name="api_pronunciation_rules_set",
    ),
    path(
        "v1/pronunciation-dictionaries/<str:dictionary_id>/<str:version_id>/download",
        api_pronunciation.download,
        name="api_pronunciation_download",
    ),
    path(
        "v1/studio/projects/<str:project_id>/pronunciation-dictionaries",
        api_pronunciation.project_dictionaries,
        name="api_project_pronunciation",
    ),
]

# Studio projects (``api_studio``): projects, chapters, converting and snapshots.
urlpatterns += [
    path("v1/studio/projects", api_studio.projects, name="api_studio_projects"),
    path("v1/studio/projects/<str:project_id>", api_studio.project, name="api_studio_project"),
    path(
        "v1/studio/projects/<str:project_id>/content",
        api_studio.project_content,
        name="api_studio_project_content",
    ),
    path(
        "v1/studio/projects/<str:project_id>/convert",
        api_studio.project_convert,
        name="api_studio_project_convert",
    ),
    path(
        "v1/studio/projects/<str:project_id>/snapshots",
        api_studio.project_snapshots,
        name="api_studio_project_snapshots",
    ),
    path(
        "v1/studio/projects/<str:project_id>/snapshots/<str:project_snapshot_id>",
        api_studio.project_snapshot,
        name="api_studio_project_snapshot",
    ),
    path(
        "v1/studio/projects/<str:project_id>/snapshots/<str:project_snapshot_id>/stream",
        api_studio.project_snapshot_stream,
        name="api_studio_project_snapshot_stream",
    ),
    path(
        "v1/studio/projects/<str:project_id>/snapshots/<str:project_snapshot_id>/archive",
        api_studio.project_snapshot_archive,
        name="api_studio_project_snapshot_archive",
    ),
    path(
        "v1/studio/projects/<str:project_id>/chapters",
        api_studio.chapters,
        name="api_studio_chapters",
    ),
    path(
        "v1/studio/projects/<str:project_id>/chapters/<str:chapter_id>",
        api_studio.chapter,
        name="api_studio_chapter",
    ),
    path(
        "v1/studio/projects/<str:project_id>/chapters/<str:chapter_id>/convert",
        api_studio.chapter_convert,
        name="api_studio_chapter_convert",
    ),
    path(
        "v1/studio/projects/<str:project_id>/chapters/<str:chapter_id>/snapshots",
        api_studio.chapter_snapshots,
        name="api_studio_chapter_snapshots",
    ),
    path(
        "v1/studio/projects/<str:project_id>/chapters/<str:chapter_id>/snapshots/"
        "<str:chapter_snapshot_id>",
        api_studio.chapter_snapshot,
        name="api_studio_chapter_snapshot",
    ),
    path(
        "v1/studio/projects/<str:project_id>/chapters/<str:chapter_id>/snapshots/"
        "<str:chapter_snapshot_id>/stream",
        api_studio.chapter_snapshot_stream,
        name="api_studio_chapter_snapshot_stream",
    ),
]

# Conversational AI (``api_convai``): agents, the conversation WebSocket's signed URL, and the
# recorded conversations. ``agents/create`` comes before ``agents/<agent_id>``.
urlpatterns += [
    path("v1/convai/agents/create", api_convai.agent_create, name="api_convai_agent_create"),
    path("v1/convai/agents", api_convai.agent_list, name="api_convai_agents"),
    path("v1/convai/agents/<str:agent_id>", api_convai.agent, name="api_convai_agent"),
    path(
        "v1/convai/conversation/get-signed-url",
        api_convai.conversation_signed_url,
        name="api_convai_signed_url",
    ),
    path(
        "v1/convai/conversation/get_signed_url",
        api_convai.conversation_signed_url,
        name="api_convai_signed_url_legacy",
    ),
    path(
        "v1/convai/conversation/token",
        api_convai.conversation_token,
        name="api_convai_token",
    ),
    path("v1/convai/conversations", api_convai.conversation_list, name="api_convai_conversations"),
    path(
        "v1/convai/conversations/<str:conversation_id>",
        api_convai.conversation,
        name="api_convai_conversation",
    ),
    path(
        "v1/convai/conversations/<str:conversation_id>/audio",
        api_convai.conversation_audio,
        name="api_convai_conversation_audio",
    ),
    # The knowledge base: ``text`` and ``file`` come before ``<documentation_id>``.
    path(
        "v1/convai/knowledge-base/text",
        api_convai.knowledge_base_text,
        name="api_convai_knowledge_base_text",
    ),
    path(
        "v1/convai/knowledge-base/file",
        api_convai.knowledge_base_file,
        name="api_convai_knowledge_base_file",
    ),
    path(
        "v1/convai/knowledge-base/<str:documentation_id>",
        api_convai.knowledge_base_document,
        name="api_convai_knowledge_base_document",
    ),
]

# Paths of the official API that Chorus does not serve but that a route above would take for
# its parameter (``v1/voices/accents`` as a voice id): each answers a 404 ``not_supported``
# naming the endpoint, never that route's ``voice_not_found`` or 405. Included before
# ``urlpatterns``; tests/gateway/test_api_unserved.py computes this list from the spec.
unserved_patterns = [
    path(
        "v1/voices/accents",
        api_unserved.not_supported,
        {"operations": "GET /v1/voices/accents (Get Voice Accents, of the shared voice library)"},
    ),
    path(
        "v1/voices/pvc",
        api_unserved.not_supported,
        {"operations": "POST /v1/voices/pvc (Create PVC Voice: professional voice cloning)"},
    ),
    path(
        "v1/dubbing/project",
        api_unserved.not_supported,
        {"operations": "GET and POST /v1/dubbing/project (List and Create Dubbing Projects)"},
    ),
    path(
        "v1/history/download",
        api_unserved.not_supported,
        {
            "operations": "POST /v1/history/download (Download History Items); "
            "GET /v1/history/{history_item_id}/audio gives one item's audio"
        },
    ),
    # Conversational AI paths that ``v1/convai/agents/<agent_id>`` and
    # ``v1/convai/conversations/<conversation_id>`` would take.
    path(
        "v1/convai/agents/summaries",
        api_unserved.not_supported,
        {"operations": "GET /v1/convai/agents/summaries (Get Agent Summaries)"},
    ),
    path(
        "v1/convai/conversations/resolve",
        api_unserved.not_supported,
        {"operations": "GET /v1/convai/conversations/resolve (Resolve Conversation Reference)"},
    ),
    # … and those ``v1/convai/knowledge-base/<documentation_id>`` would take.
    path(
        "v1/convai/knowledge-base/summaries",
        api_unserved.not_supported,
        {"operations": "GET /v1/convai/knowledge-base/summaries (Knowledge Base Summaries By Ids)"},
    ),
    path(
        "v1/convai/knowledge-base/url",
        api_unserved.not_supported,
        {"operations": "POST /v1/convai/knowledge-base/url (Create URL Document)"},
    ),
    path(
        "v1/convai/knowledge-base/crawl",
        api_unserved.not_supported,
        {"operations": "GET and POST /v1/convai/knowledge-base/crawl (Crawl Jobs)"},
    ),
    path(
        "v1/convai/knowledge-base/folder",
        api_unserved.not_supported,
        {"operations": "POST /v1/convai/knowledge-base/folder (Create Folder)"},
    ),
    path(
        "v1/convai/knowledge-base/rag-index",
        api_unserved.not_supported,
        {"operations": "GET and POST /v1/convai/knowledge-base/rag-index (RAG Indexes)"},
    ),
    path(
        "v1/convai/knowledge-base/search",
        api_unserved.not_supported,
        {"operations": "GET /v1/convai/knowledge-base/search (Search Knowledge Base Content)"},
    ),
    path(
        "v1/convai/knowledge-base/dependent-agents",
        api_unserved.not_supported,
        {"operations": "POST /v1/convai/knowledge-base/dependent-agents (Dependent Agents)"},
    ),
    path(
        "v1/convai/knowledge-base/bulk-move",
        api_unserved.not_supported,
        {"operations": "POST /v1/convai/knowledge-base/bulk-move (Bulk Move Entities To Folder)"},
    ),
    path(
        "v1/convai/knowledge-base/bulk-delete",
        api_unserved.not_supported,
        {"operations": "POST /v1/convai/knowledge-base/bulk-delete (Bulk Delete Documents)"},
    ),
]

# Any other /v1 or /v2 path: a 404 in ElevenLabs' shape, for every method (not Django's page).
# Included after every other route of the site.
fallback_patterns = [re_path(r"^v[12](?:/|$)", api_unserved.not_found)]
