"""The voice rows' move from gateway to voices keeps every existing row (gateway 0003, voices
0004): migrated back to before the move, rows written with the old models survive it."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("gateway", "0002_apivoice_voicesettingsrecord"), ("voices", "0003_library_speed")]
AFTER = [("gateway", "0003_voice_rows_move_to_voices"), ("voices", "0004_voice_rows_from_gateway")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_voices_made_before_the_move_are_the_same_rows_after_it():
    old = _migrate(BEFORE)
    Workspace = old.get_model("workspaces", "Workspace")
    User = old.get_model("workspaces", "User")
    workspace = Workspace.objects.create(name="Before", slug="before-the-move")
    maker = User.objects.create(email="maker@example.com")
    voice = old.get_model("gateway", "ApiVoice").objects.create(
        workspace=workspace,
        voice_id="local-made-1",
        engine="local",
        name="Harbour Master",
        category="cloned",
        recipe={"pitch": 0.8},
        created_by=maker,
        api_key_id=7,
    )
    old.get_model("gateway", "VoiceSettingsRecord").objects.create(
        workspace=workspace, voice_id="local-made-1", stability=0.25, speed=1.1
    )
    try:
        new = _migrate(AFTER)
        moved = new.get_model("voices", "ApiVoice").objects.get(pk=voice.pk)
        assert (moved.voice_id, moved.name, moved.recipe, moved.api_key_id) == (
            "local-made-1",
            "Harbour Master",
            {"pitch": 0.8},
            7,
        )
        assert moved.created_by_id == maker.pk and moved.workspace_id == workspace.pk
        settings = new.get_model("voices", "VoiceSettingsRecord").objects.get()
        assert (settings.stability, settings.speed) == (0.25, 1.1)
        tables = connection.introspection.table_names()
        assert "voices_apivoice" in tables and "gateway_apivoice" not in tables
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
