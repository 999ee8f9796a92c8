//! Private Postgres instances (Debian's package, started by devenv), the
//! databases the tests make in them, and their source data.

use std::path::Path;
use std::sync::OnceLock;

use crate::devenv::{Devenv, unique};
use crate::secret_marker;

// Postgres

/// A private Postgres instance. TCP connections need the password
/// (scram-sha-256); the superuser is `postgres`.
pub struct Postgres {
    pub devenv: Devenv,
    pub host: String,
    pub port: u16,
    pub password: String,
}

static POSTGRES: OnceLock<Postgres> = OnceLock::new();

/// The test binary's shared Postgres instance.
pub fn postgres() -> &'static Postgres {
    POSTGRES.get_or_init(Postgres::start)
}

impl Postgres {
    /// Starts a new private instance. Most tests share `postgres()`; a test
    /// that stops or kills its database starts its own.
    pub fn start() -> Postgres {
        Postgres::start_with(&[])
    }

    /// A private instance that serves TLS with a certificate for
    /// `localhost` only, from a CA of its own (`ca_pem`).
    pub fn start_tls() -> Postgres {
        Postgres::start_with(&["--tls"])
    }

    /// The CA of an instance started with `start_tls`, as PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.devenv.str("caFile")).unwrap()
    }

    fn start_with(args: &[&str]) -> Postgres {
        let devenv = Devenv::start("postgres", args);
        Postgres { host: devenv.str("host"), port: devenv.env["port"].as_u64().unwrap() as u16, password: devenv.str("password"), devenv }
    }

    /// A libpq URI for `user`/`password` and `database`.
    pub fn uri(&self, user: &str, password: &str, database: &str) -> String {
        format!("postgresql://{user}:{password}@{}:{}/{database}", self.host, self.port)
    }

    /// A superuser URI for `database`.
    pub fn admin_uri(&self, database: &str) -> String {
        self.uri("postgres", &self.password, database)
    }

    /// The owner of a database made by `database`: a role that is not a
    /// superuser, with USAGE on postgres_fdw, which an admin installed.
    pub fn owner(database: &str) -> (String, String) {
        (format!("{database}_owner"), format!("owner-{}-{database}", secret_marker()))
    }

    /// The least-privilege URI of a database made by `database`: what a
    /// Workspace uses, as CloudNativePG's `<cluster>-app` Secret would.
    pub fn owner_uri(&self, database: &str) -> String {
        let (role, password) = Postgres::owner(database);
        self.uri(&role, &password, database)
    }

    /// Connects as the superuser.
    pub async fn connect(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.admin_uri(database), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {database}: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Connects as the owner of a database made by `database`: the
    /// workspace role, whose user mappings its foreign tables use.
    pub async fn connect_owner(&self, database: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.owner_uri(database), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {database} as its owner: {e}"));
        tokio::spawn(connection);
        client
    }

    /// Creates a fresh database and returns its name. As CloudNativePG's
    /// `Database` declares it, the database is owned by a role of its own
    /// (`owner`), and an admin installed postgres_fdw and granted USAGE on
    /// it to that role.
    pub async fn database(&self, prefix: &str) -> String {
        let name = unique(prefix).replace('-', "_");
        self.database_named(&name).await;
        name
    }

    /// `database`, under a name given: on a second server, the same name,
    /// owner and password as a database of the first (an impostor).
    pub async fn database_named(&self, name: &str) {
        let (role, password) = Postgres::owner(name);
        let admin = self.connect("postgres").await;
        admin.batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'")).await.unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name} OWNER {role}")).await.unwrap();
        let db = self.connect(name).await;
        db.batch_execute(&format!(
            "CREATE EXTENSION postgres_fdw SCHEMA public; GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {role}"
        ))
        .await
        .unwrap();
    }

    /// Creates a fresh, empty database, owned by the superuser, with no
    /// extension: what a workspace whose role is a superuser starts from.
    pub async fn bare_database(&self, prefix: &str) -> String {
        let name = unique(prefix).replace('-', "_");
        self.connect("postgres").await.batch_execute(&format!("CREATE DATABASE {name}")).await.unwrap();
        name
    }

    /// Everything the server has logged so far (devenv starts it with
    /// `pg_ctl -l`; `log_statement` is unset and `log_min_error_statement`
    /// is the default, so a failing statement's text is logged with it).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.devenv.dir.join("postgres.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> &Path {
        Path::new(self.devenv.env["dataDir"].as_str().unwrap())
    }
}

// ---------------------------------------------------------------------------
// Source databases

/// A source database with a few tables, and a read-only role for it.
pub struct Source {
    pub db: String,
    pub user: String,
    pub password: String,
}

impl Postgres {
    /// Creates a source database: `public.orders` (3 rows),
    /// `public.customers` (2 rows), `archive.old_orders` (1 row), and a role
    /// that can read them.
    pub async fn source(&self, prefix: &str) -> Source {
        let db = self.database(prefix).await;
        let user = unique("reader").replace('-', "_");
        let password = format!("pw-{}-{}", secret_marker(), unique("s"));
        let admin = self.connect("postgres").await;
        admin.batch_execute(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'")).await.unwrap();
        let c = self.connect(&db).await;
        c.batch_execute(&format!(
            "CREATE TABLE orders (id int PRIMARY KEY, customer_id int, amount numeric);
             INSERT INTO orders VALUES (1, 1, 10.5), (2, 1, 20), (3, 2, 7.25);
             CREATE TABLE customers (id int PRIMARY KEY, name text);
             INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
             CREATE SCHEMA archive;
             CREATE TABLE archive.old_orders (id int, amount numeric);
             INSERT INTO archive.old_orders VALUES (100, 1);
             GRANT USAGE ON SCHEMA public, archive TO {user};
             GRANT SELECT ON ALL TABLES IN SCHEMA public, archive TO {user};"
        ))
        .await
        .unwrap();
        Source { db, user, password }
    }
}

impl Postgres {
    /// Creates a login role that is not a superuser: a person who queries.
    pub async fn login_role(&self, name: &str, password: &str) {
        self.connect("postgres").await.batch_execute(&format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'")).await.unwrap();
    }
}

/// Runs one statement with `psql`, as a person would: unaligned, tuples
/// only. Returns its output, or its error text.
pub fn psql(uri: &str, sql: &str) -> Result<String, String> {
    let out = std::process::Command::new("psql")
        .args([uri, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A private MariaDB server: a real source for mysql_fdw. Its `admin` user
/// may do anything.
pub struct MariaDb {
    pub devenv: Devenv,
    pub port: u16,
    pub password: String,
}

/// The test binary's MariaDB, started on first use.
pub fn mariadb() -> &'static MariaDb {
    static MARIADB: OnceLock<MariaDb> = OnceLock::new();
    MARIADB.get_or_init(|| {
        let devenv = Devenv::start("mariadb", &[]);
        MariaDb { port: devenv.env["port"].as_u64().unwrap() as u16, password: devenv.str("password"), devenv }
    })
}

impl MariaDb {
    /// Runs SQL as the admin, with the `mariadb` client.
    pub fn sql(&self, sql: &str) {
        let out = std::process::Command::new("mariadb")
            .args([
                "--no-defaults",
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "-u",
                "admin",
                &format!("-p{}", self.password),
                "-e",
                sql,
            ])
            .output()
            .expect("run the mariadb client");
        assert!(out.status.success(), "mariadb: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A database with `products` (3 rows) and a user that may read it.
    pub fn source(&self, name: &str, user: &str, password: &str) {
        self.sql(&format!(
            "CREATE DATABASE {name}; CREATE TABLE {name}.products (id INT PRIMARY KEY, title VARCHAR(40), price DECIMAL(8,2));
             INSERT INTO {name}.products VALUES (1, 'keyboard', 40), (2, 'mouse', 12.5), (3, 'screen', 199);
             CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'; GRANT SELECT ON {name}.* TO '{user}'@'127.0.0.1';"
        ));
    }
}
