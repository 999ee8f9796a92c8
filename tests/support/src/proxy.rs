//! Network peers for faults and attacks: a proxy that can hold or delay
//! connections, a fake source that records what it is sent, and a source
//! that never answers.

use std::sync::Mutex;
use std::time::Duration;

// A TCP proxy that can hold connections

/// A TCP proxy in front of a server, for faults: while paused it accepts
/// connections but forwards nothing, it can delay every new connection,
/// and it can send new connections to another server.
pub struct Proxy {
    pub port: u16,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    target: std::sync::Arc<std::sync::atomic::AtomicU16>,
}

impl Proxy {
    /// Starts a proxy to 127.0.0.1:`target` on the current runtime.
    pub async fn start(target: u16) -> Proxy {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let target = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(target));
        let (p, d, t) = (paused.clone(), delay_ms.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (p, d, t) = (p.clone(), d.clone(), t.clone());
                tokio::spawn(async move {
                    while p.load(Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(d.load(Relaxed))).await;
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", t.load(Relaxed))).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { port, paused, delay_ms, target }
    }

    /// Sends new connections to 127.0.0.1:`port` from now on, as a DNS
    /// name or a Service re-pointed elsewhere does; open ones stay.
    pub fn retarget(&self, port: u16) {
        self.target.store(port, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A server that speaks just enough of the Postgres protocol to ask a client
/// for its password in clear text, and records every byte it receives: the
/// tenant's own server in the attack a Connection could make. Then it
/// answers with `error`, a message of its choosing.
pub struct FakeSource {
    pub port: u16,
    received: std::sync::Arc<Mutex<Vec<u8>>>,
}

impl FakeSource {
    pub async fn start(error: &str) -> FakeSource {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received: std::sync::Arc<Mutex<Vec<u8>>> = Default::default();
        let (log, error) = (received.clone(), error.to_owned());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (log, error) = (log.clone(), error.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    // The startup packet (after a refused SSLRequest, if any).
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                        if n == 8 && buf[4..8] == [0x04, 0xd2, 0x16, 0x2f] {
                            let _ = socket.write_all(b"N").await; // no TLS
                            continue;
                        }
                        break;
                    }
                    // AuthenticationCleartextPassword, then read the password.
                    let _ = socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await;
                    if let Ok(n) = socket.read(&mut buf).await {
                        log.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let mut fields = Vec::new();
                    for (code, value) in [(b'S', "FATAL"), (b'C', "28P01"), (b'M', error.as_str())] {
                        fields.push(code);
                        fields.extend_from_slice(value.as_bytes());
                        fields.push(0);
                    }
                    fields.push(0);
                    let mut message = vec![b'E'];
                    message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
                    message.extend_from_slice(&fields);
                    let _ = socket.write_all(&message).await;
                });
            }
        });
        FakeSource { port, received }
    }

    /// Everything any client sent, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

/// A source that accepts TCP connections and never answers: the source
/// that, unbounded, would hold a workspace session for a long time.
pub async fn silent_source() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

/// A source that speaks enough of the Postgres protocol for postgres_fdw's
/// IMPORT FOREIGN SCHEMA: it asks for the password (in clear text, which
/// postgres_fdw accepts as a password used), answers the session settings
/// and the transaction, says the remote schema exists, and answers the
/// import's column query with `columns` (table, column, type text), as a
/// hostile server may (`answer` changes them). Savepoints are accepted; any
/// other query gets an error.
pub struct FakePostgres {
    pub port: u16,
    queries: std::sync::Arc<Mutex<Vec<String>>>,
    columns: std::sync::Arc<Mutex<Vec<(String, String, String)>>>,
}

impl FakePostgres {
    pub async fn start(columns_of: &[(&str, &str, &str)]) -> FakePostgres {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let queries: std::sync::Arc<Mutex<Vec<String>>> = Default::default();
        let columns: std::sync::Arc<Mutex<Vec<(String, String, String)>>> = Default::default();
        let (log, answers) = (queries.clone(), columns.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (log, answers) = (log.clone(), answers.clone());
                tokio::spawn(async move {
                    let _ = serve_fake_postgres(socket, log, answers).await;
                });
            }
        });
        let fake = FakePostgres { port, queries, columns };
        fake.answer(columns_of);
        fake
    }

    /// What the next imports are answered.
    pub fn answer(&self, columns: &[(&str, &str, &str)]) {
        *self.columns.lock().unwrap() = columns.iter().map(|(t, c, ty)| (t.to_string(), c.to_string(), ty.to_string())).collect();
    }

    /// The queries the clients sent, in order.
    pub fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }
}

fn backend_message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![kind];
    message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    message.extend_from_slice(body);
    message
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// RowDescription of text columns, the DataRows, CommandComplete.
fn fake_rows(names: &[&str], rows: &[Vec<Option<String>>]) -> Vec<u8> {
    let mut body = (names.len() as u16).to_be_bytes().to_vec();
    for name in names {
        cstr(&mut body, name);
        body.extend_from_slice(&0u32.to_be_bytes()); // table oid
        body.extend_from_slice(&0u16.to_be_bytes()); // column number
        body.extend_from_slice(&25u32.to_be_bytes()); // text
        body.extend_from_slice(&(-1i16).to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes()); // text format
    }
    let mut out = backend_message(b'T', &body);
    for row in rows {
        let mut body = (row.len() as u16).to_be_bytes().to_vec();
        for value in row {
            match value {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out.extend(backend_message(b'D', &body));
    }
    let mut tag = Vec::new();
    cstr(&mut tag, &format!("SELECT {}", rows.len()));
    out.extend(backend_message(b'C', &tag));
    out
}

fn fake_error() -> Vec<u8> {
    let mut fields = Vec::new();
    for (code, value) in [(b'S', "ERROR"), (b'V', "ERROR"), (b'C', "0A000"), (b'M', "this fake source answers only an import")] {
        fields.push(code);
        cstr(&mut fields, value);
    }
    fields.push(0);
    backend_message(b'E', &fields)
}

async fn serve_fake_postgres(
    mut socket: tokio::net::TcpStream,
    log: std::sync::Arc<Mutex<Vec<String>>>,
    answers: std::sync::Arc<Mutex<Vec<(String, String, String)>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The startup packet, after refused SSL or GSS encryption requests.
    loop {
        let len = socket.read_u32().await? as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        socket.read_exact(&mut body).await?;
        if body.len() == 4 && (body[..] == [0x04, 0xd2, 0x16, 0x2f] || body[..] == [0x04, 0xd2, 0x16, 0x30]) {
            socket.write_all(b"N").await?;
            continue;
        }
        if body.len() == 12 && body[..4] == [0x04, 0xd2, 0x16, 0x2e] {
            return Ok(()); // a cancel request: nothing runs to cancel
        }
        break;
    }
    // AuthenticationCleartextPassword, and the password message.
    socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
    let _kind = socket.read_u8().await?;
    let len = socket.read_u32().await? as usize;
    let mut password = vec![0u8; len.saturating_sub(4)];
    socket.read_exact(&mut password).await?;
    let mut out = backend_message(b'R', &0u32.to_be_bytes());
    for (name, value) in [
        ("server_version", "15.0"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, value);
        out.extend(backend_message(b'S', &body));
    }
    out.extend(backend_message(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
    out.extend(backend_message(b'Z', b"I"));
    socket.write_all(&out).await?;
    let mut status = b'I';
    loop {
        let kind = socket.read_u8().await?;
        let len = socket.read_u32().await? as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        socket.read_exact(&mut body).await?;
        if kind == b'X' {
            return Ok(());
        }
        if kind == b'S' {
            // The end of an extended-protocol query (a cursor): refused.
            let mut out = fake_error();
            if status == b'T' {
                status = b'E';
            }
            out.extend(backend_message(b'Z', &[status]));
            socket.write_all(&out).await?;
            continue;
        }
        if kind != b'Q' {
            continue;
        }
        let query = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(&body)).into_owned();
        log.lock().unwrap().push(query.clone());
        let word = query.split_whitespace().next().unwrap_or_default().to_ascii_uppercase();
        let mut out = Vec::new();
        let mut tag = Vec::new();
        if query.contains("FROM pg_catalog.pg_namespace") && !query.contains("attname") {
            out = fake_rows(&["?column?"], &[vec![Some("1".into())]]);
        } else if query.contains("attname") {
            let columns = answers.lock().unwrap().clone();
            let rows: Vec<Vec<Option<String>>> = columns
                .iter()
                .map(|(t, c, ty)| vec![Some(t.clone()), Some(c.clone()), Some(ty.clone()), Some("f".into()), None, None, None, None])
                .collect();
            out = fake_rows(
                &["relname", "attname", "format_type", "attnotnull", "pg_get_expr", "attgenerated", "collname", "nspname"],
                &rows,
            );
        } else if ["SET", "START", "BEGIN", "COMMIT", "ABORT", "ROLLBACK", "DEALLOCATE", "SAVEPOINT", "RELEASE"].contains(&word.as_str()) {
            let to_savepoint = query.to_ascii_uppercase().starts_with("ROLLBACK TO");
            status = match word.as_str() {
                "START" | "BEGIN" => b'T',
                "ROLLBACK" if to_savepoint => b'T',
                "COMMIT" | "ABORT" | "ROLLBACK" => b'I',
                _ => status,
            };
            let command = if word == "START" { "START TRANSACTION".to_owned() } else { word.clone() };
            cstr(&mut tag, &command);
            out.extend(backend_message(b'C', &tag));
        } else {
            out.extend(fake_error());
            if status == b'T' {
                status = b'E';
            }
        }
        out.extend(backend_message(b'Z', &[status]));
        socket.write_all(&out).await?;
    }
}
