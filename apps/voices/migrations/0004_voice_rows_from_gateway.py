"""ApiVoice and VoiceSettingsRecord come here from ``gateway`` (``voices`` owns every voice
row). The rows stay where they are: the models join this app's state on their old tables
(``gateway.0003`` let them go), then the tables take this app's names."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("voices", "0003_library_speed"),
        ("gateway", "0003_voice_rows_move_to_voices"),
        ("workspaces", "0002_engine_settings"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiVoice",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("voice_id", models.CharField(max_length=120)),
                        ("engine", models.CharField(max_length=20)),
                        ("name", models.CharField(max_length=200)),
                        ("category", models.CharField(max_length=20)),
                        ("description", models.TextField(blank=True)),
                        ("labels", models.JSONField(blank=True, default=dict)),
                        ("recipe", models.JSONField(blank=True, null=True)),
                        ("api_key_id", models.BigIntegerField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "workspace",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="api_voices",
                                to="workspaces.workspace",
                            ),
                        ),
                    ],
                    options={
                        "ordering": ["name", "id"],
                        "db_table": "gateway_apivoice",
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("workspace", "voice_id"), name="api_voice_unique"
                            )
                        ],
                    },
                ),
                migrations.CreateModel(
                    name="VoiceSettingsRecord",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("voice_id", models.CharField(max_length=120)),
                        ("stability", models.FloatField(default=0.5)),
                        ("similarity_boost", models.FloatField(default=0.75)),
                        ("style", models.FloatField(default=0.0)),
                        ("use_speaker_boost", models.BooleanField(default=True)),
                        ("speed", models.FloatField(default=1.0)),
                        ("updated_at", models.DateTimeField(auto_now=True)),
                        (
                            "workspace",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="voice_settings",
                                to="workspaces.workspace",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "gateway_voicesettingsrecord",
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("workspace", "voice_id"),
                                name="voice_settings_record_unique",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="apivoice", table=None),
        migrations.AlterModelTable(name="voicesettingsrecord", table=None),
    ]
