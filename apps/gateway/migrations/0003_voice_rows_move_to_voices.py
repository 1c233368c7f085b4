"""ApiVoice and VoiceSettingsRecord move to ``voices`` (which owns every voice row): gone
from this app's state only; the tables stay, and ``voices.0004`` takes them over."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("gateway", "0002_apivoice_voicesettingsrecord"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="ApiVoice"),
                migrations.DeleteModel(name="VoiceSettingsRecord"),
            ],
            database_operations=[],
        ),
    ]
