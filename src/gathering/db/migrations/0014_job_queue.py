"""procrastinate's schema (its tables, types, functions and triggers), as the version we pin
ships it. Upgrading procrastinate to a version with new migrations needs a new numbered
migration that applies them (they are in `procrastinate.schema.migrations_path`)."""

from procrastinate.schema import SchemaManager


def sql() -> str:
    """The SQL that installs procrastinate's schema."""
    return SchemaManager.get_schema()
