//! The change log the exporter ships from: every session, call, event and alert row, numbered
//! in the order it was last written, and one durable cursor per sink.
//!
//! Triggers keep `export_changes` in step with the record tables: an insert or an update of a
//! row (re)numbers it with the next `change_seq` (AUTOINCREMENT: never reused), a delete
//! (retention) removes its entry. So the log holds one entry per stored record, numbered by its
//! latest write, and a sink whose cursor is N has shipped every record as it was at N or later.
//! SQLite has one writer at a time and numbers inside the writing transaction, so a reader sees
//! the numbers in commit order without gaps that fill in later: a cursor never skips a record.
//!
//! The log lives beside the tables rather than in them, so the record tables' schema and their
//! writers do not know about export; it exists only while the agent has sinks (the triggers
//! cost a row write per record written). Turning it on numbers the records already stored, so a
//! new sink gets the history the store keeps.

use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use super::{Record, Store, StoreError, Timestamp, schema};

/// The record tables, with the number the log knows each by and the expressions for its row id
/// and its record time.
const TABLES: [(i64, &str, &str, &str); 4] = [
    (1, "sessions", "rowid", "started_at"),
    (2, "calls", "id", "started_at"),
    (3, "events", "id", "ts"),
    (4, "alerts", "id", "ts"),
];

/// Rows numbered per transaction when the log is first filled, so writers wait briefly.
const BACKFILL_CHUNK: i64 = 10_000;

/// The current time in nanoseconds, in SQL (millisecond resolution).
const NOW_NS: &str = "CAST(unixepoch('subsec') * 1000 AS INTEGER) * 1000000";

/// One record as last written, with its number in the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Its position in the log (a sink's cursor moves past it once it is shipped).
    pub seq: i64,
    /// The record as stored now.
    pub record: Record,
}

/// A run of the log after a cursor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChangeBatch {
    /// The records, in log order.
    pub changes: Vec<Change>,
    /// The cursor once these are shipped: the last number read (records deleted since they
    /// were numbered are skipped, so it may be past the last change's).
    pub last_seq: i64,
}

/// How far a sink is behind the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportLag {
    /// Records written (or rewritten) since the cursor.
    pub records: u64,
    /// When the oldest of them was written to the store; `None` when there are none.
    pub oldest: Option<Timestamp>,
}

/// The log's DDL; idempotent.
fn create_sql() -> String {
    let mut sql = String::from(
        "CREATE TABLE IF NOT EXISTS export_changes (
             change_seq   INTEGER PRIMARY KEY AUTOINCREMENT,
             change_table INTEGER NOT NULL,
             change_row   INTEGER NOT NULL,
             change_at    INTEGER NOT NULL
         );
         CREATE UNIQUE INDEX IF NOT EXISTS export_changes_row
             ON export_changes(change_table, change_row);
         CREATE TABLE IF NOT EXISTS export_cursors (
             sink       TEXT PRIMARY KEY NOT NULL,
             seq        INTEGER NOT NULL,
             updated_at INTEGER NOT NULL
         );\n",
    );
    for (n, table, id, _) in TABLES {
        // Delete, then insert: a renumbered row gets a fresh number, and an entry left over
        // from a time without triggers can never make a record write fail. (`INSERT OR
        // REPLACE` would not do: the store's upserts impose their own conflict handling on
        // the statements of the triggers they fire.)
        for (when, new) in [("INSERT", "NEW"), ("UPDATE", "NEW")] {
            sql.push_str(&format!(
                "CREATE TRIGGER IF NOT EXISTS export_{table}_{lower} AFTER {when} ON {table} \
                 BEGIN DELETE FROM export_changes WHERE change_table = {n} \
                 AND change_row = {new}.{id}; INSERT INTO export_changes (change_table, \
                 change_row, change_at) VALUES ({n}, {new}.{id}, {NOW_NS}); END;\n",
                lower = when.to_ascii_lowercase(),
            ));
        }
        sql.push_str(&format!(
            "CREATE TRIGGER IF NOT EXISTS export_{table}_delete AFTER DELETE ON {table} \
             BEGIN DELETE FROM export_changes WHERE change_table = {n} AND change_row = OLD.{id}; \
             END;\n"
        ));
    }
    sql
}

/// Triggers the log needs, by name.
fn trigger_names() -> Vec<String> {
    TABLES
        .iter()
        .flat_map(|(_, table, _, _)| {
            ["insert", "update", "delete"].map(|w| format!("export_{table}_{w}"))
        })
        .collect()
}

/// The rows of table `n` numbered in (?1, ?2]: the record's columns first (the row readers
/// count from 0), the number last.
fn join_sql(n: i64, table: &str, id: &str, columns: &str) -> String {
    // The batch is a range of the log's rowid; `+` keeps SQLite from walking the (table, row)
    // index instead, which visits every entry of that table in the log, once per batch: a cost
    // that grew with the backlog and was paid again for every batch.
    format!(
        "SELECT {columns}, c.change_seq FROM export_changes c JOIN {table}
           ON {table}.{id} = c.change_row
         WHERE c.change_seq > ?1 AND c.change_seq <= ?2 AND +c.change_table = {n}"
    )
}

impl Store {
    /// Whether the change log and every one of its triggers are in place.
    pub fn export_enabled(&self) -> Result<bool, StoreError> {
        let names = trigger_names();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
            )
            .map_err(self.sql_err())?;
        for name in &names {
            let n: i64 = stmt
                .query_row([name], |r| r.get(0))
                .map_err(self.sql_err())?;
            if n == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Turns the change log on for `sinks` (idempotent): creates it and its triggers, numbers
    /// the records it does not hold yet (all of them the first time; those written while a
    /// trigger was missing later), gives each new sink a cursor at the start and forgets the
    /// cursors of sinks no longer configured. Returns how many records were numbered.
    pub fn enable_export(&mut self, sinks: &[&str]) -> Result<u64, StoreError> {
        let complete = self.export_enabled()?;
        let path = self.path.clone();
        let err = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(&create_sql()).map_err(err)?;
        let now = Timestamp::now().unix_nanos();
        for sink in sinks {
            tx.execute(
                "INSERT INTO export_cursors (sink, seq, updated_at) VALUES (?1, 0, ?2)
                 ON CONFLICT(sink) DO NOTHING",
                params![sink, now],
            )
            .map_err(err)?;
        }
        let keep = serde_json::to_string(sinks).unwrap_or_else(|_| "[]".into());
        tx.execute(
            "DELETE FROM export_cursors WHERE sink NOT IN (SELECT value FROM json_each(?1))",
            [keep],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        if complete {
            return Ok(0);
        }
        // The triggers now number every new write; number what was there before them, in
        // chunks so a store with millions of rows never holds the write lock for long.
        let mut numbered = 0u64;
        for (n, table, id, at) in TABLES {
            let max: i64 = self
                .conn
                .query_row(
                    &format!("SELECT coalesce(max({id}), 0) FROM {table}"),
                    [],
                    |r| r.get(0),
                )
                .map_err(self.sql_err())?;
            let sql = format!(
                "INSERT INTO export_changes (change_table, change_row, change_at)
                 SELECT {n}, {id}, {at} FROM {table} WHERE {id} > ?1 AND {id} <= ?2 AND NOT EXISTS
                   (SELECT 1 FROM export_changes c WHERE c.change_table = {n}
                    AND c.change_row = {table}.{id})
                 ORDER BY {id}"
            );
            let mut low = 0i64;
            while low < max {
                let high = low.saturating_add(BACKFILL_CHUNK);
                let added = self
                    .conn
                    .execute(&sql, params![low, high])
                    .map_err(self.sql_err())?;
                numbered += added as u64;
                low = high;
            }
        }
        Ok(numbered)
    }

    /// Turns the change log off: its triggers, the log and every cursor go (a sink configured
    /// again later starts from the beginning of what the store then holds).
    pub fn disable_export(&mut self) -> Result<(), StoreError> {
        let mut sql = String::new();
        for name in trigger_names() {
            sql.push_str(&format!("DROP TRIGGER IF EXISTS {name};\n"));
        }
        sql.push_str(
            "DROP TABLE IF EXISTS export_changes;\nDROP TABLE IF EXISTS export_cursors;\n",
        );
        let path = self.path.clone();
        let err = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute_batch(&sql).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// `sink`'s cursor: every change numbered at or below it has been shipped (0: nothing yet).
    pub fn export_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT seq FROM export_cursors WHERE sink = ?1",
                [sink],
                |r| r.get(0),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(self.sql_err())
    }

    /// Moves `sink`'s cursor to `seq` (durably: the sink resumes there after a restart).
    pub fn set_export_cursor(&mut self, sink: &str, seq: i64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO export_cursors (sink, seq, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(sink) DO UPDATE SET seq = excluded.seq,
                     updated_at = excluded.updated_at",
                params![sink, seq, Timestamp::now().unix_nanos()],
            )
            .map(drop)
            .map_err(self.sql_err())
    }

    /// Up to `limit` changes after `seq`, in log order, each with its record as stored now.
    pub fn changes_after(&self, seq: i64, limit: usize) -> Result<ChangeBatch, StoreError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        // One read snapshot for the whole batch (and one lock taken, not five).
        let snapshot = self.conn.unchecked_transaction().map_err(self.sql_err())?;
        let (last, n): (Option<i64>, i64) = self
            .conn
            .query_row(
                "SELECT max(change_seq), count(*) FROM (SELECT change_seq FROM export_changes
                 WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2)",
                params![seq, limit],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql_err())?;
        let Some(last) = last else {
            return Ok(ChangeBatch {
                changes: Vec::new(),
                last_seq: seq,
            });
        };
        let mut changes = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        self.join_changes(
            1,
            "sessions",
            "rowid",
            schema::SESSION_COLUMNS,
            seq,
            last,
            &mut changes,
            |r| schema::session_from_row(r).map(Record::Session),
        )?;
        self.join_changes(
            2,
            "calls",
            "id",
            schema::CALL_COLUMNS,
            seq,
            last,
            &mut changes,
            |r| schema::call_from_row(r).map(Record::Call),
        )?;
        self.join_changes(
            3,
            "events",
            "id",
            schema::EVENT_COLUMNS,
            seq,
            last,
            &mut changes,
            |r| schema::event_from_row(r).map(Record::Event),
        )?;
        self.join_changes(
            4,
            "alerts",
            "id",
            schema::ALERT_COLUMNS,
            seq,
            last,
            &mut changes,
            |r| schema::alert_from_row(r).map(Record::Alert),
        )?;
        snapshot.finish().map_err(self.sql_err())?;
        changes.sort_unstable_by_key(|c| c.seq);
        Ok(ChangeBatch {
            changes,
            last_seq: last,
        })
    }

    /// The rows of one table numbered in (`after`, `last`], appended to `out`.
    #[expect(
        clippy::too_many_arguments,
        reason = "one table's query: its name, bounds, columns and output"
    )]
    fn join_changes(
        &self,
        n: i64,
        table: &str,
        id: &str,
        columns: &str,
        after: i64,
        last: i64,
        out: &mut Vec<Change>,
        from_row: impl Fn(&Row<'_>) -> rusqlite::Result<Record>,
    ) -> Result<(), StoreError> {
        let sql = join_sql(n, table, id, columns);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.sql_err())?;
        let seq_col = stmt.column_count() - 1;
        let mut rows = stmt.query(params![after, last]).map_err(self.sql_err())?;
        while let Some(row) = rows.next().map_err(self.sql_err())? {
            out.push(Change {
                seq: row.get(seq_col).map_err(self.sql_err())?,
                record: from_row(row).map_err(self.sql_err())?,
            });
        }
        Ok(())
    }

    /// What is left to ship after `seq`: how many records and when the oldest was written.
    pub fn export_lag(&self, seq: i64) -> Result<ExportLag, StoreError> {
        let (records, oldest): (i64, Option<i64>) = self
            .conn
            .query_row(
                "SELECT count(*), min(change_at) FROM export_changes WHERE change_seq > ?1",
                [seq],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.sql_err())?;
        Ok(ExportLag {
            records: u64::try_from(records).unwrap_or(0),
            oldest: oldest.map(Timestamp::from_unix_nanos),
        })
    }
}

#[cfg(test)]
mod tests {
    #![expect(
        clippy::unwrap_used,
        reason = "a test: a failed unwrap is the failure, with its line"
    )]

    use super::*;
    use mcp_guard_model::{Decision, EventKind};
    use std::time::Duration;

    use crate::tests::{TempDir, alert, call, event};

    fn ids(batch: &ChangeBatch) -> Vec<String> {
        batch
            .changes
            .iter()
            .map(|c| match &c.record {
                Record::Session(s) => s.session.clone(),
                Record::Call(c) => c.call_id.clone(),
                Record::Event(e) => e.event_id.clone(),
                Record::Alert(a) => a.alert_id.clone(),
                Record::Facts(f) => panic!("facts are no table row: {f:?}"),
            })
            .collect()
    }

    #[test]
    fn records_stored_before_and_after_enabling_are_numbered_once_each() {
        let dir = TempDir::new("changes-enable");
        let mut store = Store::open(&dir.db()).unwrap();
        let t = Timestamp::from_unix_nanos(1_000);
        store.insert(call("c1", "s", "read", t)).unwrap();
        store.insert(event("e1", "s", EventKind::Open, t)).unwrap();
        assert!(!store.export_enabled().unwrap());
        assert_eq!(store.enable_export(&["ch"]).unwrap(), 2);
        assert!(store.export_enabled().unwrap());
        // Idempotent: enabling again numbers nothing twice.
        assert_eq!(store.enable_export(&["ch"]).unwrap(), 0);
        store.insert(alert("a1", "s", "c1", t)).unwrap();
        let batch = store.changes_after(0, 100).unwrap();
        assert_eq!(ids(&batch), ["c1", "e1", "a1"]);
        assert_eq!(store.export_lag(0).unwrap().records, 3);
        assert!(store.export_lag(0).unwrap().oldest.is_some());
        // A limit cuts the batch; the cursor resumes after it.
        let first = store.changes_after(0, 2).unwrap();
        assert_eq!(ids(&first), ["c1", "e1"]);
        let rest = store.changes_after(first.last_seq, 2).unwrap();
        assert_eq!(ids(&rest), ["a1"]);
        assert_eq!(
            store.changes_after(rest.last_seq, 2).unwrap().changes,
            vec![]
        );
    }

    #[test]
    fn an_updated_record_is_shipped_again_as_it_is_now() {
        let dir = TempDir::new("changes-update");
        let mut store = Store::open(&dir.db()).unwrap();
        store.enable_export(&["ch"]).unwrap();
        let t = Timestamp::from_unix_nanos(1_000);
        let mut c = call("c1", "s", "read", t);
        store.insert(c.clone()).unwrap();
        store.insert(event("e1", "s", EventKind::Open, t)).unwrap();
        let first = store.changes_after(0, 100).unwrap();
        assert_eq!(ids(&first), ["c1", "e1"]);
        store.set_export_cursor("ch", first.last_seq).unwrap();
        // The response completes the call: the same row, numbered again after the event.
        c.ended_at = Some(t);
        c.decision = Decision::Denied;
        store.insert(c).unwrap();
        let cursor = store.export_cursor("ch").unwrap();
        assert_eq!(cursor, first.last_seq);
        let again = store.changes_after(cursor, 100).unwrap();
        assert_eq!(ids(&again), ["c1"]);
        match &again.changes[0].record {
            Record::Call(c) => assert_eq!(c.decision, Decision::Denied),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.export_lag(cursor).unwrap().records, 1);
        // The log holds one entry per record, not one per write.
        assert_eq!(store.changes_after(0, 100).unwrap().changes.len(), 2);
    }

    #[test]
    fn deleted_records_leave_the_log() {
        let dir = TempDir::new("changes-delete");
        let mut store = Store::open(&dir.db()).unwrap();
        store.enable_export(&["fast", "slow"]).unwrap();
        let old = Timestamp::from_unix_nanos(1_000);
        for i in 0..5 {
            store
                .insert(event(&format!("e{i}"), "s", EventKind::Open, old))
                .unwrap();
        }
        let all = store.changes_after(0, 100).unwrap();
        store.set_export_cursor("fast", all.last_seq).unwrap();
        store.set_export_cursor("slow", all.changes[1].seq).unwrap();
        let pruned = store
            .prune(Some(Duration::from_secs(1)), None)
            .unwrap()
            .deleted
            .events;
        assert_eq!(pruned, 5);
        let left = store.changes_after(0, 100).unwrap();
        assert_eq!(left.changes, vec![]);
        assert_eq!(store.export_lag(0).unwrap().records, 0);
    }

    #[test]
    fn cursors_follow_the_configured_sinks_and_disabling_forgets_everything() {
        let dir = TempDir::new("changes-cursors");
        let mut store = Store::open(&dir.db()).unwrap();
        store.enable_export(&["a", "b"]).unwrap();
        store.set_export_cursor("a", 7).unwrap();
        store.set_export_cursor("b", 3).unwrap();
        // `b` is gone from the config: its cursor with it.
        store.enable_export(&["a"]).unwrap();
        assert_eq!(store.export_cursor("a").unwrap(), 7);
        assert_eq!(store.export_cursor("b").unwrap(), 0);
        store.disable_export().unwrap();
        assert!(!store.export_enabled().unwrap());
        // Writes go on without the log.
        let t = Timestamp::from_unix_nanos(1);
        store.insert(event("e1", "s", EventKind::Open, t)).unwrap();
        // On again: the record written meanwhile is numbered, the cursor starts over.
        assert_eq!(store.enable_export(&["a"]).unwrap(), 1);
        assert_eq!(store.export_cursor("a").unwrap(), 0);
    }

    #[test]
    fn a_batch_reads_its_range_of_the_log_not_every_entry_of_a_table() {
        let dir = TempDir::new("changes-plan");
        let mut store = Store::open(&dir.db()).unwrap();
        store.enable_export(&["a"]).unwrap();
        for (n, table, id, _) in TABLES {
            let sql = join_sql(n, table, id, "1");
            let plan: Vec<String> = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map(params![0, 10], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan[0].contains("SEARCH c USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
                "{table}: {plan:?}"
            );
        }
    }

    #[test]
    fn a_trigger_dropped_behind_the_exporters_back_is_noticed_and_its_rows_numbered() {
        let dir = TempDir::new("changes-heal");
        let mut store = Store::open(&dir.db()).unwrap();
        store.enable_export(&["a"]).unwrap();
        store
            .conn
            .execute_batch("DROP TRIGGER export_events_insert")
            .unwrap();
        assert!(!store.export_enabled().unwrap());
        let t = Timestamp::from_unix_nanos(1);
        store.insert(event("e1", "s", EventKind::Open, t)).unwrap();
        assert_eq!(store.changes_after(0, 10).unwrap().changes, vec![]);
        assert_eq!(store.enable_export(&["a"]).unwrap(), 1);
        assert_eq!(ids(&store.changes_after(0, 10).unwrap()), ["e1"]);
    }
}
