"""PostgreSQL (the DNS aggregator's database, under Patroni): the only module that talks to it
(psycopg2). PowerDNS's role, database and schema; a writer connection for the aggregator."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

PDNS_SCHEMA = Path("/usr/share/pdns-backend-pgsql/schema/schema.pgsql.sql")
Error = psycopg2.Error


def connect(dsn: str) -> Any:
    return psycopg2.connect(dsn)


def bootstrap_dns_database(host: str, port: int, superuser_password: str, dbname: str,
                           user: str, password: str) -> None:
    """PowerDNS's role, database and schema, on the database leader."""
    conn = psycopg2.connect(host=host, port=port, user="postgres", dbname="postgres",
                            password=superuser_password, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
        if not cur.fetchone():
            cur.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(
                sql.Identifier(user)), (password,))
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
        if not cur.fetchone():
            cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(user)))
    conn.close()
    conn = psycopg2.connect(host=host, port=port, user=user, dbname=dbname, password=password,
                            connect_timeout=5)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.domains') IS NOT NULL")
        if not cur.fetchone()[0]:
            cur.execute(PDNS_SCHEMA.read_text())
    conn.close()


def dns_database_answers(host: str, port: int, dbname: str, user: str, password: str) -> bool:
    """Does this member let PowerDNS's role read its zones (the schema has replicated)?"""
    try:
        conn = psycopg2.connect(host=host, port=port, user=user, dbname=dbname,
                                password=password, connect_timeout=2)
    except psycopg2.Error:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('public.records') IS NOT NULL")
            return bool(cur.fetchone()[0])
    finally:
        conn.close()
