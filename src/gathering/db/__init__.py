"""Database access: the `Database` pool, the embedded server, migrations and advisory locks."""

from gathering.db.database import Database, Row, Transaction, redact_url
from gathering.db.migrations_runner import Migration, MigrationStatus, discover_migrations

__all__ = [
    "Database",
    "Migration",
    "MigrationStatus",
    "Row",
    "Transaction",
    "discover_migrations",
    "redact_url",
]
