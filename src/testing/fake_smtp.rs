//! A fake SMTP server on loopback: it speaks enough SMTP for `lettre` (EHLO,
//! MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS, no auth) and hands every message to
//! the test over a channel, with its body decoded.

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// One message as received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The headers, as sent.
    pub headers: String,
    /// The body, decoded from quoted-printable or base64.
    pub body: String,
}

impl Mail {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// The running server.
pub struct FakeSmtp {
    pub port: u16,
    pub mails: mpsc::UnboundedReceiver<Mail>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeSmtp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeSmtp {
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (tx, mails) = mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = session(stream, tx).await;
                });
            }
        });
        Self {
            port,
            mails,
            server,
        }
    }

    /// The next message, waiting up to `secs`.
    ///
    /// # Panics
    /// When none arrives in time.
    pub async fn next(&mut self, secs: u64) -> Mail {
        tokio::time::timeout(std::time::Duration::from_secs(secs), self.mails.recv())
            .await
            .expect("timed out waiting for an email")
            .expect("the fake SMTP server stopped")
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<Mail>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    write.write_all(b"220 fake-smtp ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    while let Some(line) = lines.next_line().await? {
        let upper = line.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            b"250-fake-smtp\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&line[10..]);
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            to.push(address(&line[8..]));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 go ahead\r\n").await?;
            let mut data = Vec::new();
            while let Some(l) = lines.next_line().await? {
                if l == "." {
                    break;
                }
                data.push(l.strip_prefix('.').map_or(l.clone(), str::to_owned));
            }
            let text = data.join("\r\n");
            let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let mail = Mail {
                from: std::mem::take(&mut from),
                to: std::mem::take(&mut to),
                headers: headers.to_owned(),
                body: String::new(),
            };
            let body = match mail.header("Content-Transfer-Encoding") {
                Some(e) if e.eq_ignore_ascii_case("quoted-printable") => quoted_printable(body),
                Some(e) if e.eq_ignore_ascii_case("base64") => String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD
                        .decode(body.replace("\r\n", ""))
                        .unwrap_or_default(),
                )
                .into_owned(),
                _ => body.to_owned(),
            };
            let _ = tx.send(Mail { body, ..mail });
            b"250 queued\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 OK\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        write.write_all(reply).await?;
    }
    Ok(())
}

fn address(s: &str) -> String {
    s.trim()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn quoted_printable(s: &str) -> String {
    let joined = s.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && let Some(hex) = joined.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
