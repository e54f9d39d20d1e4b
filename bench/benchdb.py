"""The benchmarks' own PostgreSQL databases, beside the dev and test ones: created fresh for a run and
dropped at the end. The server and credentials are Django's (`DATABASES["default"]`)."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def conninfo(dbname: str) -> str:
    from django.conf import settings

    db = settings.DATABASES["default"]
    return make_conninfo(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"] or None, dbname=dbname
    )


def database_exists(name: str) -> bool:
    with psycopg.connect(conninfo("postgres"), autocommit=True) as admin:
        return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def recreate_database(name: str) -> None:
    """Drop `name` (closing its sessions) and create it empty; Django's own connection is closed first."""
    drop_database(name)
    with psycopg.connect(conninfo("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(name: str) -> None:
    from django.db import connection

    connection.close()
    with psycopg.connect(conninfo("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
