//! A SASL/PLAIN front for Tansu: Tansu 0.6.0 offers SCRAM and OAUTHBEARER only (its SASL
//! library is built without PLAIN), so a PLAIN test needs something that asks for it. The
//! front takes each connection through Kafka's SASL exchange itself, then passes its bytes on to
//! Tansu in the clear, as the TLS front (socat) does for TLS: Tansu stays the broker, the
//! front only authenticates.
//!
//! Per connection: `ApiVersions` requests go to Tansu and its answer back (it lists the SASL
//! requests, whose routes it always has); `SaslHandshake` is answered here, offering PLAIN;
//! `SaslAuthenticate` is answered here, with success when the PLAIN message (authorization
//! id, NUL, user, NUL, password) names the front's user and password, else with
//! `SASL_AUTHENTICATION_FAILED` and the connection closed. Any other request before a
//! successful authentication closes the connection. After it, bytes pass both ways untouched.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SASL_HANDSHAKE: i16 = 17;
const API_VERSIONS: i16 = 18;
const SASL_AUTHENTICATE: i16 = 36;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// What a refused client is told, and what its log then carries.
pub const REFUSAL: &str = "PLAIN front: invalid user or password";

#[derive(Default)]
struct Counts {
    authenticated: AtomicUsize,
    refused: AtomicUsize,
}

pub struct PlainFront {
    pub port: u16,
    counts: Arc<Counts>,
    /// The front's own runtime, on threads of its own, so that a test blocking its runtime's
    /// threads (waiting for a process) does not stall the connections.
    runtime: Option<tokio::runtime::Runtime>,
}

impl PlainFront {
    /// Listens on a free loopback port, passing authenticated connections on to `backend`.
    pub fn start(backend: u16, user: &str, password: &str) -> PlainFront {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_io()
            .build()
            .expect("the front's runtime");
        // Bound here, taken over by the front's runtime: the caller may be inside a runtime
        // of its own, where blocking on another is refused.
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("the front listens");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("its address").port();
        let counts = Arc::new(Counts::default());
        let credentials = Arc::new((user.to_owned(), password.to_owned()));
        runtime.spawn({
            let counts = Arc::clone(&counts);
            async move {
                let listener = TcpListener::from_std(listener).expect("the front's listener");
                while let Ok((client, _)) = listener.accept().await {
                    let (counts, credentials) = (Arc::clone(&counts), Arc::clone(&credentials));
                    tokio::spawn(async move {
                        // A connection that fails ends; the client connects again.
                        let _ = serve(client, backend, &credentials, &counts).await;
                    });
                }
            }
        });
        PlainFront {
            port,
            counts,
            runtime: Some(runtime),
        }
    }

    /// Connections that authenticated so far.
    pub fn authenticated(&self) -> usize {
        self.counts.authenticated.load(Ordering::SeqCst)
    }

    /// Connections refused for their credentials so far.
    pub fn refused(&self) -> usize {
        self.counts.refused.load(Ordering::SeqCst)
    }
}

impl Drop for PlainFront {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn serve(
    mut client: TcpStream,
    backend: u16,
    (user, password): &(String, String),
    counts: &Counts,
) -> io::Result<()> {
    let mut broker = TcpStream::connect(("127.0.0.1", backend)).await?;
    loop {
        let request = read_frame(&mut client).await?;
        let mut r = Reader(&request);
        let (key, version, correlation) = (r.i16()?, r.i16()?, r.i32()?);
        let client_id = r.i16()?.max(0) as usize;
        r.skip(client_id)?;
        match key {
            API_VERSIONS => {
                write_frame(&mut broker, &request).await?;
                let answer = read_frame(&mut broker).await?;
                write_frame(&mut client, &answer).await?;
            }
            SASL_HANDSHAKE => {
                let length = r.i16()?.max(0) as usize;
                let offered = r.take(length)? == b"PLAIN";
                let mut answer = correlation.to_be_bytes().to_vec();
                let error = if offered {
                    0
                } else {
                    UNSUPPORTED_SASL_MECHANISM
                };
                answer.extend(error.to_be_bytes());
                answer.extend(1i32.to_be_bytes());
                answer.extend(5i16.to_be_bytes());
                answer.extend(b"PLAIN");
                write_frame(&mut client, &answer).await?;
                if !offered {
                    return Ok(());
                }
            }
            SASL_AUTHENTICATE => {
                // Version 2 on is flexible: tagged fields end the header, lengths are varints
                // (one more than the length).
                let flexible = version >= 2;
                let message = if flexible {
                    r.tagged_fields()?;
                    let length = r.varint()?.saturating_sub(1) as usize;
                    r.take(length)?
                } else {
                    let length = r.i32()?.max(0) as usize;
                    r.take(length)?
                };
                let mut parts = message.split(|b| *b == 0);
                let (_authorization, given_user, given_password) =
                    (parts.next(), parts.next(), parts.next());
                let accepted = given_user == Some(user.as_bytes())
                    && given_password == Some(password.as_bytes())
                    && parts.next().is_none();
                let mut answer = correlation.to_be_bytes().to_vec();
                if flexible {
                    answer.push(0);
                }
                let error = if accepted {
                    0
                } else {
                    SASL_AUTHENTICATION_FAILED
                };
                answer.extend(error.to_be_bytes());
                // The error message: a nullable string, its length a varint one more than it
                // (0 for none) in a flexible version, else two bytes (-1 for none).
                let message = (!accepted).then_some(REFUSAL.as_bytes());
                match (message, flexible) {
                    (None, false) => answer.extend((-1i16).to_be_bytes()),
                    (None, true) => answer.push(0),
                    (Some(m), false) => answer.extend((m.len() as i16).to_be_bytes()),
                    (Some(m), true) => push_varint(&mut answer, m.len() as u64 + 1),
                }
                answer.extend(message.unwrap_or_default());
                // No server message back, and a session that does not expire (no
                // re-authentication).
                if flexible {
                    answer.push(1);
                } else {
                    answer.extend(0i32.to_be_bytes());
                }
                if version >= 1 {
                    answer.extend(0i64.to_be_bytes());
                }
                if flexible {
                    answer.push(0);
                }
                write_frame(&mut client, &answer).await?;
                if !accepted {
                    counts.refused.fetch_add(1, Ordering::SeqCst);
                    return Ok(());
                }
                counts.authenticated.fetch_add(1, Ordering::SeqCst);
                break;
            }
            // Nothing else before authenticating.
            _ => return Ok(()),
        }
    }
    tokio::io::copy_bidirectional(&mut client, &mut broker).await?;
    Ok(())
}

/// An unsigned varint: seven bits a byte, the low ones first, the high bit set on all but the
/// last.
fn push_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// One request or response: a 4-byte big-endian size, then that many bytes (returned).
async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let size = stream.read_i32().await?;
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s <= 1 << 20)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame size"))?;
    let mut frame = vec![0; size];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

async fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> io::Result<()> {
    stream.write_i32(frame.len() as i32).await?;
    stream.write_all(frame).await
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "short request"));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn skip(&mut self, n: usize) -> io::Result<()> {
        self.take(n).map(|_| ())
    }

    fn i16(&mut self) -> io::Result<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn varint(&mut self) -> io::Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "varint"))
    }

    /// A flexible header's tagged fields: a count, then each tag's number, size and bytes.
    fn tagged_fields(&mut self) -> io::Result<()> {
        for _ in 0..self.varint()? {
            self.varint()?;
            let size = self.varint()? as usize;
            self.skip(size)?;
        }
        Ok(())
    }
}
