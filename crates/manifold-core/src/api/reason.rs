//! The `reason` vocabulary of conditions, test results, Events and metrics,
//! as DESIGN.md gives it, and what each reason means for the controllers:
//! whether a person must act (kstatus's Stalled) and whether to retry with
//! backoff or wait for a change. One table, so the two never disagree.

/// What a controller does after a reconcile that ended with a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Done: wait for the next change (or the next scheduled check).
    Never,
    /// Nothing can improve until an object changes, and a watch brings that
    /// change.
    AwaitChange,
    /// Try again after a per-object exponential backoff: the cause is
    /// outside Kubernetes (a database, a source, a lock).
    Backoff,
}

macro_rules! reasons {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Reason { $($(#[$doc])* $name),* }

        impl Reason {
            /// Every reason, for table tests.
            pub const ALL: &'static [Reason] = &[$(Reason::$name),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$name => stringify!($name)),* }
            }

            /// The reason of a CamelCase word, as status carries it.
            pub fn parse(word: &str) -> Option<Reason> {
                match word { $(stringify!($name) => Some(Reason::$name),)* _ => None }
            }
        }
    };
}

reasons! {
    WorkspaceNotFound,
    ConnectionNotFound,
    /// The Connection is a draft (`manifold.dev/draft`): tested, attached
    /// nowhere until it is created.
    ConnectionDraft,
    SecretNotFound,
    SecretKeyMissing,
    /// The Secret exists but has not been opted in for Manifold's use.
    SecretNotPermitted,
    WorkspaceUnreachable,
    /// No session to the workspace's server could be had in time: the
    /// operator's budget of sessions (or the server's connections) are in
    /// use; the work waits its turn and is tried again.
    SessionsBusy,
    /// The workspace database could not show the pin Manifold wrote on
    /// first contact: the Secret now leads to another server or database
    /// (a new `hostaddr`, a re-pointed name), and nothing is sent there.
    DatabaseMoved,
    ExtensionMissing,
    AuthenticationFailed,
    HostUnreachable,
    RemoteSchemaMissing,
    PermissionDenied,
    Timeout,
    /// What a source answered to an import would have created something
    /// other than foreign tables on the attachment's own server (a table
    /// reading through another server, other options, other objects): the
    /// import was rolled back.
    SourceRefused,
    /// A server's options would carry a Secret's values where every role
    /// of the database reads them.
    SecretExposed,
    SchemaConflict,
    DependentObjects,
    InvalidSpec,
    RoleNotFound,
    TestFailed,
    NoWorkspace,
    /// The workspace role is a superuser: it works, and is warned about.
    SuperuserRole,
    /// The workspace role is not a superuser.
    LeastPrivilege,
    /// Sessions other than Manifold's use the workspace's login, which
    /// reads every attached connection's credentials.
    LoginShared,
    /// Only Manifold's sessions use the workspace's login.
    LoginPrivate,
    Attached,
    Detached,
    /// A connection whose spec and credentials resolve, not yet tested.
    Valid,
    Passed,
    Reachable,
    /// The Event of a passed test.
    TestPassed,
    /// `Verified` before the first test.
    NotTested,
    /// Work in progress, for `Reconciling`.
    Progressing,
    /// A database error with no more precise reason.
    DatabaseError,
    /// A reconcile that failed against the Kubernetes API (metrics only).
    KubernetesApi,
    /// A deletion that gave up on a database it could not reach.
    CleanupAbandoned,
    /// An aggregator that covers no connection: a warning, not a failure.
    NoMembers,
    /// An aggregator that covers connections.
    Aggregating,
}

impl Reason {
    /// The outcome is what was wanted.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Reason::Attached
                | Reason::Detached
                | Reason::Valid
                | Reason::Passed
                | Reason::Reachable
                | Reason::TestPassed
                | Reason::LeastPrivilege
                | Reason::LoginPrivate
                | Reason::Aggregating
        )
    }

    /// kstatus's Stalled: no progress is possible until a person acts, in
    /// Kubernetes or in a database. Every other failure is Reconciling: it
    /// resolves by itself (an object appears, a database comes back).
    pub fn stalled(self) -> bool {
        matches!(
            self,
            Reason::InvalidSpec
                | Reason::DatabaseMoved
                | Reason::SchemaConflict
                | Reason::DependentObjects
                | Reason::SecretKeyMissing
                | Reason::SecretNotPermitted
                | Reason::ExtensionMissing
                | Reason::AuthenticationFailed
                | Reason::PermissionDenied
                | Reason::RemoteSchemaMissing
                | Reason::SourceRefused
                | Reason::SecretExposed
                | Reason::RoleNotFound
                | Reason::TestFailed
                | Reason::CleanupAbandoned
        )
    }

    /// What to do after a reconcile that ended with this reason.
    pub fn retry(self) -> Retry {
        if self.is_success() {
            return Retry::Never;
        }
        match self {
            // Only a change to an object can fix these, and the watches
            // bring every such change.
            Reason::WorkspaceNotFound
            | Reason::ConnectionNotFound
            | Reason::ConnectionDraft
            | Reason::SecretNotFound
            | Reason::SecretKeyMissing
            | Reason::SecretNotPermitted
            | Reason::InvalidSpec
            | Reason::SchemaConflict
            | Reason::NoWorkspace
            | Reason::NoMembers
            | Reason::CleanupAbandoned => Retry::AwaitChange,
            // The cause is in a database or a source, which no watch sees.
            _ => Retry::Backoff,
        }
    }
}

/// Why something did not happen: a reason and a message for a person. The
/// message never contains a secret value, and text from a remote server in
/// it has been sanitized.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure { reason, message: message.into() }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole policy as one table: a change to any row is a visible
    /// change to this test.
    #[test]
    fn every_reason_has_one_policy() {
        use Retry::*;
        let table: &[(Reason, bool, Retry)] = &[
            (Reason::WorkspaceNotFound, false, AwaitChange),
            (Reason::ConnectionNotFound, false, AwaitChange),
            (Reason::ConnectionDraft, false, AwaitChange),
            (Reason::SecretNotFound, false, AwaitChange),
            (Reason::SecretKeyMissing, true, AwaitChange),
            (Reason::SecretNotPermitted, true, AwaitChange),
            (Reason::WorkspaceUnreachable, false, Backoff),
            (Reason::DatabaseMoved, true, Backoff),
            (Reason::SessionsBusy, false, Backoff),
            (Reason::ExtensionMissing, true, Backoff),
            (Reason::AuthenticationFailed, true, Backoff),
            (Reason::HostUnreachable, false, Backoff),
            (Reason::RemoteSchemaMissing, true, Backoff),
            (Reason::PermissionDenied, true, Backoff),
            (Reason::Timeout, false, Backoff),
            (Reason::SourceRefused, true, Backoff),
            (Reason::SecretExposed, true, Backoff),
            (Reason::SchemaConflict, true, AwaitChange),
            (Reason::DependentObjects, true, Backoff),
            (Reason::InvalidSpec, true, AwaitChange),
            (Reason::RoleNotFound, true, Backoff),
            (Reason::TestFailed, true, Backoff),
            (Reason::NoWorkspace, false, AwaitChange),
            (Reason::SuperuserRole, false, Backoff),
            (Reason::LeastPrivilege, false, Never),
            (Reason::LoginShared, false, Backoff),
            (Reason::LoginPrivate, false, Never),
            (Reason::Attached, false, Never),
            (Reason::Detached, false, Never),
            (Reason::Valid, false, Never),
            (Reason::Passed, false, Never),
            (Reason::Reachable, false, Never),
            (Reason::TestPassed, false, Never),
            (Reason::NotTested, false, Backoff),
            (Reason::Progressing, false, Backoff),
            (Reason::DatabaseError, false, Backoff),
            (Reason::KubernetesApi, false, Backoff),
            (Reason::CleanupAbandoned, true, AwaitChange),
            (Reason::NoMembers, false, AwaitChange),
            (Reason::Aggregating, false, Never),
        ];
        assert_eq!(table.len(), Reason::ALL.len(), "every reason is in the table");
        for &(reason, stalled, retry) in table {
            assert_eq!(reason.stalled(), stalled, "{reason} stalled");
            assert_eq!(reason.retry(), retry, "{reason} retry");
            assert!(!(reason.is_success() && stalled), "{reason}");
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
    }
}
