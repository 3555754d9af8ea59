-- mcp-guard: the fleet's history in ClickHouse (the tables `[[export.sink]] kind = "clickhouse"`
-- inserts into, and `mcp-guard calls|events|alerts|trace --fleet URL` reads).
--
-- Apply once, as a ClickHouse user who may create databases:
--   clickhouse-client --multiquery < mcp-guard.sql
-- or over HTTP, one statement per request (what the tests do).
--
-- Written for ClickHouse 18.16 (Debian's package) and later: no DateTime64, no LowCardinality.
-- Every row carries the host's name and id (/etc/machine-id), `version` (the record's number in
-- the host's change log; the latest write of a record has the highest) and `record`, the whole
-- record as `mcp-guard ... --json` prints it. Delivery is at least once: ReplacingMergeTree
-- folds the copies of a record (same host_id and id) into the one with the highest version when
-- parts merge; read with FINAL to see each record once before that. Timestamps are kept twice:
-- RFC 3339 text with nanoseconds (as the JSON contract has them) and Int64 nanoseconds since
-- the epoch for ranges and ordering; `time` (DateTime, seconds) is derived for partitioning.
-- In `events`, `host` is the exporting machine (as in every table) and `dst_host` the name the
-- server resolved the connect's address from (the record's own `host`).

CREATE DATABASE IF NOT EXISTS mcp_guard;

CREATE TABLE IF NOT EXISTS mcp_guard.sessions
(
    host        String,
    host_id     String,
    version     UInt64,
    session     String,
    server      String,
    started_at  String,
    started_ns  Int64,
    ended_at    Nullable(String),
    ended_ns    Nullable(Int64),
    command     Array(String),
    policy      String,
    pid         Nullable(UInt32),
    observe     UInt8,
    exit_status Nullable(Int32),
    record      String,
    time        DateTime MATERIALIZED toDateTime(intDiv(started_ns, 1000000000))
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (host_id, session);

CREATE TABLE IF NOT EXISTS mcp_guard.calls
(
    host         String,
    host_id      String,
    version      UInt64,
    call_id      String,
    server       String,
    session      String,
    method       String,
    tool         Nullable(String),
    request_id   String,
    started_at   String,
    started_ns   Int64,
    ended_at     Nullable(String),
    ended_ns     Nullable(Int64),
    decision     String,
    reason       Nullable(String),
    error        Nullable(String),
    result_bytes Nullable(UInt64),
    record       String,
    time         DateTime MATERIALIZED toDateTime(intDiv(started_ns, 1000000000))
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (host_id, call_id);

CREATE TABLE IF NOT EXISTS mcp_guard.events
(
    host        String,
    host_id     String,
    version     UInt64,
    event_id    String,
    ts          String,
    ts_ns       Int64,
    server      String,
    session     String,
    pid         UInt32,
    kind        String,
    path        Nullable(String),
    addr        Nullable(String),
    port        Nullable(UInt16),
    dst_host    Nullable(String),
    verdict     String,
    call_id     Nullable(String),
    attribution String,
    candidates  Array(String),
    flags       Nullable(UInt32),
    result      Nullable(Int64),
    argv        Array(String),
    proto       Nullable(String),
    would_deny  UInt8,
    detail      Nullable(String),
    record      String,
    time        DateTime MATERIALIZED toDateTime(intDiv(ts_ns, 1000000000))
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (host_id, event_id);

CREATE TABLE IF NOT EXISTS mcp_guard.alerts
(
    host      String,
    host_id   String,
    version   UInt64,
    alert_id  String,
    ts        String,
    ts_ns     Int64,
    server    String,
    session   String,
    rule      String,
    severity  String,
    call_id   Nullable(String),
    tool      Nullable(String),
    summary   String,
    event_ids Array(String),
    action    Nullable(String),
    record    String,
    time      DateTime MATERIALIZED toDateTime(intDiv(ts_ns, 1000000000)),
    count     UInt64 DEFAULT 1,
    last_seen String DEFAULT ts,
    last_seen_ns Int64 DEFAULT ts_ns
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (host_id, alert_id);

-- An alert repeated in its session is shipped again with its new `count` and `last_seen` (and a
-- higher version): FINAL shows the latest. A table created before alerts were counted lacks the
-- columns (inserts skip them until then); add them once, by hand (ClickHouse 18 has no
-- ADD COLUMN IF NOT EXISTS):
--   ALTER TABLE mcp_guard.alerts ADD COLUMN count UInt64 DEFAULT 1,
--     ADD COLUMN last_seen String DEFAULT ts, ADD COLUMN last_seen_ns Int64 DEFAULT ts_ns
--
-- `events.dst_host` came later too; for a table created before it:
--   ALTER TABLE mcp_guard.events ADD COLUMN dst_host Nullable(String) AFTER port
