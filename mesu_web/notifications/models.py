from __future__ import annotations

from django.conf import settings
from django.db import models


class Notification(models.Model):
    """Something a user should know: a placement decision, a finished chapter."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    message = models.CharField(max_length=300)
    url = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        # The table and index made when this model lived in the writer app (writer 0004), kept as they are.
        db_table = "writer_notification"
        indexes = [models.Index(fields=["user", "read_at"], name="writer_noti_user_id_89db81_idx")]

    def __str__(self) -> str:
        return self.message
