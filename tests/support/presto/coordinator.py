"""A test coordinator that speaks the Trino/Presto client protocol, backed by DuckDB.

No Trino or Presto server can be installed on our machines, so the Presto domain is
tested against this stand-in. It follows the client protocol as the official clients
expect it (the `trino` Python client checks it in tests/presto.rs):

- `POST /v1/statement` with the SQL as body; the user header is required; headers come
  in the `X-Trino-*` or the `X-Presto-*` dialect and are answered in the same one.
- Every answer is 200 JSON with `id`, `infoUri`, `stats.state` and, until the query is
  done, `nextUri`; results come in pages of `--page-rows` rows.
- `DELETE nextUri` cancels (204); errors carry `message`, `errorCode`, `errorName`,
  `errorType`, `errorLocation` and `failureInfo`.
- `system.runtime.queries` and `CALL system.runtime.kill_query(...)`.
- A statement containing `sleep(<seconds>)` stays RUNNING that long (or until it is
  cancelled or killed), then runs with `sleep(...)` read as `true`.

Test-only: `GET /_test/events` lists what the coordinator saw (cancels, kills), and
`POST /_test/fail?status=503&times=2` makes the next statement POSTs answer that status.

It prints `{"port": N}` on stdout when it listens and exits when its standard input
closes (the test process died or dropped it).
"""

import argparse
import base64
import datetime
import decimal
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import duckdb

# Trino's StandardErrorCode values for the errors this coordinator raises.
ERRORS = {
    "GENERIC_USER_ERROR": (0, "USER_ERROR"),
    "SYNTAX_ERROR": (1, "USER_ERROR"),
    "USER_CANCELED": (3, "USER_ERROR"),
    "NOT_FOUND": (5, "USER_ERROR"),
    "FUNCTION_NOT_FOUND": (6, "USER_ERROR"),
    "NOT_SUPPORTED": (13, "USER_ERROR"),
    "INVALID_SESSION_PROPERTY": (14, "USER_ERROR"),
    "ADMINISTRATIVELY_KILLED": (38, "USER_ERROR"),
    "CATALOG_NOT_FOUND": (44, "USER_ERROR"),
    "SCHEMA_NOT_FOUND": (45, "USER_ERROR"),
    "TABLE_NOT_FOUND": (46, "USER_ERROR"),
    "COLUMN_NOT_FOUND": (47, "USER_ERROR"),
    "GENERIC_INTERNAL_ERROR": (65536, "INTERNAL_ERROR"),
}

# Catalogs the coordinator serves. DuckDB has its own `system` catalog, so Trino's
# `system` lives in DuckDB as `trino_system`.
CATALOGS = ["hive", "system"]
SYSTEM_ALIAS = "trino_system"
# Hive partition keys, shown by DESCRIBE as Trino's Hive connector does.
PARTITION_KEYS = {("warehouse", "orders_daily"): ["ds"], ("staging", "events_raw"): ["ds"]}
MISSING_DAY = "2026-11-24"


class QueryError(Exception):
    def __init__(self, name, message, location=None):
        super().__init__(message)
        self.name = name
        self.message = message
        self.location = location

    def to_json(self):
        code, kind = ERRORS[self.name]
        error = {
            "message": self.message,
            "errorCode": code,
            "errorName": self.name,
            "errorType": kind,
            "failureInfo": {"type": "io.trino.spi.TrinoException", "message": self.message, "suppressed": [], "stack": []},
        }
        if self.location:
            error["errorLocation"] = {"lineNumber": self.location[0], "columnNumber": self.location[1]}
            error["failureInfo"]["errorLocation"] = error["errorLocation"]
        return error


class Query:
    def __init__(self, sql, user, source, dialect, catalog, schema):
        self.id = "{}_{:05d}_{}".format(
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d_%H%M%S"),
            Coordinator.next_number(),
            uuid.uuid4().hex[:5],
        )
        self.slug = "y" + uuid.uuid4().hex[:12]
        self.sql = sql
        self.user = user
        self.source = source
        self.dialect = dialect
        self.catalog = catalog
        self.schema = schema
        self.created = datetime.datetime.now(datetime.timezone.utc)
        self.ended = None
        self.state = "QUEUED"
        self.columns = None
        self.rows = []
        self.error = None
        self.update_type = None
        self.headers = []  # (name without prefix, value) sent with the final answer
        self.run_until = None  # a sleeping statement runs until then
        self.next_row = 0
        self.answers = {}  # (phase, token) -> answer already given (a client may repeat a GET)
        self.lock = threading.Lock()

    def done(self):
        return self.state in ("FINISHED", "FAILED")

    def fail(self, error):
        if not self.done():
            self.error = error
            self.state = "FAILED"
            self.ended = datetime.datetime.now(datetime.timezone.utc)


class Coordinator:
    counter = 0
    counter_lock = threading.Lock()

    @classmethod
    def next_number(cls):
        with cls.counter_lock:
            cls.counter += 1
            return cls.counter

    def __init__(self, page_rows, basic, bearer):
        self.page_rows = page_rows
        self.basic = basic
        self.bearer = bearer
        self.queries = {}
        self.events = []
        self.fail_next = []  # statuses the next POSTs answer with
        self.lock = threading.Lock()
        self.db_lock = threading.Lock()
        self.db = duckdb.connect(":memory:")
        self.db.execute("SET TimeZone = 'UTC'")
        build_warehouse(self.db)

    def event(self, kind, **fields):
        with self.lock:
            self.events.append(dict(kind=kind, at=time.time(), **fields))

    # --- running statements -------------------------------------------------------

    def start(self, query):
        with self.lock:
            self.queries[query.id] = query
        sleep = re.search(r"\bsleep\s*\(\s*([0-9.]+)\s*\)", query.sql, re.IGNORECASE)
        if sleep:
            query.state = "RUNNING"
            query.run_until = time.time() + float(sleep.group(1))
        else:
            self.execute(query)

    def advance(self, query):
        """Moves a sleeping statement on when its time is up."""
        if query.run_until is not None and not query.done() and time.time() >= query.run_until:
            query.run_until = None
            self.execute(query)

    def execute(self, query):
        try:
            self.run_statement(query)
            query.state = "FINISHED"
        except QueryError as e:
            query.state = "FAILED"
            query.error = e.to_json()
        except duckdb.Error as e:
            query.state = "FAILED"
            query.error = translate_duckdb_error(e, query).to_json()
        query.ended = datetime.datetime.now(datetime.timezone.utc)

    def run_statement(self, query):
        sql = query.sql.strip().rstrip(";").strip()
        sql_nosleep = re.sub(r"\bsleep\s*\(\s*[0-9.]+\s*\)", "true", sql, flags=re.IGNORECASE)
        words = sql.split()
        head = " ".join(w.upper() for w in words[:2])
        if re.match(r"(?is)^call\s+system\.runtime\.kill_query\s*\(", sql):
            return self.kill(query, sql)
        if re.match(r"(?i)^(show|describe|desc)\s", sql):
            # Quoted identifiers name the same objects here (all names are lower case).
            sql = sql.replace('"', "")
        if re.match(r"(?i)^show\s+catalogs\b", sql):
            return self.show(query, "Catalog", [[c] for c in CATALOGS], like_of(sql))
        if re.match(r"(?i)^show\s+schemas\b", sql):
            catalog = (re.search(r"(?i)\b(?:from|in)\s+(\w+)", sql) or [None, query.catalog])[1]
            return self.show(query, "Schema", [[s] for s in self.schemas(catalog)], like_of(sql))
        if re.match(r"(?i)^show\s+tables\b", sql):
            target = re.search(r"(?i)\b(?:from|in)\s+([\w.]+)", sql)
            catalog, schema = self.qualify_schema(target.group(1) if target else None, query)
            return self.show(query, "Table", [[t] for t in self.tables(catalog, schema)], like_of(sql))
        if re.match(r"(?i)^(describe|desc|show\s+columns\s+from)\s+", sql):
            name = re.sub(r"(?i)^(describe|desc|show\s+columns\s+from)\s+", "", sql).strip()
            return self.describe(query, name)
        if head in ("SET SESSION",):
            m = re.match(r"(?is)^set\s+session\s+([\w.]+)\s*=\s*(.+)$", sql)
            if not m:
                raise QueryError("SYNTAX_ERROR", "line 1:1: mismatched input", (1, 1))
            value = m.group(2).strip().strip("'")
            query.headers.append(("Set-Session", "{}={}".format(m.group(1), urllib.parse.quote(value))))
            query.update_type = "SET SESSION"
            return None
        if head in ("RESET SESSION",):
            query.headers.append(("Clear-Session", words[2]))
            query.update_type = "RESET SESSION"
            return None
        if re.match(r"(?i)^use\s+", sql):
            parts = words[1].split(".")
            if len(parts) == 2:
                query.headers.append(("Set-Catalog", parts[0]))
            query.headers.append(("Set-Schema", parts[-1]))
            query.update_type = "USE"
            return None
        if re.match(r"(?i)^explain\b", sql):
            inner = re.sub(r"(?i)^explain\s+(\((?:[^)]*)\)\s*)?", "", sql_nosleep)
            rows = self.duck(query, "EXPLAIN " + inner)
            plan = "\n".join(str(r[-1]) for r in rows[1])
            query.columns = [column("Query Plan", "varchar")]
            query.rows = [[plan]]
            return None
        if re.match(r"(?i)^(select|with|values|table)\b", sql):
            description, rows = self.duck(query, sql_nosleep)
            query.columns = [column(d[0], trino_type(d[1])) for d in description]
            query.rows = [[encode(v, c["type"]) for v, c in zip(r, query.columns)] for r in rows]
            return None
        if re.match(r"(?i)^(insert|create|drop|delete|update|alter|merge|truncate|grant|revoke)\b", sql):
            raise QueryError("NOT_SUPPORTED", "This connector does not support writes", (1, 1))
        raise QueryError("SYNTAX_ERROR", "line 1:1: mismatched input '{}'".format(words[0] if words else ""), (1, 1))

    def show(self, query, name, rows, like):
        if like is not None:
            pattern = "^" + re.escape(like).replace("%", ".*").replace("_", ".") + "$"
            rows = [r for r in rows if re.match(pattern, r[0])]
        query.columns = [column(name, "varchar")]
        query.rows = rows

    def schemas(self, catalog):
        if catalog is None:
            raise QueryError("GENERIC_USER_ERROR", "line 1:1: Catalog must be specified when session catalog is not set", (1, 1))
        if catalog not in CATALOGS:
            raise QueryError("CATALOG_NOT_FOUND", "line 1:1: Catalog '{}' not found".format(catalog), (1, 1))
        duck_catalog = SYSTEM_ALIAS if catalog == "system" else catalog
        with self.db_lock:
            rows = self.db.execute(
                "SELECT schema_name FROM information_schema.schemata WHERE catalog_name = ? ORDER BY 1", [duck_catalog]
            ).fetchall()
        names = [r[0] for r in rows if r[0] not in ("main", "pg_catalog")]
        return names + ["information_schema"]

    def tables(self, catalog, schema):
        if schema not in self.schemas(catalog):
            raise QueryError("SCHEMA_NOT_FOUND", "line 1:1: Schema '{}' does not exist".format(schema), (1, 1))
        duck_catalog = SYSTEM_ALIAS if catalog == "system" else catalog
        with self.db_lock:
            rows = self.db.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? "
                "ORDER BY 1",
                [duck_catalog, schema],
            ).fetchall()
        return [r[0] for r in rows if "$" not in r[0]]

    def qualify_schema(self, name, query):
        parts = name.split(".") if name else []
        if len(parts) == 2:
            return parts[0], parts[1]
        if len(parts) == 1 and query.catalog:
            return query.catalog, parts[0]
        if not parts and query.catalog and query.schema:
            return query.catalog, query.schema
        raise QueryError("GENERIC_USER_ERROR", "line 1:1: Schema must be specified when session schema is not set", (1, 1))

    def describe(self, query, name):
        parts = [p.strip('"') for p in name.split(".")]
        if len(parts) == 1:
            catalog, schema = self.qualify_schema(None, query)
        elif len(parts) == 2:
            catalog, schema = self.qualify_schema(parts[0], query)
        else:
            catalog, schema = parts[0], parts[1]
        table = parts[-1]
        if table not in self.tables(catalog, schema):
            raise QueryError(
                "TABLE_NOT_FOUND", "line 1:1: Table '{}.{}.{}' does not exist".format(catalog, schema, table), (1, 1)
            )
        duck_catalog = SYSTEM_ALIAS if catalog == "system" else catalog
        with self.db_lock:
            rows = self.db.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_catalog = ? AND table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                [duck_catalog, schema, table],
            ).fetchall()
        keys = PARTITION_KEYS.get((schema, table), [])
        query.columns = [column(n, "varchar") for n in ("Column", "Type", "Extra", "Comment")]
        query.rows = [[n, trino_type(t), "partition key" if n in keys else "", ""] for n, t in rows]

    def duck(self, query, sql):
        """Runs SQL on DuckDB in the query's session; gives (description, rows)."""
        sql = re.sub(r"(?i)\bsystem\.runtime\.", SYSTEM_ALIAS + ".runtime.", sql)
        with self.db_lock:
            if re.search(r"(?i)\b" + SYSTEM_ALIAS + r"\.runtime\.queries\b", sql):
                self.refresh_runtime_queries()
            cursor = self.db.cursor()
            try:
                if query.catalog:
                    duck_catalog = SYSTEM_ALIAS if query.catalog == "system" else query.catalog
                    target = duck_catalog + ("." + query.schema if query.schema else "")
                    try:
                        cursor.execute("USE " + target)
                    except duckdb.Error:
                        pass
                cursor.execute(sql)
                return cursor.description or [], cursor.fetchall()
            finally:
                cursor.close()

    def refresh_runtime_queries(self):
        with self.lock:
            queries = list(self.queries.values())
        self.db.execute("DELETE FROM {}.runtime.queries".format(SYSTEM_ALIAS))
        for q in queries:
            error = q.error or {}
            self.db.execute(
                "INSERT INTO {}.runtime.queries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)".format(SYSTEM_ALIAS),
                [
                    q.id,
                    q.state,
                    q.user,
                    q.source,
                    q.sql,
                    q.created.replace(tzinfo=None),
                    q.created.replace(tzinfo=None),
                    q.ended.replace(tzinfo=None) if q.ended else None,
                    error.get("errorType"),
                    error.get("errorName"),
                ],
            )

    def kill(self, query, sql):
        target = re.search(r"(?i)query_id\s*=>\s*'([^']*)'", sql) or re.search(r"\(\s*'([^']*)'", sql)
        message = re.search(r"(?i)message\s*=>\s*'((?:[^']|'')*)'", sql)
        if not target:
            raise QueryError("GENERIC_USER_ERROR", "line 1:1: Required procedure argument 'QUERY_ID' is missing", (1, 1))
        with self.lock:
            victim = self.queries.get(target.group(1))
        if victim is None:
            raise QueryError("NOT_FOUND", "Target query not found: " + target.group(1))
        with victim.lock:
            if victim.done():
                raise QueryError("NOT_SUPPORTED", "Target query is not running: " + victim.id)
            text = "Query killed. Message: " + message.group(1).replace("''", "'") if message else "Query killed"
            victim.fail(QueryError("ADMINISTRATIVELY_KILLED", text).to_json())
        self.event("kill", query_id=victim.id, by=query.user, message=message.group(1) if message else None)
        query.update_type = "CALL"

    # --- protocol answers ---------------------------------------------------------

    def answer(self, query, base, token, phase):
        """The answer for GET `phase/{id}/{slug}/{token}`; a repeated token gets the same answer."""
        with query.lock:
            if (phase, token) in query.answers:
                return query.answers[(phase, token)]
            self.advance(query)
            body = {
                "id": query.id,
                "infoUri": "{}/ui/query.html?{}".format(base, query.id),
                "stats": stats(query),
                "warnings": [],
            }
            headers = []
            if phase == "queued" and not query.done():
                body["stats"]["state"] = "QUEUED" if query.state == "QUEUED" else query.state
                body["nextUri"] = "{}/v1/statement/executing/{}/{}/0".format(base, query.id, query.slug)
            elif not query.done():
                body["nextUri"] = "{}/v1/statement/executing/{}/{}/{}".format(base, query.id, query.slug, token + 1)
            elif query.state == "FAILED":
                body["error"] = query.error
            else:
                if query.columns is not None:
                    body["columns"] = query.columns
                    page = query.rows[query.next_row : query.next_row + self.page_rows]
                    query.next_row += len(page)
                    if page:
                        body["data"] = page
                    if query.next_row < len(query.rows):
                        body["stats"]["state"] = "RUNNING"
                        body["nextUri"] = "{}/v1/statement/executing/{}/{}/{}".format(
                            base, query.id, query.slug, token + 1
                        )
                if query.update_type:
                    body["updateType"] = query.update_type
                if "nextUri" not in body:
                    headers = query.headers
            query.answers[(phase, token)] = (body, headers)
            return body, headers

    def cancel(self, query):
        with query.lock:
            was_done = query.done()
            query.fail(QueryError("USER_CANCELED", "Query was canceled").to_json())
        self.event("cancel", query_id=query.id, was_done=was_done)


def stats(query):
    rows = len(query.rows) if query.done() else 0
    return {
        "state": query.state,
        "queued": query.state == "QUEUED",
        "scheduled": query.state != "QUEUED",
        "nodes": 1,
        "totalSplits": 1,
        "queuedSplits": 0,
        "runningSplits": 0 if query.done() else 1,
        "completedSplits": 1 if query.done() else 0,
        "cpuTimeMillis": 1,
        "wallTimeMillis": 1,
        "queuedTimeMillis": 0,
        "elapsedTimeMillis": int((time.time() - query.created.timestamp()) * 1000),
        "processedRows": rows,
        "processedBytes": 0,
        "physicalInputBytes": 0,
        "peakMemoryBytes": 0,
        "spilledBytes": 0,
    }


def like_of(sql):
    m = re.search(r"(?i)\blike\s+'([^']*)'", sql)
    return m.group(1) if m else None


def column(name, type_name):
    return {"name": name, "type": type_name, "typeSignature": type_signature(type_name)}


def type_signature(type_name):
    m = re.match(r"^(\w+)(?:\((.*)\))?(.*)$", type_name)
    raw, args, rest = m.group(1), m.group(2), m.group(3).strip()
    if rest:  # "timestamp(3) with time zone"
        raw = raw + " " + rest
    if raw == "varchar" and args is None:
        args = "2147483647"
    arguments = [{"kind": "LONG", "value": int(a)} for a in (args.split(",") if args else [])]
    return {"rawType": raw, "arguments": arguments}


def trino_type(duck_type):
    t = str(duck_type).upper()
    simple = {
        "VARCHAR": "varchar",
        "BIGINT": "bigint",
        "INTEGER": "integer",
        "SMALLINT": "smallint",
        "TINYINT": "tinyint",
        "DOUBLE": "double",
        "FLOAT": "real",
        "BOOLEAN": "boolean",
        "DATE": "date",
        "TIMESTAMP": "timestamp(3)",
        "TIMESTAMP WITH TIME ZONE": "timestamp(3) with time zone",
        "HUGEINT": "decimal(38,0)",
    }
    if t in simple:
        return simple[t]
    m = re.match(r"^DECIMAL\((\d+),\s*(\d+)\)$", t)
    if m:
        return "decimal({},{})".format(m.group(1), m.group(2))
    return "varchar"


def encode(value, type_name):
    if value is None:
        return None
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S.") + "{:03d}".format(value.microsecond // 1000)
        return text + " UTC" if "time zone" in type_name else text
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, float) and value != value:
        return "NaN"
    if type_name.startswith("decimal"):
        return str(value)
    return value


def translate_duckdb_error(error, query):
    text = str(error)
    sql = query.sql

    def where(token):
        index = sql.lower().find(token.lower()) if token else -1
        if index < 0:
            return 1, 1
        line = sql.count("\n", 0, index) + 1
        col = index - (sql.rfind("\n", 0, index) + 1) + 1
        return line, col

    m = re.search(r"Table with name ([\w$\"]+) does not exist", text)
    if m:
        name = m.group(1).strip('"')
        qualified = re.search(r"(?i)\b((?:\w+\.){0,2}" + re.escape(name) + r")\b", sql)
        shown = qualified.group(1) if qualified else name
        parts = shown.split(".")
        if len(parts) < 3:
            prefix = [p for p in (query.catalog, query.schema) if p][: 3 - len(parts)]
            parts = prefix[len(prefix) - (3 - len(parts)) :] + parts if len(prefix) >= 3 - len(parts) else parts
        loc = where(shown)
        shown = ".".join(parts).replace(SYSTEM_ALIAS, "system")
        return QueryError("TABLE_NOT_FOUND", "line {}:{}: Table '{}' does not exist".format(*loc, shown), loc)
    m = re.search(r'(?:Referenced column|column) "?(\w+)"? not found', text)
    if m:
        loc = where(m.group(1))
        return QueryError("COLUMN_NOT_FOUND", "line {}:{}: Column '{}' cannot be resolved".format(*loc, m.group(1)), loc)
    m = re.search(r'syntax error at or near "([^"]*)"', text)
    if m:
        loc = where(m.group(1))
        return QueryError("SYNTAX_ERROR", "line {}:{}: mismatched input '{}'".format(*loc, m.group(1)), loc)
    m = re.search(r"Scalar Function with name (\w+) does not exist", text)
    if m:
        loc = where(m.group(1))
        return QueryError("FUNCTION_NOT_FOUND", "line {}:{}: Function '{}' not registered".format(*loc, m.group(1)), loc)
    if "Parser Error" in text:
        return QueryError("SYNTAX_ERROR", "line 1:1: " + text.split("\n")[0], (1, 1))
    return QueryError("GENERIC_USER_ERROR", text.split("\n")[0])


def build_warehouse(db):
    db.execute("ATTACH ':memory:' AS hive")
    db.execute("ATTACH ':memory:' AS " + SYSTEM_ALIAS)
    db.execute("CREATE SCHEMA hive.warehouse")
    db.execute("CREATE SCHEMA hive.staging")
    db.execute(
        "CREATE TABLE hive.warehouse.orders_daily (order_id BIGINT, customer_id BIGINT, amount DECIMAL(12,2), "
        "status VARCHAR, ds VARCHAR)"
    )
    days = ["2026-11-{:02d}".format(d) for d in range(20, 27) if "2026-11-{:02d}".format(d) != MISSING_DAY]
    order = 0
    for ds in days:
        for i in range(40):
            order += 1
            status = ["shipped", "pending", "cancelled"][order % 3]
            db.execute(
                "INSERT INTO hive.warehouse.orders_daily VALUES (?, ?, ?, ?, ?)",
                [order, 100 + order % 17, decimal.Decimal(order * 7 % 1000) / 4, status, ds],
            )
    db.execute(
        "CREATE VIEW hive.warehouse.\"orders_daily$partitions\" AS "
        "SELECT DISTINCT ds FROM hive.warehouse.orders_daily ORDER BY ds"
    )
    db.execute(
        "CREATE TABLE hive.warehouse.customers (customer_id BIGINT, name VARCHAR, country VARCHAR, "
        "signed_up TIMESTAMP)"
    )
    for c in range(100, 117):
        db.execute(
            "INSERT INTO hive.warehouse.customers VALUES (?, ?, ?, ?)",
            [c, "customer-{}".format(c), ["DE", "US", "JP", "BR"][c % 4], datetime.datetime(2026, 1, 1 + c % 28, 9, 30)],
        )
    db.execute("CREATE TABLE hive.staging.events_raw (event_id BIGINT, kind VARCHAR, payload VARCHAR, ds VARCHAR)")
    db.execute("INSERT INTO hive.staging.events_raw VALUES (1, 'click', '{\"page\": \"/\"}', '2026-11-26')")
    db.execute("CREATE SCHEMA {}.runtime".format(SYSTEM_ALIAS))
    db.execute(
        "CREATE TABLE {}.runtime.queries (query_id VARCHAR, state VARCHAR, \"user\" VARCHAR, source VARCHAR, "
        "query VARCHAR, created TIMESTAMP, started TIMESTAMP, \"end\" TIMESTAMP, error_type VARCHAR, "
        "error_code VARCHAR)".format(SYSTEM_ALIAS)
    )
    db.execute(
        "CREATE TABLE {}.runtime.nodes (node_id VARCHAR, http_uri VARCHAR, node_version VARCHAR, "
        "coordinator BOOLEAN, state VARCHAR)".format(SYSTEM_ALIAS)
    )
    db.execute("INSERT INTO {}.runtime.nodes VALUES ('test-coordinator', 'http://127.0.0.1', '476', true, 'active')".format(SYSTEM_ALIAS))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    coordinator = None  # set in main

    def log_message(self, fmt, *args):
        sys.stderr.write("coordinator: " + (fmt % args) + "\n")

    def base(self):
        return "http://" + (self.headers.get("Host") or "127.0.0.1")

    def dialect(self):
        presto = any(k.lower().startswith("x-presto-") for k in self.headers.keys())
        return "Presto" if presto else "Trino"

    def header(self, name):
        return self.headers.get("X-{}-{}".format(self.dialect(), name))

    def send(self, status, body=None, headers=(), content_type="application/json"):
        data = b"" if body is None else (json.dumps(body).encode() if not isinstance(body, bytes) else body)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if status != 204:
            self.wfile.write(data)

    def authorized(self):
        c = self.coordinator
        given = self.headers.get("Authorization", "")
        if c.basic:
            expected = "Basic " + base64.b64encode(c.basic.encode()).decode()
            if given != expected:
                self.send(401, b"Unauthorized", [("WWW-Authenticate", 'Basic realm="Trino"')], "text/plain")
                return False
        if c.bearer:
            if given != "Bearer " + c.bearer:
                self.send(401, b"Unauthorized", [("WWW-Authenticate", "Bearer")], "text/plain")
                return False
        return True

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode() if length else ""

    def do_POST(self):
        c = self.coordinator
        path = urllib.parse.urlparse(self.path)
        if path.path == "/_test/fail":
            params = urllib.parse.parse_qs(path.query)
            with c.lock:
                c.fail_next = [int(params["status"][0])] * int(params.get("times", ["1"])[0])
            self.read_body()
            return self.send(204)
        if path.path != "/v1/statement":
            return self.send(404, b"Not Found", content_type="text/plain")
        sql = self.read_body()
        with c.lock:
            forced = c.fail_next.pop(0) if c.fail_next else None
        if forced:
            c.event("forced_status", status=forced)
            return self.send(forced, b"try again", content_type="text/plain")
        if not self.authorized():
            return None
        user = self.header("User")
        if not user:
            return self.send(400, b"User must be set", content_type="text/plain")
        if not sql.strip():
            return self.send(400, b"SQL statement is empty", content_type="text/plain")
        session = self.header("Session") or ""
        query = Query(sql, user, self.header("Source"), self.dialect(), self.header("Catalog"), self.header("Schema"))
        query.session = session
        c.event("statement", query_id=query.id, dialect=query.dialect, user=user, sql=sql, session=session)
        c.start(query)
        body = {
            "id": query.id,
            "infoUri": "{}/ui/query.html?{}".format(self.base(), query.id),
            "nextUri": "{}/v1/statement/queued/{}/{}/1".format(self.base(), query.id, query.slug),
            "stats": dict(stats(query), state="QUEUED"),
            "warnings": [],
        }
        self.send(200, body)

    def lookup(self):
        c = self.coordinator
        m = re.match(r"^/v1/statement/(queued|executing)/([^/]+)/([^/]+)/(\d+)$", urllib.parse.urlparse(self.path).path)
        if not m:
            return None
        with c.lock:
            query = c.queries.get(m.group(2))
        if query is None or query.slug != m.group(3):
            return None
        return m.group(1), query, int(m.group(4))

    def do_GET(self):
        c = self.coordinator
        if self.path == "/_test/events":
            with c.lock:
                return self.send(200, list(c.events))
        if self.path == "/v1/info":
            return self.send(200, {"nodeVersion": {"version": "476"}, "environment": "test", "coordinator": True,
                                   "starting": False, "uptime": "1m"})
        if not self.authorized():
            return None
        found = self.lookup()
        if found is None:
            return self.send(404, b"Query not found", content_type="text/plain")
        phase, query, token = found
        # A running statement is long-polled a little, as a coordinator waits for data.
        deadline = time.time() + 0.2
        while query.run_until is not None and not query.done() and time.time() < min(deadline, query.run_until):
            time.sleep(0.02)
        body, headers = c.answer(query, self.base(), token, phase)
        prefix = "X-{}-".format(query.dialect)
        self.send(200, body, [(prefix + k, v) for k, v in headers])

    def do_DELETE(self):
        if not self.authorized():
            return None
        found = self.lookup()
        if found is None:
            return self.send(404, b"Query not found", content_type="text/plain")
        self.coordinator.cancel(found[1])
        self.send(204)


def watchdog():
    """Exits when standard input closes: the test that started us is gone."""
    while sys.stdin.buffer.read(1024):
        pass
    import os

    os._exit(0)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--page-rows", type=int, default=100)
    parser.add_argument("--basic", help="user:password that must be presented")
    parser.add_argument("--bearer", help="token that must be presented")
    args = parser.parse_args()
    Handler.coordinator = Coordinator(args.page_rows, args.basic, args.bearer)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=watchdog, daemon=True).start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
