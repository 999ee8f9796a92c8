//! Postgres errors as reasons. The decision is a pure function of the
//! SQLSTATE, the message and the detail (`reason_of`), so that a table test
//! holds every case without a server; `classify` reads those from a
//! `tokio_postgres::Error` and cleans the text, which is a remote server's.

use tokio_postgres::error::SqlState;

use crate::api::{Failure, Reason};
use crate::secret::scrub;

/// Maps a Postgres error to a reason. postgres_fdw reports a failed remote
/// connection as 08001 with libpq's text in the detail, so the text decides
/// between a wrong password, an unreachable host and a timeout. The text is
/// a remote server's: it is sanitized, and cleaned of `secrets`.
pub fn classify(err: &tokio_postgres::Error, secrets: &[&str]) -> Failure {
    let Some(db) = err.as_db_error() else {
        // No server response: the workspace connection itself broke.
        return Failure::new(Reason::WorkspaceUnreachable, scrub(&format!("workspace database: {}", chain(err)), secrets));
    };
    let mut text = text_of(db.message(), db.detail());
    if let Some(advice) = advice(db.code(), db.message()) {
        text = format!("{text}. {advice}");
    }
    Failure::new(reason_of(db.code(), db.message(), db.detail()), scrub(&text, secrets))
}

/// What to do about an error that a person cannot act on from its text.
pub fn advice(code: &SqlState, message: &str) -> Option<&'static str> {
    (*code == SqlState::OUT_OF_MEMORY && message.contains("shared memory")).then_some(
        "The transaction needed more locks than the server's lock table holds (max_locks_per_transaction × \
         max_connections): an aggregator locks every member's foreign tables while it rebuilds its views, so \
         100 members of 450 tables need about 46,000. Raise max_locks_per_transaction on the workspace's server \
         (a restart is needed), or split the aggregator",
    )
}

/// The message and its detail, as a person reads them.
fn text_of(message: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("{message}: {}", detail.trim()),
        None => message.to_owned(),
    }
}

/// Pure: the reason of an error with this SQLSTATE, message and detail.
pub fn reason_of(code: &SqlState, message: &str, detail: Option<&str>) -> Reason {
    let lower = text_of(message, detail).to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if *code == SqlState::DEPENDENT_OBJECTS_STILL_EXIST {
        Reason::DependentObjects
    } else if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE {
        Reason::Timeout
    } else if *code == SqlState::INVALID_PASSWORD
        || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        // mysql_fdw: "failed to connect to MySQL: Access denied for user ..."
        || has(&["password authentication failed", "no password supplied", "password is required", "authentication failed", "access denied for user"])
    {
        Reason::AuthenticationFailed
    } else if has(&["timeout expired", "timed out"]) {
        Reason::Timeout
    } else if *code == SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION
        || *code == SqlState::CONNECTION_EXCEPTION
        || *code == SqlState::FDW_UNABLE_TO_ESTABLISH_CONNECTION
        // mysql_fdw: "failed to connect to MySQL: Can't connect to server on ..."
        || has(&["could not connect", "connection refused", "could not translate host name", "can't connect to", "failed to connect"])
    {
        Reason::HostUnreachable
    } else if *code == SqlState::FDW_SCHEMA_NOT_FOUND || *code == SqlState::INVALID_SCHEMA_NAME {
        Reason::RemoteSchemaMissing
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE && has(&["to create extension"]) {
        Reason::ExtensionMissing
    } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        Reason::PermissionDenied
    } else if (*code == SqlState::FEATURE_NOT_SUPPORTED || *code == SqlState::UNDEFINED_FILE) && has(&["extension"])
        || *code == SqlState::UNDEFINED_OBJECT && has(&["foreign-data wrapper"])
    {
        Reason::ExtensionMissing
    } else if *code == SqlState::ADMIN_SHUTDOWN || *code == SqlState::CANNOT_CONNECT_NOW || code.code().starts_with("08") {
        Reason::WorkspaceUnreachable
    } else {
        Reason::DatabaseError
    }
}

/// An error and its causes, on one line: "error performing TLS handshake:
/// invalid peer certificate: UnknownIssuer" says what to fix; the first
/// part alone does not.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_lock_table_says_what_to_raise() {
        let given = advice(&SqlState::OUT_OF_MEMORY, "out of shared memory").expect("advice");
        assert!(given.contains("max_locks_per_transaction"), "{given}");
        assert!(advice(&SqlState::OUT_OF_MEMORY, "out of memory").is_none(), "a backend's own memory is another matter");
        assert!(advice(&SqlState::QUERY_CANCELED, "out of shared memory").is_none());
    }

    /// Errors as Postgres, postgres_fdw, libpq and mysql_fdw word them.
    #[test]
    fn every_error_has_its_reason() {
        let cases: &[(&str, &str, Option<&str>, Reason)] = &[
            (
                "2BP01",
                "cannot drop schema s because other objects depend on it",
                Some("view v depends on foreign table s.t"),
                Reason::DependentObjects,
            ),
            ("57014", "canceling statement due to statement timeout", None, Reason::Timeout),
            ("55P03", "canceling statement due to lock timeout", None, Reason::Timeout),
            ("28P01", "password authentication failed for user \"app\"", None, Reason::AuthenticationFailed),
            (
                "08001",
                "could not connect to server \"src\"",
                Some("connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user \"r\""),
                Reason::AuthenticationFailed,
            ),
            (
                "2F003",
                "password is required",
                Some("Non-superuser cannot connect if the server does not request a password."),
                Reason::AuthenticationFailed,
            ),
            (
                "HV00N",
                "failed to connect to MySQL: Access denied for user 'r'@'localhost' (using password: YES)",
                None,
                Reason::AuthenticationFailed,
            ),
            (
                "08001",
                "could not connect to server \"src\"",
                Some("connection to server at \"10.0.0.9\", port 5432 failed: timeout expired"),
                Reason::Timeout,
            ),
            (
                "08001",
                "could not connect to server \"src\"",
                Some("connection to server at \"127.0.0.1\", port 1 failed: Connection refused"),
                Reason::HostUnreachable,
            ),
            (
                "08001",
                "could not connect to server \"src\"",
                Some("could not translate host name \"nowhere.invalid\" to address"),
                Reason::HostUnreachable,
            ),
            ("HV00N", "failed to connect to MySQL: Can't connect to server on '127.0.0.1' (111)", None, Reason::HostUnreachable),
            ("3F000", "schema \"nope\" does not exist", None, Reason::RemoteSchemaMissing),
            ("HV00Q", "schema \"nope\" is not present on foreign server \"src\"", None, Reason::RemoteSchemaMissing),
            ("42501", "permission denied to create extension \"postgres_fdw\"", None, Reason::ExtensionMissing),
            ("42501", "permission denied for foreign-data wrapper postgres_fdw", None, Reason::PermissionDenied),
            ("0A000", "extension \"mysql_fdw\" is not available", None, Reason::ExtensionMissing),
            ("58P01", "could not open extension control file", Some("No such file or directory: extension"), Reason::ExtensionMissing),
            ("42704", "foreign-data wrapper \"nope_fdw\" does not exist", None, Reason::ExtensionMissing),
            ("57P01", "terminating connection due to administrator command", None, Reason::WorkspaceUnreachable),
            ("57P03", "the database system is starting up", None, Reason::WorkspaceUnreachable),
            ("08006", "connection failure", None, Reason::WorkspaceUnreachable),
            ("42P07", "relation \"t\" already exists", None, Reason::DatabaseError),
        ];
        for (code, message, detail, want) in cases {
            let got = reason_of(&SqlState::from_code(code), message, *detail);
            assert_eq!(got, *want, "{code} {message:?} {detail:?}");
        }
    }
}
