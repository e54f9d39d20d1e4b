from __future__ import annotations

from django.core.management.base import BaseCommand

from writer.demo import seed_demo


class Command(BaseCommand):
    help = "Create (or refresh) the demo users of every role and the sample stories. Idempotent."

    def handle(self, *args, **options) -> None:
        users = seed_demo()
        self.stdout.write("Demo users (username / password / role):")
        for user in users:
            self.stdout.write(f"  {user.username} / {user.password} / {user.role}")
