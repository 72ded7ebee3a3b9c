"""The limits a leading distributor's journal sessions carry, so that one cut off in the
middle of a write cannot hold every takeover (the scenario: tests/test_multihost.py)."""

from __future__ import annotations

import psycopg

from clawd.journal_pg import session_lost, with_stall_limits


def test_limits_reach_the_server_and_the_client() -> None:
    url = with_stall_limits("postgresql://clawd@10.0.0.5:5432/clawd", 2.5)
    info = psycopg.conninfo.conninfo_to_dict(url)
    assert info["host"] == "10.0.0.5" and info["dbname"] == "clawd"
    assert info["tcp_user_timeout"] == "2500"
    assert info["options"] == (
        "-c idle_in_transaction_session_timeout=2500 -c tcp_user_timeout=2500"
    )


def test_a_url_with_its_own_query_and_options_keeps_them() -> None:
    url = with_stall_limits("postgresql://u@/db?host=/run/pg&options=-c%20work_mem%3D64MB", 1)
    info = psycopg.conninfo.conninfo_to_dict(url)
    assert info["host"] == "/run/pg"
    assert info["options"] == "-c work_mem=64MB"
    assert info["tcp_user_timeout"] == "1000"


def test_only_a_lost_connection_counts_as_a_lost_session() -> None:
    assert session_lost(psycopg.OperationalError("the connection is closed"))
    assert not session_lost(psycopg.errors.UniqueViolation("duplicate key"))
    assert not session_lost(ValueError("bug"))
