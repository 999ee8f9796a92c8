//! Sessions: a workspace's pools, a session's bounded wait, and the
//! deadline that cancels and throws away a session that overran it.

use super::*;

impl Database {
    /// Builds the pools of a workspace. Nothing connects until first use.
    pub fn new(
        target: &Target,
        sizes: PoolSizes,
        timeouts: Timeouts,
        counters: Counters,
        type_extensions: Arc<[String]>,
        budget: &Arc<Budget>,
    ) -> Result<Self, Failure> {
        let invalid = |m: String| Failure::new(Reason::InvalidSpec, m);
        let (uri, mode) = tls::split_sslmode(&target.uri).map_err(|m| invalid(format!("the workspace Secret's URI: {m}")))?;
        let mut config: tokio_postgres::Config =
            uri.parse().map_err(|_| invalid("the workspace Secret's URI is not a valid libpq connection URI".into()))?;
        let uri_secret: Arc<str> = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default().into();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeouts.connect);
        }
        config.application_name("manifold");
        // Pinned from the first statement of every session: nothing a
        // database user plants on the search path runs as the operator,
        // and nothing waits without bound.
        let pinned = format!(
            "-c search_path={} -c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            sql::SESSION_SEARCH_PATH.replace(' ', ""),
            timeouts.statement.as_millis(),
            timeouts.lock.as_millis(),
            timeouts.deadline(timeouts.statement).as_millis(),
        );
        let options = match config.get_options() {
            Some(existing) if !existing.is_empty() => format!("{existing} {pinned}"),
            _ => pinned,
        };
        config.options(options);
        let tls = tls::connector(mode, target.ca.as_deref()).map_err(|m| invalid(format!("workspace TLS: {m}")))?;
        let id = NEXT_DATABASE_ID.fetch_add(1, Ordering::Relaxed);
        let pin = match &target.purpose {
            Purpose::Workspace(pin) => Some(pin::PinState::new(pin)),
            Purpose::AdminTests => None,
        };
        let parts =
            PoolParts { server: server_of(&config), config, tls: tls.clone(), budget: budget.clone(), pin: pin.clone(), id, timeouts };
        let opened = |pool: &'static str| counters.sessions_opened.get_or_create(&crate::metrics::PoolLabels { pool }).clone();
        let sessions = |size: usize, kind: &'static str| -> Result<Sessions, Failure> {
            let suspects = Arc::new(tokio::sync::Semaphore::new(size.saturating_sub(1).max(1)));
            Ok(Sessions { pool: parts.pool(size, true, opened(kind))?, suspects })
        };
        Ok(Database {
            id,
            work: sessions(sizes.work, "work")?,
            tests: sessions(sizes.tests, "tests")?,
            observe: parts.pool(1, false, opened("observe"))?,
            tls,
            timeouts,
            counters,
            uri_secret,
            admin_tests: matches!(target.purpose, Purpose::AdminTests),
            pin,
            type_extensions,
            budget_size: budget.settings().per_server,
            work_expected: Arc::default(),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// A session of `sessions` for work on a source; a suspect source first
    /// waits, bounded, for its share.
    pub(super) async fn source_session(
        &self,
        sessions: &Sessions,
        suspect: bool,
    ) -> Result<(Session, Option<tokio::sync::OwnedSemaphorePermit>), Failure> {
        let permit = if suspect {
            let wait = self.timeouts.deadline(self.timeouts.statement);
            match tokio::time::timeout(wait, sessions.suspects.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    return Err(Failure::new(
                        Reason::Timeout,
                        format!("waited {wait:?} for a session: other sources that time out hold the ones this source may use"),
                    ));
                }
            }
        } else {
            None
        };
        Ok((self.session(&sessions.pool).await?, permit))
    }

    pub(super) async fn session(&self, pool: &Pool) -> Result<Session, Failure> {
        let object = pool.get().await.map_err(|e| {
            use budget::SessionError;
            use deadpool::managed::{HookError, PoolError};
            if let PoolError::PostCreateHook(HookError::Message(_)) = &e
                && let Some(refusal) = self.pin.as_ref().and_then(|p| p.refusal())
            {
                return refusal;
            }
            if let PoolError::Backend(SessionError::Busy(busy)) = &e {
                return Failure::new(Reason::SessionsBusy, busy.0.clone());
            }
            if let PoolError::Backend(SessionError::Postgres(err)) = &e
                && err.code() == Some(&SqlState::TOO_MANY_CONNECTIONS)
            {
                return Failure::new(
                    Reason::SessionsBusy,
                    format!(
                        "the workspace's Postgres server has no free connection (too many clients): its max_connections is \
                         spent by others besides the operator's {} (--server-sessions); this work is tried again",
                        self.budget_size
                    ),
                );
            }
            let text = match &e {
                PoolError::Backend(SessionError::Postgres(err))
                | PoolError::PostCreateHook(HookError::Backend(SessionError::Postgres(err))) => match err.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => chain(err),
                },
                PoolError::Timeout(_) => "timed out waiting for a connection".to_owned(),
                other => other.to_string(),
            };
            let message = scrub(&format!("cannot connect to the workspace database: {text}"), &[&self.uri_secret]);
            Failure::new(Reason::WorkspaceUnreachable, message)
        })?;
        let cancel = object.cancel_token();
        Ok(Session { object: Some(object), cancel, tls: self.tls.clone(), finished: false })
    }

    /// The result of an operation that ran under a deadline. A session
    /// that answered goes back to its pool; one that did not is dropped.
    pub(super) fn finish<T>(
        &self,
        mut session: Session,
        result: Result<Result<T, Failure>, tokio::time::error::Elapsed>,
        deadline: Duration,
    ) -> Result<T, Failure> {
        match result {
            Ok(done) => {
                session.finished = true;
                done
            }
            Err(_) => Err(Failure::new(
                Reason::Timeout,
                format!("the workspace database did not answer within {deadline:?}; the session was cancelled and closed"),
            )),
        }
    }

    /// `finish`, and the session, which answered, is closed rather than
    /// kept: an observation comes once a resync interval, far apart, and
    /// at rest the operator holds no session for it.
    pub(super) fn finish_and_close<T>(
        &self,
        mut session: Session,
        result: Result<Result<T, Failure>, tokio::time::error::Elapsed>,
        deadline: Duration,
    ) -> Result<T, Failure> {
        if result.is_ok() {
            session.finished = true;
            if let Some(object) = session.object.take() {
                drop(Object::take(object));
            }
        }
        self.finish(session, result, deadline)
    }

    pub(super) fn count(&self, statements: u64, ddl: u64) {
        self.counters.queries.inc_by(statements.saturating_sub(ddl));
        self.counters.ddl.inc_by(ddl);
    }
}

/// What every pool of one workspace is built from.
struct PoolParts {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    budget: Arc<Budget>,
    server: String,
    pin: Option<Arc<pin::PinState>>,
    id: u64,
    timeouts: Timeouts,
}

impl PoolParts {
    /// A pool of `size` sessions. `checked`: every new session checks the
    /// pin before it is handed out (the observation's checks it in its own
    /// query instead).
    fn pool(&self, size: usize, checked: bool, opened: prometheus_client::metrics::counter::Counter) -> Result<Pool, Failure> {
        let manager =
            Manager::from_config(self.config.clone(), self.tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let manager = Budgeted::new(manager, self.budget.clone(), self.server.clone(), opened);
        // A new session's wait for its permits is bounded by the budget
        // (`--session-wait`), its connect by `timeouts.connect`.
        let create = self.budget.settings().wait + self.timeouts.connect;
        let mut builder = Pool::builder(manager)
            .max_size(size.max(1))
            .runtime(deadpool::Runtime::Tokio1)
            .wait_timeout(Some(self.timeouts.deadline(self.timeouts.statement).max(create)))
            .create_timeout(Some(create));
        if checked {
            builder = builder.post_create(self.hook());
        }
        let pool = builder.build().map_err(|e| Failure::new(Reason::InvalidSpec, format!("workspace pool: {e}")))?;
        self.budget.register(&self.server, &pool);
        Ok(pool)
    }

    /// Before a new session is handed out, and so before anything that
    /// carries a secret: the database shows the pin.
    fn hook(&self) -> deadpool::managed::Hook<Budgeted> {
        let (pin, id) = (self.pin.clone(), self.id);
        deadpool::managed::Hook::async_fn(move |session: &mut budget::Session, _| {
            let pin = pin.clone();
            Box::pin(async move {
                let client = &mut **session;
                let checked = match &pin {
                    Some(state) => pin::check(client, state, id).await,
                    None => pin::register_session(client, id).await,
                };
                checked.map_err(|e| match e {
                    deadpool::managed::HookError::Message(m) => deadpool::managed::HookError::Message(m),
                    deadpool::managed::HookError::Backend(e) => deadpool::managed::HookError::Backend(budget::SessionError::Postgres(e)),
                })
            })
        })
    }
}

/// The server a configuration reaches, as the budget counts it: its first
/// address (`hostaddr`, else the host) and port. Two names of one server
/// count apart.
fn server_of(config: &tokio_postgres::Config) -> String {
    let host = match (config.get_hostaddrs().first(), config.get_hosts().first()) {
        (Some(addr), _) => addr.to_string(),
        (None, Some(tokio_postgres::config::Host::Tcp(name))) => name.to_lowercase(),
        #[cfg(unix)]
        (None, Some(tokio_postgres::config::Host::Unix(path))) => path.display().to_string(),
        (None, None) => "localhost".to_owned(),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}
