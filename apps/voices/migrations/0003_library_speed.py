"""The library page's indexes: its sorts, the label filters without case, the search.

Most are ordinary indexes (see ``LibraryVoice.Meta``). Two kinds exist on PostgreSQL only,
made here with SQL: the "recently used" sort (``NULLS LAST``, which SQLite cannot index) and
the trigram indexes that let the search (``UPPER(col) LIKE '%…%'``) skip the voices that
cannot match instead of reading them all.
"""

import django.db.models.functions.text
from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations, models

POSTGRESQL_INDEXES = {
    "library_voice_recent": "(workspace_id, last_used_at DESC NULLS LAST, name, id)",
    # fastupdate off: a sync's new voices go straight into the index, not to a pending list
    # that the planner rightly avoids (and every search would scan) until the next vacuum.
    "library_voice_name_trgm": "USING gin (UPPER(name) gin_trgm_ops) WITH (fastupdate = off)",
    "library_voice_description_trgm": (
        "USING gin (UPPER(description) gin_trgm_ops) WITH (fastupdate = off)"
    ),
    "library_voice_descriptive_trgm": (
        "USING gin (UPPER(descriptive) gin_trgm_ops) WITH (fastupdate = off)"
    ),
}


def postgresql_indexes_create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, definition in POSTGRESQL_INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON voices_libraryvoice {definition}"
        )


def postgresql_indexes_drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in POSTGRESQL_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("voices", "0002_design_vote_consent"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="libraryvoice",
            name="voices_libr_workspa_33232c_idx",
        ),
        migrations.RemoveIndex(
            model_name="libraryvoice",
            name="voices_libr_workspa_5dbfe8_idx",
        ),
        migrations.RemoveIndex(
            model_name="libraryvoice",
            name="voices_libr_workspa_308dad_idx",
        ),
        migrations.RemoveIndex(
            model_name="libraryvoice",
            name="voices_libr_workspa_453118_idx",
        ),
        migrations.AddIndex(
            model_name="libraryvoice",
            index=models.Index(
                condition=models.Q(("withdrawn_at__isnull", True)),
                fields=["workspace", "name", "id"],
                name="library_voice_live_by_name",
            ),
        ),
        migrations.AddIndex(
            model_name="libraryvoice",
            index=models.Index(
                fields=["workspace", "-created_at", "-id"], name="library_voice_newest"
            ),
        ),
        migrations.AddIndex(
            model_name="libraryvoice",
            index=models.Index(
                fields=["workspace", "-use_count", "name", "id"], name="library_voice_most_used"
            ),
        ),
        *(
            migrations.AddIndex(
                model_name="libraryvoice",
                index=models.Index(
                    models.F("workspace"),
                    django.db.models.functions.text.Upper(label),
                    name=f"library_voice_{label}_ci",
                ),
            )
            for label in ("gender", "age", "accent", "language", "use_case", "descriptive")
        ),
        migrations.AddIndex(
            model_name="libraryvoice",
            index=models.Index(fields=["voice_id"], name="library_voice_voice_id"),
        ),
        TrigramExtension(),
        migrations.RunPython(postgresql_indexes_create, postgresql_indexes_drop),
    ]
