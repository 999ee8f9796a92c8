//! Network peers for faults and attacks: a proxy that can hold or delay
//! connections, a fake source that records what it is sent, and a source
//! that never answers.

use std::sync::Mutex;
use std::time::Duration;

// A TCP proxy that can hold connections

/// A TCP proxy in front of a server, for faults: while paused it accepts
/// connections but forwards nothing, and it can delay every new connection.
pub struct Proxy {
    pub port: u16,
    paused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Proxy {
    /// Starts a proxy to 127.0.0.1:`target` on the current runtime.
    pub async fn start(target: u16) -> Proxy {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delay_ms = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (p, d) = (paused.clone(), delay_ms.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (p, d) = (p.clone(), d.clone());
                tokio::spawn(async move {
                    while p.load(Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(d.load(Relaxed))).await;
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { port, paused, delay_ms }
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
