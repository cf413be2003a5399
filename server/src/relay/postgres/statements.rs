//! Prepared statements kept per pooled connection, so the server parses
//! and plans each of the sync path's statements once per connection
//! rather than at every execution (rust-postgres's `query(&str, ..)`
//! prepares an unnamed statement each time: a round trip to describe it,
//! then a parse and a plan). PostgreSQL keeps a named statement for the
//! whole session, through rolled-back transactions too.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row, Statement, Transaction};
use r2d2_postgres::PostgresConnectionManager;

/// Statements kept per connection before the cache starts over: far more
/// than the store's statements, so only SQL made per call (there is none
/// on the sync path) could fill it.
const MAX_STATEMENTS: usize = 256;

/// A pooled connection with its prepared statements.
pub(super) struct PgConnection {
    pub client: Client,
    pub statements: Statements,
}

impl std::ops::Deref for PgConnection {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for PgConnection {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The pool's manager: `r2d2_postgres`'s, with a statement cache on each
/// connection.
#[derive(Debug)]
pub(super) struct Manager(pub PostgresConnectionManager<NoTls>);

impl r2d2::ManageConnection for Manager {
    type Connection = PgConnection;
    type Error = postgres::Error;

    fn connect(&self) -> Result<PgConnection, postgres::Error> {
        Ok(PgConnection {
            client: self.0.connect()?,
            statements: Statements::default(),
        })
    }

    fn is_valid(&self, conn: &mut PgConnection) -> Result<(), postgres::Error> {
        self.0.is_valid(&mut conn.client)
    }

    fn has_broken(&self, conn: &mut PgConnection) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// One connection's prepared statements, by SQL text.
#[derive(Debug, Default)]
pub(super) struct Statements(HashMap<String, Statement>);

impl Statements {
    /// `sql` prepared on this connection (through `client`, the connection
    /// or a transaction on it), once.
    fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.0.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        if self.0.len() >= MAX_STATEMENTS {
            self.0.clear();
        }
        self.0.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

/// Statements run on the connection itself, outside a transaction: these
/// shadow `Client`'s methods of the same names, so every one-statement
/// call of the store is prepared once.
impl PgConnection {
    pub fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statements.get(&mut self.client, sql)?;
        self.client.query(&statement, params)
    }

    pub fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statements.get(&mut self.client, sql)?;
        self.client.query_opt(&statement, params)
    }

    pub fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let statement = self.statements.get(&mut self.client, sql)?;
        self.client.query_one(&statement, params)
    }

    pub fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statements.get(&mut self.client, sql)?;
        self.client.execute(&statement, params)
    }
}

/// A transaction whose statements are prepared once per connection. Its
/// methods are the `Transaction` methods the store uses, by SQL text.
pub(super) struct Cached<'a, 'b> {
    pub tx: &'a mut Transaction<'b>,
    statements: &'a mut Statements,
}

impl<'a, 'b> Cached<'a, 'b> {
    pub fn new(tx: &'a mut Transaction<'b>, statements: &'a mut Statements) -> Self {
        Cached { tx, statements }
    }

    pub fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statements.get(self.tx, sql)?;
        self.tx.query(&statement, params)
    }

    pub fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statements.get(self.tx, sql)?;
        self.tx.query_opt(&statement, params)
    }

    pub fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let statement = self.statements.get(self.tx, sql)?;
        self.tx.query_one(&statement, params)
    }

    pub fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let statement = self.statements.get(self.tx, sql)?;
        self.tx.execute(&statement, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r2d2::ManageConnection;

    fn connection() -> Option<PgConnection> {
        let Ok(url) = std::env::var("FIELDCRM_TEST_POSTGRES") else {
            eprintln!("skipped: FIELDCRM_TEST_POSTGRES is not set");
            return None;
        };
        let manager = Manager(PostgresConnectionManager::new(url.parse().unwrap(), NoTls));
        Some(manager.connect().unwrap())
    }

    #[test]
    fn a_statement_is_prepared_once_and_outlives_a_rolled_back_transaction() {
        let Some(mut conn) = connection() else { return };
        let sql = "SELECT $1::int + 1";
        {
            let PgConnection { client, statements } = &mut conn;
            let mut tx = client.transaction().unwrap();
            let mut cached = Cached::new(&mut tx, statements);
            let row = cached.query_one(sql, &[&1i32]).unwrap();
            assert_eq!(row.get::<_, i32>(0), 2);
            tx.rollback().unwrap();
        }
        assert_eq!(conn.statements.0.len(), 1);
        assert_eq!(prepared(&mut conn.client), 1);
        // The same named statement, outside a transaction and in a new one.
        assert_eq!(conn.query_one(sql, &[&41i32]).unwrap().get::<_, i32>(0), 42);
        let PgConnection { client, statements } = &mut conn;
        let mut tx = client.transaction().unwrap();
        let n = Cached::new(&mut tx, statements)
            .execute(sql, &[&0i32])
            .unwrap();
        assert_eq!(n, 1);
        tx.commit().unwrap();
        assert_eq!(conn.statements.0.len(), 1);
        assert_eq!(prepared(&mut conn.client), 1, "prepared once, not again");
    }

    /// Statements the server holds for this session.
    fn prepared(client: &mut Client) -> i64 {
        let rows = client
            .simple_query("SELECT count(*) FROM pg_prepared_statements")
            .unwrap();
        rows.iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|n| n.parse().unwrap()),
                _ => None,
            })
            .unwrap()
    }
}
