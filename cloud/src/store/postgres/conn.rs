//! Pooled connections that keep their prepared statements.
//!
//! A query given as text costs two round trips (parse, then bind and execute) and a parse on
//! the server every time. Each pooled connection keeps the statements it prepared, keyed by
//! their text, so the store's fixed statements are parsed once per connection. Statements
//! built per request (the filtered pages) are not kept: each has its own plan.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row, Statement};
use r2d2_postgres::PostgresConnectionManager;

/// Statements kept per connection; past it, the cache starts again.
const MAX_STATEMENTS: usize = 256;
/// A connection that answered this recently is handed out without a probe (a round trip
/// per checkout); one idle for longer is probed first. A connection that broke since is
/// found out by its next statement, which fails as if the database had gone at that moment,
/// and the pool drops it.
const TRUSTED_FOR: Duration = Duration::from_secs(1);

/// A pooled connection and the statements prepared on it.
pub(crate) struct Conn {
    pub(super) client: Client,
    statements: Statements,
    /// When a statement on it last succeeded.
    answered: Instant,
}

#[derive(Default)]
pub(super) struct Statements(HashMap<String, Statement>);

impl Conn {
    /// Notes that the connection answered: it is trusted for [`TRUSTED_FOR`].
    pub(super) fn answered(&mut self) {
        self.answered = Instant::now();
    }

    /// The connection with its statement cache.
    pub(super) fn cached(&mut self) -> Cached<'_, Client> {
        Cached {
            c: &mut self.client,
            statements: &mut self.statements,
        }
    }

    /// The connection and its statement cache, apart (a transaction borrows the first).
    pub(super) fn parts(&mut self) -> (&mut Client, &mut Statements) {
        (&mut self.client, &mut self.statements)
    }
}

/// r2d2's manager for [`Conn`]: `r2d2_postgres`' with the cache added.
pub(super) struct Manager(pub(super) PostgresConnectionManager<NoTls>);

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Conn, postgres::Error> {
        Ok(Conn {
            client: self.0.connect()?,
            statements: Statements::default(),
            answered: Instant::now(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), postgres::Error> {
        if conn.answered.elapsed() < TRUSTED_FOR {
            return Ok(());
        }
        self.0.is_valid(&mut conn.client)?;
        conn.answered();
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// A connection or a transaction on it, with the connection's statement cache.
pub(crate) struct Cached<'a, C> {
    pub(super) c: &'a mut C,
    statements: &'a mut Statements,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<'a, C: GenericClient> Cached<'a, C> {
    pub(super) fn new(c: &'a mut C, statements: &'a mut Statements) -> Self {
        Cached { c, statements }
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.0.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.prepare(sql)?;
        if self.statements.0.len() >= MAX_STATEMENTS {
            self.statements.0.clear();
        }
        self.statements.0.insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    pub(super) fn query(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.c.query(&s, params)
    }

    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.c.query_opt(&s, params)
    }

    pub(super) fn query_one(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.c.query_one(&s, params)
    }

    pub(super) fn execute(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.c.execute(&s, params)
    }
}
