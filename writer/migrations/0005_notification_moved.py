# The Notification model moved to mesu_web.notifications (its 0001 keeps the table): drop it from the
# writer's state only.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("writer", "0004_notifications"),
        ("notifications", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Notification")],
            database_operations=[],
        ),
    ]
