//! Reading the history back: calls, events and alerts by filter (oldest first, or the most
//! recent `limit`), one call's trace, sessions, and row counts.

use rusqlite::{OptionalExtension, Row, params_from_iter, types::Value};

use mcp_guard_model::records::{
    AlertRecord, CallRecord, EventKind, EventRecord, SessionRecord, Timestamp,
};

use super::{Store, StoreError, schema};

/// Which calls to list. Every field narrows; the default lists everything.
#[derive(Clone, Debug, Default)]
pub struct CallFilter {
    /// Only this server.
    pub server: Option<String>,
    /// Only this tool.
    pub tool: Option<String>,
    /// Only this session.
    pub session: Option<String>,
    /// Only calls started at or after this.
    pub since: Option<Timestamp>,
    /// At most this many, the most recent.
    pub limit: Option<usize>,
}

/// Which events to list. Every field narrows; the default lists everything.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this server.
    pub server: Option<String>,
    /// Only events attributed to this call, including ambiguous ones that list it as a candidate.
    pub call: Option<String>,
    /// Only this kind (its contract name).
    pub kind: Option<String>,
    /// Only this session.
    pub session: Option<String>,
    /// Only events at or after this.
    pub since: Option<Timestamp>,
    /// At most this many, the most recent.
    pub limit: Option<usize>,
}

/// Which alerts to list. Every field narrows; the default lists everything.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    /// Only this server.
    pub server: Option<String>,
    /// Only alerts about this call.
    pub call: Option<String>,
    /// Only alerts at or after this.
    pub since: Option<Timestamp>,
    /// At most this many, the most recent.
    pub limit: Option<usize>,
}

/// One call with everything recorded about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The call.
    pub call: CallRecord,
    /// Its session, when recorded.
    pub session: Option<SessionRecord>,
    /// Its events (attributed to it, or ambiguous with it as a candidate), in time order.
    pub events: Vec<EventRecord>,
    /// Alerts about it, in time order.
    pub alerts: Vec<AlertRecord>,
}

/// Row counts per table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sessions.
    pub sessions: u64,
    /// Calls.
    pub calls: u64,
    /// Events.
    pub events: u64,
    /// Alerts.
    pub alerts: u64,
}

impl Store {
    /// Calls matching `filter`, oldest first.
    pub fn calls(&self, filter: &CallFilter) -> Result<Vec<CallRecord>, StoreError> {
        collect(|f| self.each_call(filter, f))
    }

    /// Calls matching `filter`, oldest first, handed to `f` one at a time (no list in memory).
    pub fn each_call<E: From<StoreError>>(
        &self,
        filter: &CallFilter,
        f: &mut dyn FnMut(CallRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = Query::new();
        q.eq("server", filter.server.as_deref());
        q.eq("tool", filter.tool.as_deref());
        q.eq("session", filter.session.as_deref());
        q.since("started_at", filter.since);
        let select = Select {
            columns: schema::CALL_COLUMNS,
            table: "calls",
            order: "started_at",
            limit: filter.limit,
            from_row: schema::call_from_row,
        };
        self.select_each(&select, &q, f)
    }

    /// Events matching `filter`, oldest first.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<EventRecord>, StoreError> {
        collect(|f| self.each_event(filter, f))
    }

    /// Events matching `filter`, oldest first, handed to `f` one at a time (no list in memory).
    pub fn each_event<E: From<StoreError>>(
        &self,
        filter: &EventFilter,
        f: &mut dyn FnMut(EventRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = Query::new();
        q.eq("server", filter.server.as_deref());
        // By contract name, so synonyms ("kill") find what was stored ("killed").
        let kind = filter
            .kind
            .as_deref()
            .map(|k| EventKind::from_name(k).as_str().to_string());
        q.eq("kind", kind.as_deref());
        q.eq("session", filter.session.as_deref());
        q.since("ts", filter.since);
        if let Some(call) = &filter.call {
            // Ambiguous events name the call among their candidates; the session narrows the
            // search to the partial index of ambiguous events.
            let n = q.push(Value::Text(call.clone()));
            q.clauses.push(format!(
                "(call_id = ?{n} OR (attribution = 'ambiguous' AND session = \
                 (SELECT session FROM calls WHERE call_id = ?{n}) AND EXISTS \
                 (SELECT 1 FROM json_each(events.candidates) WHERE value = ?{n})))"
            ));
        }
        let select = Select {
            columns: schema::EVENT_COLUMNS,
            table: "events",
            order: "ts",
            limit: filter.limit,
            from_row: schema::event_from_row,
        };
        self.select_each(&select, &q, f)
    }

    /// Alerts matching `filter`, oldest first.
    pub fn alerts(&self, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
        collect(|f| self.each_alert(filter, f))
    }

    /// Alerts matching `filter`, oldest first, handed to `f` one at a time (no list in memory).
    pub fn each_alert<E: From<StoreError>>(
        &self,
        filter: &AlertFilter,
        f: &mut dyn FnMut(AlertRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut q = Query::new();
        q.eq("server", filter.server.as_deref());
        if let Some(call) = &filter.call {
            // A repeat in a later call is counted in the session's first alert: it is about
            // this call too when it cites this call's events.
            let n = q.push(Value::Text(call.clone()));
            q.clauses.push(format!(
                "(call_id = ?{n} OR alert_id IN (SELECT ae.alert_id FROM alert_events ae \
                 JOIN events e ON e.event_id = ae.event_id WHERE e.call_id = ?{n}))"
            ));
        }
        q.since("ts", filter.since);
        let select = Select {
            columns: schema::ALERT_COLUMNS,
            table: "alerts",
            order: "ts",
            limit: filter.limit,
            from_row: schema::alert_from_row,
        };
        self.select_each(&select, &q, f)
    }

    fn select_each<T, E: From<StoreError>>(
        &self,
        select: &Select<T>,
        q: &Query,
        f: &mut dyn FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let Select {
            columns,
            table,
            order,
            limit,
            from_row,
        } = select;
        let mut sql = format!("SELECT {columns} FROM {table}");
        if !q.clauses.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&q.clauses.join(" AND "));
        }
        // With a limit, the most recent rows are wanted: take them newest first, then reverse.
        match limit {
            Some(n) => sql.push_str(&format!(" ORDER BY {order} DESC, id DESC LIMIT {n}")),
            None => sql.push_str(&format!(" ORDER BY {order}, id")),
        }
        let err = self.sql_err();
        let mut stmt = self.conn.prepare_cached(&sql).map_err(&err)?;
        let mut rows = stmt
            .query(params_from_iter(q.params.iter()))
            .map_err(&err)?;
        if limit.is_some() {
            let mut newest_first = Vec::new();
            while let Some(row) = rows.next().map_err(&err)? {
                newest_first.push(from_row(row).map_err(&err)?);
            }
            for item in newest_first.into_iter().rev() {
                f(item)?;
            }
        } else {
            while let Some(row) = rows.next().map_err(&err)? {
                f(from_row(row).map_err(&err)?)?;
            }
        }
        Ok(())
    }

    /// One call by id.
    pub fn call(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM calls WHERE call_id = ?1",
            schema::CALL_COLUMNS
        );
        self.conn
            .query_row(&sql, [call_id], schema::call_from_row)
            .optional()
            .map_err(self.sql_err())
    }

    /// One session by id.
    pub fn session(&self, session: &str) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE session = ?1",
            schema::SESSION_COLUMNS
        );
        self.conn
            .query_row(&sql, [session], schema::session_from_row)
            .optional()
            .map_err(self.sql_err())
    }

    /// Sessions started at or after `since` (all when `None`), oldest first.
    pub fn sessions(&self, since: Option<Timestamp>) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM sessions WHERE started_at >= ?1 ORDER BY started_at, session",
            schema::SESSION_COLUMNS
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.sql_err())?;
        let since = since.map_or(i64::MIN, Timestamp::unix_nanos);
        let rows = stmt
            .query_map([since], schema::session_from_row)
            .map_err(self.sql_err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql_err())
    }

    /// A call with its session, events and alerts; `None` when the call is not recorded.
    pub fn trace(&self, call_id: &str) -> Result<Option<Trace>, StoreError> {
        let Some(call) = self.call(call_id)? else {
            return Ok(None);
        };
        let session = self.session(&call.session)?;
        let events = self.events(&EventFilter {
            call: Some(call_id.to_string()),
            ..EventFilter::default()
        })?;
        let alerts = self.alerts(&AlertFilter {
            call: Some(call_id.to_string()),
            ..AlertFilter::default()
        })?;
        Ok(Some(Trace {
            call,
            session,
            events,
            alerts,
        }))
    }

    /// Rows per table.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        let count = |table: &str| -> Result<u64, StoreError> {
            let n: i64 = self
                .conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .map_err(self.sql_err())?;
            Ok(u64::try_from(n).unwrap_or(0))
        };
        Ok(Counts {
            sessions: count("sessions")?,
            calls: count("calls")?,
            events: count("events")?,
            alerts: count("alerts")?,
        })
    }
}

/// Runs an `each_*` query into a list.
fn collect<T>(
    each: impl FnOnce(&mut dyn FnMut(T) -> Result<(), StoreError>) -> Result<(), StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    each(&mut |t| {
        out.push(t);
        Ok(())
    })?;
    Ok(out)
}

/// One table's query shape.
struct Select<T> {
    columns: &'static str,
    table: &'static str,
    order: &'static str,
    limit: Option<usize>,
    from_row: fn(&Row<'_>) -> rusqlite::Result<T>,
}

/// A WHERE clause under construction, with numbered parameters.
struct Query {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Query {
    fn new() -> Self {
        Query {
            clauses: Vec::new(),
            params: Vec::new(),
        }
    }

    fn push(&mut self, v: Value) -> usize {
        self.params.push(v);
        self.params.len()
    }

    fn eq(&mut self, column: &str, value: Option<&str>) {
        if let Some(v) = value {
            let n = self.push(Value::Text(v.to_string()));
            self.clauses.push(format!("{column} = ?{n}"));
        }
    }

    fn since(&mut self, column: &str, since: Option<Timestamp>) {
        if let Some(t) = since {
            let n = self.push(Value::Integer(t.unix_nanos()));
            self.clauses.push(format!("{column} >= ?{n}"));
        }
    }
}
