"""PostgreSQL (the DNS aggregator's database, under Patroni): the only module that talks to it
(psycopg2). PowerDNS's role, database and schema; a writer connection for the aggregator; the
SQL of PowerDNS's tables (a zone written in one transaction, zones pvc no longer has dropped)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

PDNS_SCHEMA = Path("/usr/share/pdns-backend-pgsql/schema/schema.pgsql.sql")
# libpq's connection to a member that went silent (powered off, cut off) ends within about 5 s
# (TCP keepalive and user timeout) instead of the kernel's minutes: the client connects to
# another member. For every pvc connection and PowerDNS's.
DEAD_PEER = ("keepalives=1 keepalives_idle=2 keepalives_interval=1 keepalives_count=3 "
             "tcp_user_timeout=5000")
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


# ---------------------------------------------------------------------- PowerDNS's tables

TTL = 60
ACCOUNT = "pvc"   # zones pvc manages (it never touches others)


@dataclass(frozen=True)
class Record:
    name: str
    type: str
    content: str
    ttl: int


def soa(domain: str, serial: int) -> str:
    return f"ns1.{domain} hostmaster.{domain} {serial} 1800 300 86400 {TTL}"


WRITER_KIND = "X-PVC-WRITER"   # domainmetadata: the node whose aggregator last wrote the zone


def write_zone(conn: Any, domain: str, wanted: set[Record], writer: str) -> bool:
    """One transaction: the zone's records become `wanted`; True if anything changed."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM domains WHERE name = %s FOR UPDATE", (domain,))
        row = cur.fetchone()
        if row is None:
            cur.execute("INSERT INTO domains (name, type, account) VALUES (%s, 'NATIVE', %s) "
                        "RETURNING id", (domain, ACCOUNT))
            row = cur.fetchone()
        domain_id = row[0]
        cur.execute("SELECT id, name, type, content, ttl FROM records WHERE domain_id = %s",
                    (domain_id,))
        have: dict[Record, int] = {}
        serial = 0
        for rid, name, rtype, content, ttl in cur.fetchall():
            if rtype == "SOA":
                serial = int(content.split()[2])
                have[Record(name, rtype, "", 0)] = rid
            else:
                have[Record(name, rtype, content, ttl)] = rid
        stale = [rid for rec, rid in have.items() if rec.type != "SOA" and rec not in wanted]
        fresh = [rec for rec in wanted if rec not in have]
        if not stale and not fresh and serial:
            return False
        if stale:
            cur.execute("DELETE FROM records WHERE id = ANY(%s)", (stale,))
        for rec in fresh:
            cur.execute("INSERT INTO records (domain_id, name, type, content, ttl, auth) "
                        "VALUES (%s, %s, %s, %s, %s, true)",
                        (domain_id, rec.name, rec.type, rec.content, rec.ttl))
        cur.execute("DELETE FROM records WHERE domain_id = %s AND type = 'SOA'", (domain_id,))
        cur.execute("INSERT INTO records (domain_id, name, type, content, ttl, auth) "
                    "VALUES (%s, %s, 'SOA', %s, %s, true)",
                    (domain_id, domain, soa(domain, serial + 1), TTL))
        cur.execute("DELETE FROM domainmetadata WHERE domain_id = %s AND kind = %s",
                    (domain_id, WRITER_KIND))
        cur.execute("INSERT INTO domainmetadata (domain_id, kind, content) VALUES (%s, %s, %s)",
                    (domain_id, WRITER_KIND, writer))
        return True


def drop_other_zones(conn: Any, keep: set[str]) -> list[str]:
    """Zones pvc made for networks that are gone."""
    with conn, conn.cursor() as cur:
        cur.execute("SELECT id, name FROM domains WHERE account = %s", (ACCOUNT,))
        gone = [(i, n) for i, n in cur.fetchall() if n not in keep]
        for domain_id, _ in gone:
            cur.execute("DELETE FROM records WHERE domain_id = %s", (domain_id,))
            cur.execute("DELETE FROM domainmetadata WHERE domain_id = %s", (domain_id,))
            cur.execute("DELETE FROM domains WHERE id = %s", (domain_id,))
    return [n for _, n in gone]
