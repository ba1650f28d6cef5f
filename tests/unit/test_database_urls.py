"""The database URL helpers of storage.db, which read URLs without SQLAlchemy (libpq's own parser): where a
URL points, the URL psycopg connects with and the one SQLAlchemy's engine uses."""

from __future__ import annotations

import pytest

from storage import db


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("postgresql://orgsync:s3cret@postgres:5432/orgsync", "postgres:5432/orgsync"),
        ("postgresql+psycopg://u:p@db.example.com/inventory", "db.example.com:5432/inventory"),
        ("postgres://orgsync@h", "h:5432/orgsync"),  # libpq's default database: the user's name
        ("postgresql://u:p%40ss@[::1]:5433/d%20b", "::1:5433/d b"),
        ("postgresql://u@h1:6432,h2:6433/db", "h1:6432/db"),  # several hosts: the first
        ("postgresql://h/db?host=h9&port=7777", "h9:7777/db"),  # where libpq connects: the query wins
        ("postgresql:///orgsync", "localhost:5432/orgsync"),
    ],
)
def test_address_is_where_libpq_connects(url, location):
    assert db.address(url).location == location


@pytest.mark.parametrize(
    "url", ["not a url", "host=h dbname=x", "postgresql://[::1/x", "postgresql://h/x?nosuch=1", "postgresql://h:x/y"]
)
def test_an_unusable_url_is_a_value_error(url):
    with pytest.raises(ValueError):
        db.address(url)


def test_psycopg_and_sqlalchemy_get_the_url_with_their_driver_name():
    url = "postgresql+psycopg://u:p%40ss@h:6432/db?sslmode=require"
    assert db.libpq_url(url) == "postgresql://u:p%40ss@h:6432/db?sslmode=require"
    assert db.sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    with pytest.raises(ValueError, match=r"^unsupported database URL scheme 'mysql' \(use postgresql://\)$"):
        db.sqlalchemy_url("mysql://u@h/db")
    with pytest.raises(ValueError, match="unsupported database URL scheme"):
        db.Database("mysql://u@h/db")  # refused when built, not at its first query
