"""Bytes per pending record in each durable store (Redis, PostgreSQL, SQLite) at 1M records.

Redis: the ``used_memory`` delta (``INFO memory``) over N records written by the store
(with the settings' own account SID, which the record leaves out, and with a subaccount's),
then where the bytes go (the allocations of one record, part by part of its packed value)
and what each step from 0.1's hash to today's string saved, measured the same way.
PostgreSQL: ``pg_total_relation_size`` of the table (heap, TOAST, every index) after
``VACUUM ANALYZE``. SQLite: the ``dbstat`` virtual table (the table and its indexes), or
the file's pages when ``dbstat`` is missing. Each SQL store also gets the same rows in a
few other layouts, to show what a schema change would save.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from . import fill
from .common import Figure, Section

TARGET = 200
JEMALLOC_CLASSES = [8, 16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512]
JEMALLOC_CLASSES += [640, 768, 896, 1024, 1280, 1536, 1792, 2048]


def _alloc(size: int) -> int:
    """Bytes jemalloc hands out for a request of ``size`` (its small size classes)."""
    return next((c for c in JEMALLOC_CLASSES if c >= size), size)


def _verdict(per_record: float) -> str:
    if per_record <= TARGET:
        return "met"
    return f"missed by {per_record - TARGET:.0f} B ({per_record / TARGET:.2f}x)"


# -- Redis ----------------------------------------------------------------------------


def _used(client: Any) -> int:
    return int(client.info("memory")["used_memory"])


def _lp_entry(value: bytes) -> tuple[int, str]:
    """Bytes of one listpack entry (encoding + data + back-length) and how it is kept."""
    text = value.decode("latin-1")
    if text.lstrip("-").isdigit() and str(int(text)) == text:
        n = int(text)
        if 0 <= n <= 127:
            return 2, "7-bit int"
        for size, bits in ((3, 13), (4, 16), (5, 24), (6, 32), (10, 64)):
            if -(2 ** (bits - 1)) <= n < 2 ** (bits - 1):
                return size, f"{bits}-bit int"
    length = len(value)
    header = 1 if length <= 63 else 2 if length <= 4095 else 5
    body = header + length
    backlen = 1 if body <= 127 else 2
    return body + backlen, f"{length}-char string"


def _redis_breakdown(client: Any, key: bytes, count: int) -> list[str]:
    """Where one record's bytes go, from its key and value (Redis 7, jemalloc)."""
    if client.type(key) == b"string":
        return _redis_string_breakdown(client, key, count)
    pairs = client.hgetall(key)
    rows = []
    total_lp = 7  # listpack header (total bytes, element count) and end byte
    for name, value in pairs.items():
        n_size, _ = _lp_entry(name)
        v_size, how = _lp_entry(value)
        total_lp += n_size + v_size
        shown = value.decode() if len(value) < 24 else value.decode()[:20] + "..."
        rows.append(
            f"| `{name.decode()}` = `{shown}` | {n_size} + {v_size} = {n_size + v_size} "
            f"| name {len(name)} chars; value a {how} |"
        )
    # sds header: 1 byte (sdshdr5) under 32 characters, 3 (sdshdr8) under 256; + NUL.
    key_sds = (1 if len(key) < 32 else 3) + len(key) + 1
    buckets = 2 * 8 * (1 << max(count - 1, 1).bit_length()) / count
    lines = [
        "| part | bytes | what |",
        "|---|---|---|",
        *rows,
        "| listpack header and end | 7 | total bytes, element count, end marker |",
        f"| listpack, allocated | {_alloc(total_lp)} | {total_lp} B used, jemalloc class "
        f"{_alloc(total_lp)} |",
        "| value object (robj) | 16 | type, encoding, LRU, refcount, pointer |",
        f"| key string (sds) | {_alloc(key_sds)} | `{key.decode()[:24]}...` {len(key)} chars "
        f"+ header and NUL = {key_sds}, class {_alloc(key_sds)} |",
        "| main dict entry | 32 | key, value, next pointers (24 B, class 32) |",
        "| expires dict entry | 32 | the same key's expiry time (PEXPIREAT) |",
        f"| dict bucket arrays | {buckets:.1f} | 8 B a bucket in the main and expires "
        f"tables (2^{(max(count - 1, 1)).bit_length()} buckets each, shared by {count:,} keys) |",
    ]
    estimate = _alloc(total_lp) + 16 + _alloc(key_sds) + 64 + buckets
    lines.append(f"| **estimate** | **{estimate:.0f}** | sum of the above |")
    return lines


def _key_rows(key: bytes, count: int) -> tuple[list[str], float]:
    """The rows every key costs whatever its value (key string, dict entries, buckets)."""
    key_sds = (1 if len(key) < 32 else 3) + len(key) + 1
    exponent = max(count - 1, 1).bit_length()
    buckets = 2 * 8 * (1 << exponent) / count
    rows = [
        f"| key string (sds) | {_alloc(key_sds)} | `{key.decode()[:24]}...` {len(key)} chars "
        f"+ header and NUL = {key_sds}, class {_alloc(key_sds)} |",
        "| main dict entry | 32 | key, value, next pointers (24 B, class 32) |",
        "| expires dict entry | 32 | the same key's expiry time (PEXPIREAT) |",
        f"| dict bucket arrays | {buckets:.1f} | 8 B a bucket in the main and expires "
        f"tables (2^{exponent} buckets each, shared by {count:,} keys) |",
    ]
    return rows, _alloc(key_sds) + 64 + buckets


def _redis_string_breakdown(client: Any, key: bytes, count: int) -> list[str]:
    """Where the bytes of one packed record go (``pack_record``'s format 1)."""
    from twilio_feedback.stores.redis import unpack_record

    value = client.get(key)
    record = unpack_record("x", value)
    parts = [
        ("format, flags", 3, "format 1; the state and which fields follow"),
        ("`expires_at`, `created_at`", 16, "two doubles"),
    ]
    for name in ("message_sid", "account_sid"):
        sid = getattr(record, name)
        if sid is not None:
            parts.append((f"`{name}` = `{sid[:12]}...`", 18, "2 letters + 16 raw bytes"))
    if record.country is not None or record.sender is not None:
        shown = f"`{record.country}`, `{record.sender}`"
        size = len(value) - sum(size for _, size, _ in parts)
        parts.append((f"country, sender = {shown}", size, "length-prefixed text"))
    rest = len(value) - sum(size for _, size, _ in parts)
    if rest:
        parts.append(("other fields", rest, "lease, attempts, error..."))
    rows = [f"| {name} | {size} | {what} |" for name, size, what in parts]
    if len(value) <= 44:  # OBJ_ENCODING_EMBSTR_SIZE_LIMIT: object and string, one block
        block = 16 + 3 + len(value) + 1
        rows.append(
            f"| value object + string (embstr) | {_alloc(block)} | robj 16 + sds header 3 "
            f"+ {len(value)} + NUL = {block} B in one allocation, class {_alloc(block)} |"
        )
        value_cost = _alloc(block)
    else:
        sds = 3 + len(value) + 1
        rows.append("| value object (robj) | 16 | type, encoding, LRU, refcount, pointer |")
        rows.append(
            f"| value string (sds) | {_alloc(sds)} | header 3 + {len(value)} + NUL = {sds}, "
            f"class {_alloc(sds)} |"
        )
        value_cost = 16 + _alloc(sds)
    key_rows, key_cost = _key_rows(key, count)
    return [
        "| part | bytes | what |",
        "|---|---|---|",
        *rows,
        *key_rows,
        f"| **estimate** | **{value_cost + key_cost:.0f}** | sum of the above |",
    ]


def _redis_variants(client: Any, count: int) -> list[tuple[str, float]]:
    """Bytes per record for other encodings of the same record, each change added to
    the previous ones, written with plain commands (no store) and measured the same way."""
    account = fill.account_sid()
    now = time.time()

    def shapes() -> Iterator[dict[str, Any]]:
        for issued in fill.records(count, subaccount=account, start=now):
            r = issued.record
            yield {
                "id": r.tracking_id,
                "sid": r.message_sid,
                "expires": r.expires_at,
                "created": r.created_at,
            }

    def today(d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        mapping = {
            "tracking_id": d["id"],
            "expires_at": repr(d["expires"]),
            "state": "pending",
            "message_sid": d["sid"],
            "account_sid": account,
            "created_at": repr(d["created"]),
            "lease_until": "0.0",
            "attempts": "0",
        }
        return "twilio_feedback:r:" + d["id"], mapping

    def drop(*names: str) -> Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]:
        def shape(d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
            key, mapping = today(d)
            return key, {k: v for k, v in mapping.items() if k not in names}

        return shape

    def ints(d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key, mapping = drop("tracking_id", "account_sid", "lease_until", "attempts")(d)
        mapping["expires_at"] = str(int(d["expires"]))
        mapping["created_at"] = str(int(d["created"]))
        return key, mapping

    def short(d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key, _ = today(d)
        return key, {
            "s": "p",
            "e": str(int(d["expires"])),
            "c": str(int(d["created"])),
            "m": d["sid"],
        }

    def raw_sid(d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        key, mapping = short(d)
        mapping["m"] = bytes.fromhex(d["sid"][2:])  # 'SM' or 'MM' folded into the state
        return key, mapping

    def short_key(d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        _, mapping = raw_sid(d)
        return "tf:" + d["id"], mapping

    cases: list[tuple[str, Callable[[dict[str, Any]], tuple[str, Any]]]] = [
        ("the hash as twilio-feedback 0.1 stored it (8 fields)", today),
        ("without `tracking_id` (it is in the key)", drop("tracking_id")),
        (
            "... and without `account_sid` when it is the settings' own",
            drop("tracking_id", "account_sid"),
        ),
        (
            "... and without zero-valued `lease_until`, `attempts`",
            drop("tracking_id", "account_sid", "lease_until", "attempts"),
        ),
        ("... and times as integer seconds", ints),
        ("... and one-letter field names and state", short),
        ("... and the message SID as 16 raw bytes", raw_sid),
        ("... and the key prefix `tf:` instead of `twilio_feedback:r:`", short_key),
    ]
    results = []
    for label, shape in cases:
        results.append((label, _redis_write(client, shapes(), shape, count)))

    # One packed string per record: state, expiry, creation (4 B each), raw SID.
    def packed(d: dict[str, Any]) -> tuple[str, Any]:
        value = (
            b"p"
            + int(d["expires"]).to_bytes(4, "big")
            + int(d["created"]).to_bytes(4, "big")
            + bytes.fromhex(d["sid"][2:])
        )
        return "twilio_feedback:r:" + d["id"], value

    results.append(
        (
            "one packed 25-byte string (`SET ... PXAT`) instead of a hash, key prefix as today",
            _redis_write(client, shapes(), packed, count),
        )
    )

    # What the store writes today (pack_record): times as doubles, so expiry decisions
    # keep their full precision.
    from twilio_feedback import Record
    from twilio_feedback.stores.redis import pack_record

    def stored(account_sid: str | None) -> Callable[[dict[str, Any]], tuple[str, Any]]:
        def shape(d: dict[str, Any]) -> tuple[str, Any]:
            record = Record(
                d["id"],
                expires_at=d["expires"],
                message_sid=d["sid"],
                account_sid=account_sid,
                created_at=d["created"],
            )
            return "twilio_feedback:r:" + d["id"], pack_record(record)

        return shape

    for label, account_sid in (
        ("`pack_record` as the store writes it (37 B: times as doubles)", None),
        ("... with a subaccount's SID (55 B)", account),
    ):
        results.append((label, _redis_write(client, shapes(), stored(account_sid), count)))
    return results


def _redis_write(client: Any, shapes: Iterator[dict[str, Any]], shape: Any, count: int) -> float:
    client.flushall()
    base = _used(client)
    pipe = client.pipeline(transaction=False)
    for n, d in enumerate(shapes, 1):
        key, value = shape(d)
        at = int(d["expires"] * 1000)
        if isinstance(value, dict):
            pipe.hset(key, mapping=value)
            pipe.pexpireat(key, at)
        else:
            pipe.set(key, value, pxat=at)
        if n % 2000 == 0:
            pipe.execute()
    pipe.execute()
    used = _used(client) - base
    client.flushall()
    return used / count


SENDER = "+15017122661"


def _redis_fill(
    client: Any, store: Any, count: int, account: str | None, insights: bool
) -> tuple[float, str, float]:
    """Fill an empty Redis with ``count`` pending records; bytes each, how, seconds."""
    client.flushall()
    base = _used(client)
    started = time.perf_counter()
    issued = fill.records(count, subaccount=account)
    if insights:  # as send() writes them with Settings.insights on (the default)
        issued = (
            fill.Issued(item.record.replace(country="US", sender=SENDER), item.token)
            for item in issued
        )
    how = fill.bulk_add(store, issued)
    seconds = time.perf_counter() - started
    used = _used(client) - base
    days = len(list(client.scan_iter(match=f"{store.prefix}i:*")))  # the insights' hashes
    keys = client.dbsize()
    assert keys == count + days, (keys, count, days)
    return used / count, how, seconds


def _redis(count: int, variant_count: int, section: Section) -> None:
    import redis

    from twilio_feedback.stores.redis import RedisStore

    from .bench_stores import _servers

    redis_server, pg_server = _servers()
    pg_server.stop()
    try:
        client = redis.Redis.from_url(redis_server.url, socket_timeout=300)  # FLUSHALL of 1M
        store = RedisStore(redis_server.url)
        subaccount = fill.account_sid()
        for label, account, insights in (
            ("the settings' own account (left out)", None, False),
            ("a subaccount's SID kept", subaccount, False),
            ("with the insights' country and sender", None, True),
        ):
            per_record, how, seconds = _redis_fill(client, store, count, account, insights)
            sample = next(iter(client.scan_iter(match=f"{store.prefix}r:*", count=10)))
            kind = client.type(sample).decode()
            size = client.strlen(sample) if kind == "string" else client.hlen(sample)
            shape = f"a {size}-byte string" if kind == "string" else f"a hash of {size} fields"
            section.figures.append(
                Figure(
                    f"Redis: bytes per pending record, {label} ({count:,} records)",
                    f"{per_record:.0f} B",
                    f"used_memory +{per_record * count / 2**20:.0f} MiB; {shape} each; "
                    f"{count * 3:,} records (3 days): {per_record * count * 3 / 2**30:.2f} GiB",
                    f"<= {TARGET} B",
                    _verdict(per_record),
                )
            )
            section.tables.append(
                f"Redis: where one record's {per_record:.0f} bytes go, {label} (Redis "
                f"{client.info('server')['redis_version']}, jemalloc; computed from the "
                "record's own key and value, the estimate next to the measure above):"
            )
            section.tables.append("\n".join(_redis_breakdown(client, sample, count)))
        section.notes.append(
            f"Redis: {count:,} records written in {seconds:.0f} s by {how}, three times: "
            "every record is a pending one as `bind()` writes it (tracking id from the "
            "signer, a message SID, created 86.4 ms apart as 1M a day would be, expiring 3 "
            "days after creation), with no account SID (the settings' own: the record "
            "leaves it out), then with a subaccount's, then with the country and sender "
            f"that `send()` keeps for the insights (`US`, `{SENDER}`; a messaging service "
            "SID as sender takes 4 bytes more, in the same allocation class). "
            "`used_memory` after minus before."
        )
        client.flushall()
        store.close()
        variants = _redis_variants(client, variant_count)
        rows = [
            "| encoding (each line adds its change to the lines above) | bytes per record | |",
            "|---|---|---|",
        ]
        for label, value in variants:
            rows.append(f"| {label} | {value:.0f} B | {_verdict(value)} |")
        section.tables.append(
            f"Redis: the same records in other encodings, {variant_count:,} records each, "
            "`used_memory` delta (plain `HSET` + `PEXPIREAT`, or `SET ... PXAT`):"
        )
        section.tables.append("\n".join(rows))
        client.close()
    finally:
        redis_server.stop()


# -- SQL ------------------------------------------------------------------------------


def _pg(count: int, section: Section) -> None:
    import sqlalchemy as sa

    from twilio_feedback.stores.sql import SQLStore

    from .bench_stores import _servers

    redis_server, pg_server = _servers()
    redis_server.stop()
    try:
        store = SQLStore(pg_server.fresh_database())
        started = time.perf_counter()
        how = fill.bulk_add(store, fill.records(count))
        seconds = time.perf_counter() - started
        name = store.table.name
        auto = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        with auto.connect() as conn:
            conn.execute(sa.text(f"VACUUM ANALYZE {name}"))
            rows = conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar()
            assert rows == count, rows
            total, heap = conn.execute(
                sa.text(f"SELECT pg_total_relation_size('{name}'), pg_table_size('{name}')")
            ).one()
            indexes = conn.execute(
                sa.text(
                    "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) "
                    f"FROM pg_index WHERE indrelid = '{name}'::regclass ORDER BY 1"
                )
            ).all()
            columns = [c.name for c in store.table.columns]
            averages = conn.execute(
                sa.text(
                    "SELECT avg(pg_column_size(t.*)), "
                    + ", ".join(f"avg(pg_column_size({c}))" for c in columns)
                    + f" FROM {name} t"
                )
            ).one()
            version = conn.execute(sa.text("SHOW server_version")).scalar()
            variants = _pg_variants(conn, name, count)
        per_record = total / count
        section.figures.append(
            Figure(
                f"PostgreSQL: bytes per pending record ({count:,} rows)",
                f"{per_record:.0f} B",
                f"heap {heap / count:.0f} B + indexes "
                + " + ".join(f"{n.replace(name + '_', '')} {s / count:.0f} B" for n, s in indexes),
                f"<= {TARGET} B",
                _verdict(per_record),
            )
        )
        row_data = float(averages[0])
        per_column = ", ".join(
            f"{c} {float(v):.0f}" for c, v in zip(columns, averages[1:], strict=True) if v
        )
        section.notes.append(
            f"PostgreSQL {version}: {count:,} rows written in {seconds:.0f} s by {how}, then "
            f"VACUUM ANALYZE. A row's data is {row_data:.0f} B on average (pg_column_size of "
            f"the row, its 24 B header included; by column: {per_column}; NULL columns cost a "
            "bit in the null bitmap); each heap tuple adds a 4 B line pointer and alignment "
            "padding to 8 B, and pages keep some free space. Rows as the tracker writes "
            "them: no account SID for the settings' own account. The outbox index (schema "
            "2: lease_until WHERE state = 'confirmed') holds no pending row; the expiry and "
            "primary key indexes hold one entry per row (8 B tuple header + key, 4 B line "
            "pointer, pages ~70-90% full)."
        )
        section.tables.append(
            f"PostgreSQL: the same {count:,} rows in other layouts (each line adds its "
            "change to the lines above; `INSERT ... SELECT` into a new table, then VACUUM "
            "ANALYZE, `pg_total_relation_size`):"
        )
        section.tables.append(
            "\n".join(
                [
                    "| layout | bytes per record | |",
                    "|---|---|---|",
                    *(
                        f"| {label} | {value:.0f} B | {_verdict(value)} |"
                        for label, value in variants
                    ),
                ]
            )
        )
        store.close()
    finally:
        pg_server.stop()


def _pg_variants(conn: Any, name: str, count: int) -> list[tuple[str, float]]:
    import sqlalchemy as sa

    steps = [
        (
            "schema 1 (0.1.0): outbox index (state, lease_until) over every row, the "
            "account SID on every record",
            f"""CREATE TABLE v (LIKE {name} INCLUDING DEFAULTS);
                ALTER TABLE v ADD PRIMARY KEY (tracking_id);
                CREATE INDEX ON v (state, lease_until);
                CREATE INDEX ON v (expires_at);
                INSERT INTO v SELECT tracking_id, state, message_sid,
                    'AC' || md5('account'), expires_at, created_at, confirmed_at,
                    lease_until, attempts, error_code, error_message FROM {name};""",
        ),
        (
            "schema 2, as the store writes it today (the measure above)",
            f"""CREATE TABLE v (LIKE {name} INCLUDING ALL);
                INSERT INTO v SELECT * FROM {name};""",
        ),
        (
            "... and a BRIN index on `expires_at` (rows arrive in expiry order)",
            f"""CREATE TABLE v (LIKE {name} INCLUDING DEFAULTS);
                ALTER TABLE v ADD PRIMARY KEY (tracking_id);
                CREATE INDEX ON v (lease_until) WHERE state = 'confirmed';
                CREATE INDEX ON v USING brin (expires_at);
                INSERT INTO v SELECT tracking_id, state, message_sid, NULL, expires_at,
                    created_at, confirmed_at, lease_until, attempts, error_code, error_message
                    FROM {name};""",
        ),
        (
            '... and ids and SIDs as raw bytes (`bytea`: 9 B id, 16 B SID), state a `"char"`',
            f"""CREATE TABLE v (tracking_id bytea PRIMARY KEY, state "char" NOT NULL,
                    message_sid bytea, account_sid bytea, expires_at float8 NOT NULL,
                    created_at float8 NOT NULL, confirmed_at float8,
                    lease_until float8 NOT NULL, attempts int4 NOT NULL,
                    error_code int4, error_message text);
                CREATE INDEX ON v (lease_until) WHERE state = 'c';
                CREATE INDEX ON v USING brin (expires_at);
                INSERT INTO v SELECT decode(translate(tracking_id, '-_', '+/'), 'base64'),
                    'p', decode(substr(message_sid, 3), 'hex'), NULL, expires_at, created_at,
                    confirmed_at, lease_until, attempts, error_code, error_message
                    FROM {name};""",
        ),
    ]
    results = []
    for label, sql in steps:
        conn.execute(sa.text("DROP TABLE IF EXISTS v"))
        for statement in sql.split(";"):
            if statement.strip():
                conn.execute(sa.text(statement))
        conn.execute(sa.text("VACUUM ANALYZE v"))
        results.append(
            (label, conn.execute(sa.text("SELECT pg_total_relation_size('v')")).scalar() / count)
        )
    conn.execute(sa.text("DROP TABLE IF EXISTS v"))
    return results


def _sqlite_sizes(conn: Any) -> tuple[dict[str, int], str]:
    """Bytes per b-tree (table or index), from ``dbstat``, else the file's pages."""
    import sqlalchemy as sa

    try:
        rows = conn.execute(sa.text("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name")).all()
        return {n: int(s) for n, s in rows}, "dbstat"
    except sa.exc.OperationalError:
        page = conn.execute(sa.text("PRAGMA page_size")).scalar()
        pages = conn.execute(sa.text("PRAGMA page_count")).scalar()
        free = conn.execute(sa.text("PRAGMA freelist_count")).scalar()
        return {"(whole file)": page * (pages - free)}, "page_count - freelist_count"


def _sqlite(count: int, section: Section) -> None:
    import sqlalchemy as sa

    from twilio_feedback.stores.sql import SQLStore

    path = f"{tempfile.mkdtemp(prefix='tf-size-')}/size.db"
    store = SQLStore(f"sqlite:///{path}")
    started = time.perf_counter()
    how = fill.bulk_add(store, fill.records(count))
    seconds = time.perf_counter() - started
    name = store.table.name
    with store.engine.connect() as conn:
        conn.execute(sa.text("VACUUM"))
        conn.execute(sa.text("ANALYZE"))
        sizes, method = _sqlite_sizes(conn)
        variants = _sqlite_variants(conn, name, count) if method == "dbstat" else []
        version = conn.execute(sa.text("SELECT sqlite_version()")).scalar()
    ours = {
        n: s for n, s in sizes.items() if n.startswith(name) and not n.startswith(name + "_meta")
    }
    ours.update({n: s for n, s in sizes.items() if n.startswith("sqlite_autoindex_" + name + "_1")})
    if method != "dbstat":
        ours = sizes
    total = sum(ours.values())
    per_record = total / count

    def label(index: str) -> str:
        if index.startswith("sqlite_autoindex_"):
            return "primary key"
        return "table" if index == name else index.replace(name + "_", "")

    parts = " + ".join(
        f"{label(n)} {s / count:.0f} B" for n, s in sorted(ours.items(), key=lambda item: -item[1])
    )
    section.figures.append(
        Figure(
            f"SQLite: bytes per pending record ({count:,} rows)",
            f"{per_record:.0f} B",
            parts,
            f"<= {TARGET} B",
            _verdict(per_record),
        )
    )
    section.notes.append(
        f"SQLite {version}: {count:,} rows written in {seconds:.0f} s by {how}, then VACUUM "
        f"and ANALYZE; sizes from {method}. The table is a rowid table, so the primary key "
        "on tracking_id is a second b-tree (sqlite_autoindex) holding the id again with the "
        "rowid; the expiry index holds one entry per row, the outbox index (schema 2: "
        "lease_until WHERE state = 'confirmed') none for a pending row; no account SID for "
        "the settings' own account. "
        "Floats are 8 B each (a REAL that is a whole number, like lease_until 0.0, takes 0 B)."
    )
    if variants:
        section.tables.append(
            f"SQLite: the same {count:,} rows in other layouts (each line adds its change to "
            "the lines above; `INSERT ... SELECT` into a new table, VACUUM, `dbstat`):"
        )
        section.tables.append(
            "\n".join(
                [
                    "| layout | bytes per record | |",
                    "|---|---|---|",
                    *(
                        f"| {label} | {value:.0f} B | {_verdict(value)} |"
                        for label, value in variants
                    ),
                ]
            )
        )
    store.close()


def _sqlite_variants(conn: Any, name: str, count: int) -> list[tuple[str, float]]:
    import sqlalchemy as sa

    columns = (
        "tracking_id TEXT PRIMARY KEY, state TEXT NOT NULL, message_sid TEXT, account_sid TEXT, "
        "expires_at REAL NOT NULL, created_at REAL NOT NULL, confirmed_at REAL, "
        "lease_until REAL NOT NULL, attempts INTEGER NOT NULL, error_code INTEGER, "
        "error_message TEXT"
    )
    copy = f"INSERT INTO v SELECT * FROM {name}"
    with_account = (
        "INSERT INTO v SELECT tracking_id, state, message_sid, 'AC' || hex(randomblob(16)), "
        "expires_at, created_at, confirmed_at, lease_until, attempts, error_code, "
        f"error_message FROM {name}"
    )
    steps = [
        (
            "schema 1 (0.1.0): outbox index (state, lease_until) over every row, the "
            "account SID on every record",
            [
                f"CREATE TABLE v ({columns})",
                "CREATE INDEX v_o ON v (state, lease_until)",
                "CREATE INDEX v_e ON v (expires_at)",
                with_account,
            ],
        ),
        (
            "schema 2, as the store writes it today (the measure above)",
            [
                f"CREATE TABLE v ({columns})",
                "CREATE INDEX v_o ON v (lease_until) WHERE state = 'confirmed'",
                "CREATE INDEX v_e ON v (expires_at)",
                copy,
            ],
        ),
        (
            "... and `WITHOUT ROWID` (the table is the primary key's b-tree: no second copy "
            "of the id)",
            [
                f"CREATE TABLE v ({columns}) WITHOUT ROWID",
                "CREATE INDEX v_o ON v (lease_until) WHERE state = 'confirmed'",
                "CREATE INDEX v_e ON v (expires_at)",
                copy,
            ],
        ),
        (
            "... and times as integer seconds (4 B instead of 8)",
            [
                f"CREATE TABLE v ({columns.replace('REAL', 'INTEGER')}) WITHOUT ROWID",
                "CREATE INDEX v_o ON v (lease_until) WHERE state = 'confirmed'",
                "CREATE INDEX v_e ON v (expires_at)",
                "INSERT INTO v SELECT tracking_id, state, message_sid, NULL, "
                "CAST(expires_at AS INTEGER), CAST(created_at AS INTEGER), confirmed_at, "
                f"CAST(lease_until AS INTEGER), attempts, error_code, error_message FROM {name}",
            ],
        ),
    ]
    results = []
    for label, statements in steps:
        conn.execute(sa.text("DROP TABLE IF EXISTS v"))
        for statement in statements:
            conn.execute(sa.text(statement))
        conn.commit()
        conn.execute(sa.text("VACUUM"))
        size = conn.execute(
            sa.text(
                "SELECT SUM(pgsize) FROM dbstat WHERE name = 'v' OR name LIKE 'v\\_%' ESCAPE '\\' "
                "OR name = 'sqlite_autoindex_v_1'"
            )
        ).scalar()
        results.append((label, int(size) / count))
    conn.execute(sa.text("DROP TABLE IF EXISTS v"))
    conn.commit()
    return results


def run(quick: bool = False) -> Section:
    """Measure and return the section."""
    count = 100_000 if quick else 1_000_000
    variant_count = 20_000 if quick else 100_000
    section = Section(f"Bytes per record in the durable stores ({count:,} pending records)")
    started = time.perf_counter()
    only = os.environ.get("BENCH_STORE_SIZE_BACKENDS", "")
    if not only or "redis" in only.split(","):
        _redis(count, variant_count, section)
    if not only or "postgresql" in only.split(","):
        _pg(count, section)
    if not only or "sqlite" in only.split(","):
        _sqlite(count, section)
    section.notes.append(
        f"{time.perf_counter() - started:.0f} s for this section. Records are pending ones "
        "with every field `bind()` sets; a confirmed record adds `confirmed_at` (and the "
        "outbox entry: a sorted-set member in Redis, an index entry in SQL)."
    )
    return section
