"""One set of Alembic migrations, the same schema on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from ordercancel import cli
from ordercancel.config import Settings
from ordercancel.storage import database
from ordercancel.storage.schema import metadata
from tests.support.postgres import PostgresSchemas, postgres_url


def test_the_migrations_build_exactly_the_declared_schema(engine: Engine) -> None:
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def shape(engine: Engine) -> dict[str, object]:
    """What a schema is, as far as the service is concerned, in dialect-neutral terms."""
    inspector = inspect(engine)
    tables: dict[str, object] = {}
    for table in sorted(inspector.get_table_names()):
        tables[table] = {
            "columns": [
                (c["name"], c["type"].python_type.__name__, getattr(c["type"], "length", None), c["nullable"])
                for c in inspector.get_columns(table)
            ],
            "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
            "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
            # PostgreSQL lists the index behind each unique constraint too; SQLite does not.
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                for i in inspector.get_indexes(table)
                if "duplicates_constraint" not in i
            ),
            "foreign keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in inspector.get_foreign_keys(table)
            ),
            "checks": sorted(c["name"] for c in inspector.get_check_constraints(table)),
        }
    return tables


@pytest.mark.postgres
def test_sqlite_and_postgresql_get_the_same_schema_from_the_same_migrations(
    migrated_sqlite: Path, postgres_schemas: PostgresSchemas
) -> None:
    name = postgres_schemas.create()
    sqlite = database.create_sync_engine(Settings(database_url=f"sqlite:///{migrated_sqlite}"))
    postgres = database.create_sync_engine(Settings(database_url=postgres_url(name)))
    try:
        assert shape(sqlite) == shape(postgres)
    finally:
        sqlite.dispose()
        postgres.dispose()
        postgres_schemas.drop(name)


@pytest.mark.postgres
def test_db_upgrade_migrates_an_empty_postgresql_database_and_the_cli_then_works_on_it(
    postgres_schemas: PostgresSchemas, capsys: pytest.CaptureFixture[str]
) -> None:
    name = postgres_schemas.create(migrated=False)
    url = postgres_url(name)
    try:
        assert cli.main(["--database-url", url, "keys", "list"]) == 1
        assert "run 'ordercancel db upgrade'" in capsys.readouterr().err
        assert cli.main(["--database-url", url, "db", "upgrade"]) == 0
        assert cli.main(["--database-url", url, "db", "upgrade"]) == 0  # again: nothing to do
        assert cli.main(["--database-url", url, "keys", "create", "--name", "pg"]) == 0
        assert cli.main(["--database-url", url, "keys", "list", "--json"]) == 0
        assert '"name":"pg"' in capsys.readouterr().out
    finally:
        postgres_schemas.drop(name)
