"""The job library: what every app's queued rows share, importing no app.

- `models.JobRow`: the abstract row of a job (status, error, timestamps, `is_finished`).
- `tasks.RowTask`: the base of a task that works on one row (late acks, the failure hook).
- `locks.run_lock` / `locks.exclusive_per_row`: one run per row at a time (a PostgreSQL advisory lock).
- `broker.broker_snapshot(app)`: which rows still have a message in Redis.
- `recovery`: `rows_recover` for one kind of row, the registry each app fills from its
  `AppConfig.ready()` (`register_recovery`), and `sweep`, which runs every registered kind.
"""
