//! Connections to a replica's database: the pinned session, the config
//! built from the node's URL, and how PostgreSQL's errors are told apart.

use crate::EngineError;
use std::time::Duration;
use tokio_postgres::{Client, Config, NoTls};

/// The session every connection to a replica runs in, whatever the
/// server's defaults (see the module docs of [`super`]).
const SESSION: &str = "
    SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres';
    SET extra_float_digits = 1; SET standard_conforming_strings = on;
    SET search_path = public; SET bytea_output = 'hex'; SET statement_timeout = 0;
    SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0;
    SET default_transaction_isolation = 'read committed'; SET default_transaction_read_only = off;
    SET synchronous_commit = off; SET client_min_messages = error; SET xmloption = content;
    SET check_function_bodies = on; SET row_security = on
";

/// The server of `url`, as paxsql connects to it (the database in the URL
/// is only used to create replicas' databases).
pub(super) fn admin_config(url: &str) -> Result<Config, EngineError> {
    let mut admin: Config = url
        .parse()
        .map_err(|e| EngineError::Storage(format!("the PostgreSQL URL is not valid: {e}")))?;
    if admin.get_connect_timeout().is_none() {
        admin.connect_timeout(Duration::from_secs(5));
    }
    admin.application_name("paxsql");
    Ok(admin)
}

/// A replica's database on the server of `url`.
pub(super) fn replica_config(url: &str, database: &str) -> Result<Config, EngineError> {
    let mut config = admin_config(url)?;
    config.dbname(database);
    Ok(config)
}

/// A current-thread runtime that drives one connection on the caller's thread.
pub(super) fn runtime() -> Result<tokio::runtime::Runtime, EngineError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EngineError::Storage(format!("starting the PostgreSQL client: {e}")))
}

pub(super) fn storage(context: &str, e: &tokio_postgres::Error) -> EngineError {
    EngineError::Storage(format!("{context}: {}", error_text(e)))
}

/// A statement's error as every replica reports it: `ERROR 23505: duplicate
/// key value violates unique constraint "t_pkey" (Key (k)=(1) already exists.)`.
pub(super) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("ERROR {}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            s
        }
    }
}

/// The SQLSTATE of an error text made by [`error_text`], if it has one.
pub(super) fn sqlstate_of(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("ERROR ")?;
    let (code, tail) = (rest.get(..5)?, rest.get(5..)?);
    tail.starts_with(':').then_some(code)
}

/// True when an error is not the statement's fault: the replica must stop
/// rather than record an answer other replicas would not give.
pub(super) fn is_fatal(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            matches!(&code[..2], "08" | "53" | "57" | "58" | "XX" | "F0")
                || matches!(code, "25P02" | "40001" | "40P01")
        }
    }
}

/// Describes the server of a config for messages, without the password.
pub(super) fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("(default user)");
    format!("PostgreSQL at {host}:{port} as {user}")
}

/// Connects and pins the session. The connection is driven by the runtime
/// this runs on.
pub(super) async fn connect(config: &Config) -> Result<Client, EngineError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        EngineError::Storage(format!(
            "cannot connect to {}: {}",
            describe(config),
            error_text(&e)
        ))
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection ended");
        }
    });
    client
        .batch_execute(SESSION)
        .await
        .map_err(|e| storage("setting up the session", &e))?;
    // Superusers only; others keep the server's language for messages.
    if client.batch_execute("SET lc_messages = 'C'").await.is_err() {
        tracing::info!(
            "cannot set lc_messages (not a superuser); error texts use the server's language"
        );
    }
    Ok(client)
}

/// Creates the database unless it exists; true if it was created.
pub(super) async fn create_database(admin: &Config, database: &str) -> Result<bool, EngineError> {
    let client = connect(admin).await?;
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&database],
        )
        .await
        .map_err(|e| storage(&format!("looking up database {database}"), &e))?
        .is_some();
    if exists {
        return Ok(false);
    }
    let quoted = database.replace('"', "\"\"");
    let sql = format!(
        "CREATE DATABASE \"{quoted}\" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
    );
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) => {
            Ok(false)
        }
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) => {
            let user = admin.get_user().unwrap_or("this role");
            Err(EngineError::Storage(format!(
                "{} may not create database {database} ({}): grant it with \
                 ALTER ROLE {user} CREATEDB, or create the database for it beforehand",
                describe(admin),
                error_text(&e)
            )))
        }
        Err(e) => Err(storage(
            &format!("creating database {database} on {}", describe(admin)),
            &e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlstate_is_read_back_from_an_error_text() {
        assert_eq!(
            sqlstate_of("ERROR 57014: canceling statement due to statement timeout"),
            Some("57014")
        );
        assert_eq!(
            sqlstate_of("ERROR 42P01: relation \"x\" does not exist"),
            Some("42P01")
        );
        assert_eq!(sqlstate_of("result too large: more than 10 bytes"), None);
        assert_eq!(sqlstate_of("ERROR 5"), None);
        assert_eq!(sqlstate_of("ERROR 12345 no colon"), None);
    }
}
