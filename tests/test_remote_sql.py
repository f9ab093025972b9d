"""planner.remote_sql: the SQL sent to the node that holds a partition (no server needed)."""

from __future__ import annotations

import pytest

from shoal.fdw.quals import Qual, Quals, SortKey
from shoal.planner import remote_sql


def test_identifiers_are_always_quoted() -> None:
    assert remote_sql.quote_ident("id") == '"id"'
    assert remote_sql.quote_ident('we"ird Name') == '"we""ird Name"'
    assert remote_sql.qualified_name("public", "select") == '"public"."select"'


def test_select_with_quals_order_and_limit() -> None:
    quals = Quals([Qual("id", "=", 3, "(id = 3)"), Qual(None, None, None, "((a + b) > 1)")])
    sql = remote_sql.select_sql(
        '"s"."t"', ["id", "name"], quals, [SortKey("name", 2, True, False, None)], limit=10
    )
    assert sql == (
        'SELECT "id", "name" FROM "s"."t" WHERE ((id = 3)) AND (((a + b) > 1)) '
        'ORDER BY "name" DESC NULLS LAST LIMIT 10'
    )


def test_select_without_columns_keeps_one_row_per_row() -> None:
    assert remote_sql.select_sql('"t"', [], Quals()) == 'SELECT FROM "t"'


def test_a_sample_takes_a_little_more_than_asked_of_a_big_table_and_all_of_a_small_one() -> None:
    assert remote_sql.sample_sql('"t"', ["id", "we ird"], 30000, 1_000_000) == (
        'SELECT "id", "we ird" FROM "t" TABLESAMPLE BERNOULLI (3.6)')
    assert remote_sql.sample_sql('"t"', ["id"], 30000, 30001) == 'SELECT "id" FROM "t"'
    assert remote_sql.sample_sql('"t"', [], 10, 0) == 'SELECT FROM "t"'
    assert "LIMIT" not in remote_sql.sample_sql('"t"', ["id"], 1, 10**9)  # a LIMIT favours the first pages


def test_insert_with_returning() -> None:
    assert remote_sql.insert_sql('"t"', ["a", "b"], returning=["a", "b", "c"]) == (
        'INSERT INTO "t" ("a", "b") VALUES ($1, $2) RETURNING "a", "b", "c"'
    )
    assert remote_sql.insert_sql('"t"', []) == 'INSERT INTO "t" DEFAULT VALUES'


def test_multi_row_insert_numbers_parameters_across_rows() -> None:
    assert remote_sql.insert_sql('"t"', ["a", "b"], rows=3) == (
        'INSERT INTO "t" ("a", "b") VALUES ($1, $2), ($3, $4), ($5, $6)'
    )


def test_whole_update_and_delete() -> None:
    quals = Quals([Qual("id", "=", 3, "(id = $1)")])
    assert remote_sql.modify_sql('"t"', "UPDATE", quals, {'we"ird': "(b + $2)", "c": "$3"}) == (
        'UPDATE "t" SET "we""ird" = (b + $2), "c" = $3 WHERE ((id = $1))'
    )
    assert remote_sql.modify_sql('"t"', "DELETE", Quals(), returning=["id", "b"]) == (
        'DELETE FROM "t" RETURNING "id", "b"'
    )


def test_whole_modification_refuses_what_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="at least one assignment"):
        remote_sql.modify_sql('"t"', "UPDATE", Quals(), {})
    with pytest.raises(ValueError, match="cannot modify"):
        remote_sql.modify_sql('"t"', "INSERT", Quals())


def test_insert_with_an_upsert_names_the_existing_row_and_the_conflict_target() -> None:
    upsert = remote_sql.Upsert(("k",), "my t", (("v", '(excluded.v || "my t".v)'), ("n", "$3")), "$4 > 0")
    assert remote_sql.insert_sql('"s"."t"', ["k", "v"], returning=["k"], upsert=upsert) == (
        'INSERT INTO "s"."t" AS "my t" ("k", "v") VALUES ($1, $2) ON CONFLICT ("k") DO UPDATE '
        'SET "v" = (excluded.v || "my t".v), "n" = $3 WHERE $4 > 0 RETURNING "k"'
    )
    # a table without a unique constraint has no conflict to resolve
    assert remote_sql.insert_sql('"t"', ["k"], upsert=remote_sql.Upsert((), "t", (("k", "1"),))) == (
        'INSERT INTO "t" AS "t" ("k") VALUES ($1)'
    )
