//! The gate's IO: accept loops (plain TCP and TLS), and per connection a small pump
//! that carries out [`super::session`]'s decisions. Client → broker packets are framed,
//! checked and re-encoded; broker → client packets are only framed (for the size cap)
//! and pass through unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_rustls::TlsAcceptor;

use super::acl::{Action, Identity};
use super::frame::{self, FrameError};
use super::session::{self, Mode, Refusal, Session};
use super::{Authenticator, tls};

/// Gate counters (all monotonic except `active`).
#[derive(Debug, Default)]
pub struct GateStats {
    /// Connections admitted to the broker.
    pub admitted: AtomicU64,
    /// Connections open right now (admitted or still connecting).
    pub active: AtomicU64,
    /// Connections refused because the cap was reached.
    pub refused_capacity: AtomicU64,
    /// No CONNECT (or no TLS handshake) within the timeout.
    pub connect_timeouts: AtomicU64,
    /// Protocol versions other than MQTT 3.1.1.
    pub refused_protocol: AtomicU64,
    /// Missing or wrong credentials.
    pub refused_auth: AtomicU64,
    /// A device using a client id other than its own.
    pub refused_client_id: AtomicU64,
    /// Publishes the ACL refused.
    pub denied_publish: AtomicU64,
    /// Subscriptions the ACL refused.
    pub denied_subscribe: AtomicU64,
    /// Last-Wills the ACL refused.
    pub denied_will: AtomicU64,
    /// Packets over the size cap (either direction).
    pub oversized: AtomicU64,
    /// Undecodable packets or packets a client must not send.
    pub malformed: AtomicU64,
    /// TLS handshakes that failed (no or untrusted client certificate, …).
    pub tls_failures: AtomicU64,
    /// The broker behind the gate could not be reached.
    pub upstream_failures: AtomicU64,
}

/// A copy of [`GateStats`] for reports and the API.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct GateCounters {
    /// See [`GateStats::admitted`].
    pub admitted: u64,
    /// See [`GateStats::active`].
    pub active: u64,
    /// See [`GateStats::refused_capacity`].
    pub refused_capacity: u64,
    /// See [`GateStats::connect_timeouts`].
    pub connect_timeouts: u64,
    /// See [`GateStats::refused_protocol`].
    pub refused_protocol: u64,
    /// See [`GateStats::refused_auth`].
    pub refused_auth: u64,
    /// See [`GateStats::refused_client_id`].
    pub refused_client_id: u64,
    /// See [`GateStats::denied_publish`].
    pub denied_publish: u64,
    /// See [`GateStats::denied_subscribe`].
    pub denied_subscribe: u64,
    /// See [`GateStats::denied_will`].
    pub denied_will: u64,
    /// See [`GateStats::oversized`].
    pub oversized: u64,
    /// See [`GateStats::malformed`].
    pub malformed: u64,
    /// See [`GateStats::tls_failures`].
    pub tls_failures: u64,
    /// See [`GateStats::upstream_failures`].
    pub upstream_failures: u64,
}

impl GateStats {
    /// The current values.
    pub fn snapshot(&self) -> GateCounters {
        GateCounters {
            admitted: self.admitted.load(Relaxed),
            active: self.active.load(Relaxed),
            refused_capacity: self.refused_capacity.load(Relaxed),
            connect_timeouts: self.connect_timeouts.load(Relaxed),
            refused_protocol: self.refused_protocol.load(Relaxed),
            refused_auth: self.refused_auth.load(Relaxed),
            refused_client_id: self.refused_client_id.load(Relaxed),
            denied_publish: self.denied_publish.load(Relaxed),
            denied_subscribe: self.denied_subscribe.load(Relaxed),
            denied_will: self.denied_will.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            tls_failures: self.tls_failures.load(Relaxed),
            upstream_failures: self.upstream_failures.load(Relaxed),
        }
    }

    /// Total ACL denials.
    pub fn denied(&self) -> u64 {
        self.denied_publish.load(Relaxed)
            + self.denied_subscribe.load(Relaxed)
            + self.denied_will.load(Relaxed)
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Everything a connection task needs.
pub(crate) struct Gate {
    pub mode: Mode,
    pub auth: Option<Arc<dyn Authenticator>>,
    pub upstream: SocketAddr,
    pub secret: Arc<str>,
    pub max_packet: usize,
    pub connect_timeout: Duration,
    pub slots: Arc<Semaphore>,
    pub stats: Arc<GateStats>,
    /// Set while the connection cap is reached, so the warning is logged once per episode.
    pub saturated: AtomicBool,
}

/// How a client reached the gate.
enum Transport {
    Plain,
    /// TLS with a verified client certificate naming `identity` (None: it names no
    /// valid device id).
    Tls {
        identity: Option<String>,
    },
}

/// Accepts connections until `shutdown` changes (or its sender is dropped).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    gate: Arc<Gate>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "MQTT gate accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = gate.slots.clone().try_acquire_owned() else {
            inc(&gate.stats.refused_capacity);
            if !gate.saturated.swap(true, Relaxed) {
                tracing::warn!(%peer, "MQTT connection cap reached; refusing new connections");
            }
            drop(sock);
            continue;
        };
        gate.saturated.store(false, Relaxed);
        let _ = sock.set_nodelay(true);
        let gate = gate.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            inc(&gate.stats.active);
            handle(sock, peer, tls, &gate).await;
            gate.stats.active.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }
}

async fn handle(sock: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, gate: &Gate) {
    // One deadline for the TLS handshake and the CONNECT together.
    let deadline = Instant::now() + gate.connect_timeout;
    let Some(acceptor) = tls else {
        return run(sock, peer, Transport::Plain, deadline, gate).await;
    };
    match timeout_at(deadline, acceptor.accept(sock)).await {
        Ok(Ok(stream)) => {
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::cert_identity(c));
            run(stream, peer, Transport::Tls { identity }, deadline, gate).await
        }
        Ok(Err(e)) => {
            inc(&gate.stats.tls_failures);
            tracing::info!(%peer, error = %e, "MQTT TLS handshake failed");
        }
        Err(_) => {
            inc(&gate.stats.connect_timeouts);
            tracing::debug!(%peer, "no TLS handshake before the timeout");
        }
    }
}

/// Why a pump stopped.
enum End {
    Closed,
    Refused(Refusal),
    Frame(FrameError, &'static str),
}

async fn run<S>(client: S, peer: SocketAddr, transport: Transport, deadline: Instant, gate: &Gate)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let mut buf = BytesMut::with_capacity(1024);
    let first = match timeout_at(deadline, read_frame(&mut cr, &mut buf, gate.max_packet)).await {
        Err(_) => {
            inc(&gate.stats.connect_timeouts);
            tracing::debug!(%peer, "no CONNECT before the timeout; closing");
            return;
        }
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return finish(End::Frame(e, "client"), peer, "?", gate),
    };
    let req = match session::first_packet(first, gate.max_packet) {
        Ok(r) => r,
        Err(r) => return refuse(&mut cw, r, peer, gate).await,
    };
    let identity = match gate.mode {
        Mode::Open => None,
        Mode::Enforce => authenticate(gate, &req, &transport).await,
    };
    let (session, connect) = match session::admit(req, gate.mode, identity, &gate.secret) {
        Ok(x) => x,
        Err(r) => return refuse(&mut cw, r, peer, gate).await,
    };
    let up = match TcpStream::connect(gate.upstream).await {
        Ok(s) => s,
        Err(e) => {
            inc(&gate.stats.upstream_failures);
            tracing::error!(error = %e, "the gate cannot reach the embedded broker");
            let _ = cw
                .write_all(&session::connack(
                    rumqttc::mqttbytes::v4::ConnectReturnCode::ServiceUnavailable,
                ))
                .await;
            return;
        }
    };
    let _ = up.set_nodelay(true);
    let (mut ur, mut uw) = up.into_split();
    if uw.write_all(&connect).await.is_err() {
        return;
    }
    inc(&gate.stats.admitted);
    let who = session
        .identity
        .as_ref()
        .map_or(session.client_id.as_str(), Identity::label)
        .to_owned();
    tracing::debug!(%peer, client = %who, "MQTT client admitted");
    let end = tokio::select! {
        e = client_to_broker(&mut cr, buf, &mut uw, &session, gate.max_packet) => e,
        e = broker_to_client(&mut ur, &mut cw, gate.max_packet) => e,
    };
    finish(end, peer, &who, gate);
    // Closing both sides: the broker sees the client go (and fires its Last-Will).
    let _ = timeout(Duration::from_secs(1), cw.shutdown()).await;
    let _ = timeout(Duration::from_secs(1), uw.shutdown()).await;
}

async fn authenticate(
    gate: &Gate,
    req: &session::ConnectRequest,
    transport: &Transport,
) -> Option<Identity> {
    let auth = gate.auth.clone()?;
    let cert = match transport {
        Transport::Plain => None,
        // A TLS client whose certificate names no device gets no identity at all.
        Transport::Tls { identity: None } => return None,
        Transport::Tls { identity: Some(cn) } => Some(cn.clone()),
    };
    let client_id = req.client_id().to_owned();
    let user = req.username().map(str::to_owned);
    let pass = req.password().map(<[u8]>::to_vec);
    let cn = cert.clone();
    // The authenticator may hit the database, whose lock another task can hold for a
    // while (model registration): keep it off the async workers.
    let who = tokio::task::spawn_blocking(move || {
        auth.authenticate(&client_id, user.as_deref(), pass.as_deref(), cn.as_deref())
    })
    .await
    .ok()
    .flatten()?;
    // On the TLS listener the certificate is the identity: nothing else may be claimed.
    match cert {
        Some(cn) if who.device() != Some(cn.as_str()) => None,
        _ => Some(who),
    }
}

async fn refuse<W: AsyncWrite + Unpin>(w: &mut W, r: Refusal, peer: SocketAddr, gate: &Gate) {
    let code = r.connack();
    finish(End::Refused(r), peer, "?", gate);
    if let Some(code) = code {
        let _ = timeout(Duration::from_secs(1), w.write_all(&session::connack(code))).await;
    }
    let _ = timeout(Duration::from_secs(1), w.shutdown()).await;
}

/// Logs and counts how a connection ended.
fn finish(end: End, peer: SocketAddr, who: &str, gate: &Gate) {
    let s = &gate.stats;
    match end {
        End::Closed => tracing::debug!(%peer, client = %who, "MQTT connection closed"),
        End::Frame(FrameError::TooLarge { size, max }, dir) => {
            inc(&s.oversized);
            tracing::warn!(%peer, client = %who, size, max, from = dir, "MQTT packet over the size limit; connection closed");
        }
        End::Frame(FrameError::Malformed(m), dir) => {
            inc(&s.malformed);
            tracing::info!(%peer, client = %who, from = dir, error = %m, "malformed MQTT stream; connection closed");
        }
        End::Refused(Refusal::Denied(v)) => {
            inc(match v.action {
                Action::Publish => &s.denied_publish,
                Action::Subscribe => &s.denied_subscribe,
                Action::Will => &s.denied_will,
            });
            tracing::warn!(%peer, device = %v.device, action = v.action.as_str(), topic = %v.topic, "MQTT ACL denied; connection closed");
        }
        End::Refused(r @ Refusal::Credentials { .. }) => {
            inc(&s.refused_auth);
            tracing::warn!(%peer, "{r}; refused");
        }
        End::Refused(r @ Refusal::ClientId { .. }) => {
            inc(&s.refused_client_id);
            tracing::warn!(%peer, "{r}; refused");
        }
        End::Refused(r @ Refusal::Protocol { .. }) => {
            inc(&s.refused_protocol);
            tracing::info!(%peer, "{r}; refused");
        }
        End::Refused(r @ (Refusal::NotConnect(_) | Refusal::Malformed(_))) => {
            inc(&s.malformed);
            tracing::info!(%peer, client = %who, "{r}; connection closed");
        }
    }
}

/// Reads until one whole frame is buffered; `Ok(None)` on a clean end of stream.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<BytesMut>, FrameError> {
    loop {
        if let Some(f) = frame::next_frame(buf, max)? {
            return Ok(Some(f));
        }
        match r.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn client_to_broker<R, W>(
    r: &mut R,
    mut buf: BytesMut,
    w: &mut W,
    session: &Session,
    max: usize,
) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    loop {
        // Packets before a refused one still go (they were allowed); nothing of the
        // refused packet or after it does.
        let mut end = None;
        loop {
            match frame::next_frame(&mut buf, max) {
                Ok(Some(f)) => match session.inspect(f, max) {
                    Ok(bytes) => out.extend_from_slice(&bytes),
                    Err(refusal) => {
                        end = Some(End::Refused(refusal));
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    end = Some(End::Frame(e, "client"));
                    break;
                }
            }
        }
        if !out.is_empty() && (w.write_all(&out).await.is_err() || w.flush().await.is_err()) {
            return End::Closed;
        }
        out.clear();
        if let Some(end) = end {
            return end;
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(_) => {}
        }
    }
}

async fn broker_to_client<R, W>(r: &mut R, w: &mut W, max: usize) -> End
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return End::Closed,
            Ok(_) => {}
        }
        // Forward every whole frame at once; keep a partial one for the next read.
        let mut whole = 0;
        let mut end = None;
        loop {
            match frame::frame_len(buf.get(whole..).unwrap_or_default(), max) {
                Ok(Some(n)) => whole += n,
                Ok(None) => break,
                Err(e) => {
                    end = Some(End::Frame(e, "broker"));
                    break;
                }
            }
        }
        if whole > 0 {
            let chunk = buf.split_to(whole);
            if w.write_all(&chunk).await.is_err() || w.flush().await.is_err() {
                return End::Closed;
            }
        }
        if let Some(end) = end {
            return end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{Packet, Publish};

    fn publish(topic: &str, len: usize) -> BytesMut {
        let mut b = BytesMut::new();
        Packet::Publish(Publish::new(topic, QoS::AtMostOnce, vec![1u8; len]))
            .write(&mut b, usize::MAX)
            .unwrap();
        b
    }

    #[tokio::test]
    async fn broker_to_client_forwards_whole_frames_then_stops_at_the_cap() {
        let (mut broker, mut from_broker) = tokio::io::duplex(1 << 16);
        let (mut to_client, mut client) = tokio::io::duplex(1 << 16);
        let small = publish("outpost/v1/dev/a/ack", 10);
        let mut sent = small.clone();
        sent.extend_from_slice(&small);
        sent.extend_from_slice(&publish("outpost/v1/dev/a/bundle/resp", 5000));
        broker.write_all(&sent).await.unwrap();
        let end = broker_to_client(&mut from_broker, &mut to_client, 4096).await;
        assert!(matches!(
            end,
            End::Frame(FrameError::TooLarge { max: 4096, .. }, "broker")
        ));
        drop(to_client);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 2 * small.len());
    }

    #[tokio::test]
    async fn client_to_broker_forwards_allowed_packets_before_a_refusal() {
        let session = Session {
            identity: Some(Identity::Device("a".into())),
            client_id: "a".into(),
        };
        let own = publish("outpost/v1/dev/a/state", 3);
        let mut sent = own.clone();
        sent.extend_from_slice(&publish("outpost/v1/dev/b/state", 3));
        sent.extend_from_slice(&own);
        let (mut client, mut from_client) = tokio::io::duplex(1 << 16);
        let (mut to_broker, mut broker) = tokio::io::duplex(1 << 16);
        client.write_all(&sent).await.unwrap();
        let end = client_to_broker(
            &mut from_client,
            BytesMut::new(),
            &mut to_broker,
            &session,
            4096,
        )
        .await;
        assert!(matches!(end, End::Refused(Refusal::Denied(_))));
        drop(to_broker);
        let mut got = Vec::new();
        broker.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, own.to_vec());
    }
}
