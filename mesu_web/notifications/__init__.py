"""Notifications: something a user should know (a placement decision, a finished chapter). Any app
writes one through `services.notification_create`; the header shows the unread count."""
