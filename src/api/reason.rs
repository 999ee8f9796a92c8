/// The `reason` vocabulary of conditions, test results and events, as
/// DESIGN.md gives it. One enum, so that a reason is never misspelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    WorkspaceNotFound,
    ConnectionNotFound,
    SecretNotFound,
    SecretKeyMissing,
    WorkspaceUnreachable,
    ExtensionMissing,
    AuthenticationFailed,
    HostUnreachable,
    RemoteSchemaMissing,
    PermissionDenied,
    Timeout,
    SchemaConflict,
    DependentObjects,
    InvalidSpec,
    TestFailed,
    NoWorkspace,
    Attached,
    Detached,
    /// A connection whose spec and credentials resolve, not yet tested.
    Valid,
    Passed,
    Reachable,
    /// Work in progress, for `Reconciling`.
    Progressing,
    /// A database error with no more precise reason.
    DatabaseError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::WorkspaceNotFound => "WorkspaceNotFound",
            Reason::ConnectionNotFound => "ConnectionNotFound",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretKeyMissing => "SecretKeyMissing",
            Reason::WorkspaceUnreachable => "WorkspaceUnreachable",
            Reason::ExtensionMissing => "ExtensionMissing",
            Reason::AuthenticationFailed => "AuthenticationFailed",
            Reason::HostUnreachable => "HostUnreachable",
            Reason::RemoteSchemaMissing => "RemoteSchemaMissing",
            Reason::PermissionDenied => "PermissionDenied",
            Reason::Timeout => "Timeout",
            Reason::SchemaConflict => "SchemaConflict",
            Reason::DependentObjects => "DependentObjects",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::TestFailed => "TestFailed",
            Reason::NoWorkspace => "NoWorkspace",
            Reason::Attached => "Attached",
            Reason::Detached => "Detached",
            Reason::Valid => "Valid",
            Reason::Passed => "Passed",
            Reason::Reachable => "Reachable",
            Reason::Progressing => "Progressing",
            Reason::DatabaseError => "DatabaseError",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
