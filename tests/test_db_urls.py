"""app.db's URL handling: the asyncpg DSN without SQLAlchemy says what SQLAlchemy's did."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app import db

URLS = [
    "postgresql://postgres@127.0.0.1:5432/postgres",
    "postgres://tepat:s3cret@db.example:6543/tepat",
    "postgresql+asyncpg://tepat:p%40ss%2Fw%3Ard@localhost/tepat?sslmode=require",
    "postgresql+psycopg2://u@h/d",
    "postgresql:///tepat?host=/var/run/postgresql",
    "postgresql://localhost",
]


def _through_sqlalchemy(url: str) -> str:
    return db.sqlalchemy_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.mark.parametrize("url", URLS)
def test_the_dsn_names_what_sqlalchemy_parsed(url: str) -> None:
    dsn = db.asyncpg_dsn(url)
    assert dsn.startswith("postgresql://")
    assert make_url(dsn) == make_url(_through_sqlalchemy(url))


def test_other_schemes_and_non_urls_are_refused_as_before() -> None:
    with pytest.raises(ValueError, match="must be a PostgreSQL URL"):
        db.asyncpg_dsn("mysql://u@h/d")
    with pytest.raises(ArgumentError):
        db.asyncpg_dsn("not a url")
    assert db.asyncpg_dsn("postgresql://") == "postgresql://"  # all defaults, as SQLAlchemy
