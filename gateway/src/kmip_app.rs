//! The KMIP TTLV listener: a tenant decision per connection (from the certificate
//! captured in the handshake and the current TenantRouting table), then per request: frame
//! the TTLV message (the body buffered as it arrives), re-authorize (the certificate has not
//! expired, still verifies if the client CA bundle changed, is decided again if the routing
//! rules changed), forward it to keysvc, write the answer back. A connection is closed at
//! a message boundary once it reaches its maximum age. This is the one place where
//! failures become KMIP responses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use kmip::contract;
use kmip::framing::{MessageReader, ReadError};
use kmip::relay::{answer_outcomes, error_response};
use kmip::spec::{Operation, ResultReason};
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::identity::PeerIdentity;
use crate::metrics::{GatewayMetrics, RequestCounters};
use crate::routing::{Decision, DenyReason, Route, RoutingTable, RoutingWatcher};
use crate::tls::{verified_peer, ReloadingClientVerifier, Revoked, VerifiedPeer};
use crate::upstream::{TenantHeaders, UpstreamError, UpstreamPool};
use runtime::fairness::{Slot, TenantSlots, Waited};

/// Once a message header has arrived, its body must follow within this: a client that
/// announces a message and stalls holds a buffer for nothing.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a clean close (TLS close_notify) may take before the connection is dropped.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The KMIP listener's bounds.
#[derive(Debug, Clone, Copy)]
pub struct KmipLimits {
    /// Longest wait for the next request on an open connection.
    pub idle_timeout: Duration,
    /// Age at which a connection is closed at the next message boundary.
    pub max_connection_age: Duration,
    /// The largest request accepted.
    pub max_message_size: usize,
    /// Open connections per tenant.
    pub tenant_connections: usize,
    /// Requests per tenant forwarded to keysvc at once; the rest wait here, in the
    /// gateway, where waiting costs a queue entry instead of an upstream HTTP/2 stream
    /// that another tenant's request then has to wait for.
    pub tenant_requests: usize,
}

/// Longest a request waits for one of its tenant's upstream slots.
pub const TENANT_REQUEST_WAIT: Duration = Duration::from_secs(10);

/// The KMIP listener's application logic (a Pingora [`ServerApp`]).
#[derive(Debug)]
pub struct KmipApp {
    routing: Arc<RoutingWatcher>,
    upstream: Arc<UpstreamPool>,
    metrics: Arc<GatewayMetrics>,
    /// The KMIP listener's client-certificate verifier (re-verification after a CA change).
    verifier: Arc<ReloadingClientVerifier>,
    limits: KmipLimits,
    /// Each tenant's connection slots.
    connections: TenantSlots,
    /// Each tenant's slots for requests in flight to keysvc.
    requests: TenantSlots,
}

impl KmipApp {
    /// The largest request accepted.
    pub fn max_message_size(&self) -> usize {
        self.limits.max_message_size
    }

    pub fn new(
        routing: Arc<RoutingWatcher>,
        upstream: Arc<UpstreamPool>,
        metrics: Arc<GatewayMetrics>,
        verifier: Arc<ReloadingClientVerifier>,
        limits: KmipLimits,
    ) -> Self {
        Self {
            routing,
            upstream,
            metrics,
            verifier,
            limits,
            connections: TenantSlots::new(limits.tenant_connections),
            requests: TenantSlots::new(limits.tenant_requests),
        }
    }

    /// Decides the tenant of a connection under the rules in force now (denials are logged
    /// and counted here).
    pub fn decide(&self, peer: Option<&PeerIdentity>) -> Decision {
        self.decide_under(&self.routing.current(), peer)
    }

    /// Re-checks a verified peer before one of its requests (`verifier`: the listener's);
    /// a refusal is logged and counted.
    pub fn recheck(
        &self,
        peer: &VerifiedPeer,
        verifier: &ReloadingClientVerifier,
    ) -> Result<(), Revoked> {
        peer.recheck(verifier).inspect_err(|revoked| {
            self.metrics.denied(revoked.as_label());
            tracing::warn!(
                subject = peer.identity.subject.as_str(),
                serial = peer.identity.serial.as_str(),
                reason = revoked.as_label(),
                detail = %revoked,
                "request refused: the connection's certificate no longer admits it"
            );
        })
    }

    fn decide_under(&self, table: &RoutingTable, peer: Option<&PeerIdentity>) -> Decision {
        let decision = match peer {
            Some(peer) => table.decide(peer),
            None => Decision::Deny {
                reason: DenyReason::UnreadableCertificate,
            },
        };
        if let Decision::Deny { reason } = &decision {
            self.metrics.denied(reason.as_label());
            tracing::warn!(
                subject = peer.map(|p| p.subject.as_str()).unwrap_or("-"),
                serial = peer.map(|p| p.serial.as_str()).unwrap_or("-"),
                issuer = peer.map(|p| p.issuer.as_str()).unwrap_or("-"),
                reason = reason.as_label(),
                detail = %reason,
                "tenant denied"
            );
        }
        decision
    }

    /// The answer to one framed request, counted in `kmip_requests_total` (one per answered
    /// batch item: operation and result status, read from the answer without decoding its
    /// payloads; tenant `-` for a denied connection) and timed in
    /// `kmip_request_duration_seconds`. `counters` holds the connection's counters (a new
    /// one per request where there is no connection, as on the HTTPS listener).
    pub async fn answer(
        &self,
        request: Bytes,
        decision: &Decision,
        client: &str,
        counters: &mut RequestCounters,
    ) -> Bytes {
        let started = std::time::Instant::now();
        let answer = self.answer_uncounted(request, decision, client).await;
        self.metrics
            .observe_duration(started.elapsed().as_secs_f64());
        let tenant = match decision {
            Decision::Allow(route) => route.tenant.as_str(),
            Decision::Deny { .. } => "-",
        };
        match answer_outcomes(&answer) {
            Some(outcomes) => {
                for (operation, status) in outcomes {
                    let operation = operation.map_or("unknown", Operation::xml_name);
                    counters.inc(&self.metrics, tenant, operation, status.xml_name());
                }
            }
            None => counters.inc(&self.metrics, tenant, "unknown", "undecodable"),
        }
        answer
    }

    async fn answer_uncounted(&self, request: Bytes, decision: &Decision, client: &str) -> Bytes {
        let route: &Route = match decision {
            Decision::Allow(route) => route,
            Decision::Deny { .. } => {
                return error_response(
                    &request,
                    ResultReason::PermissionDenied,
                    "the client certificate is not routed to a tenant",
                )
                .into()
            }
        };
        let _slot = match self
            .requests
            .take_within(&route.tenant, TENANT_REQUEST_WAIT)
            .await
        {
            Waited::AtOnce(slot) => slot,
            Waited::Queued(slot) => {
                self.metrics
                    .throttled()
                    .throttled(&route.tenant, "requests");
                slot
            }
            Waited::TimedOut => {
                self.metrics
                    .throttled()
                    .throttled(&route.tenant, "requests_timeout");
                return error_response(
                    &request,
                    ResultReason::GeneralFailure,
                    "too many requests of this tenant in flight; not executed, retry later",
                )
                .into();
            }
        };
        let mut request_id = uuid::Uuid::encode_buffer();
        let request_id: &str = uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut request_id);
        let who = TenantHeaders {
            tenant: &route.tenant,
            database: route.database.as_deref(),
            client,
            request_id,
        };
        match self.upstream.forward(&request, &who).await {
            Ok(answer) => answer,
            Err(e) => {
                self.metrics.upstream_failed(match e {
                    UpstreamError::Unavailable(_) => "unavailable",
                    _ => "maybe_applied",
                });
                tracing::error!(tenant = %route.tenant, request_id, error = %e, "request not served");
                let message = match e {
                    UpstreamError::Unavailable(_) => {
                        "no key service replica is reachable; the operation was not applied"
                    }
                    _ => "upstream failed; the operation may or may not have been applied",
                };
                error_response(&request, ResultReason::GeneralFailure, message).into()
            }
        }
    }
}

/// What reading the next request produced.
enum Next {
    Request(Bytes),
    /// Orderly end: EOF between messages, idle timeout, shutdown.
    Close(&'static str),
    /// The peer broke the framing or the limits; the connection is dropped.
    Abort(String),
}

impl KmipApp {
    async fn next_request(
        &self,
        io: &mut Stream,
        shutdown: &mut ShutdownWatch,
        closes_at: tokio::time::Instant,
    ) -> Next {
        let mut reader = MessageReader::new(self.limits.max_message_size);
        // Shutdown and idleness are watched only between messages: a request that started
        // is served to the end. The announced length is checked with the header, before
        // anything is allocated for the body.
        tokio::select! {
            biased;
            _ = shutdown.changed() => return Next::Close("shutdown"),
            _ = tokio::time::sleep_until(closes_at) => return Next::Close("maximum connection age"),
            read = tokio::time::timeout(self.limits.idle_timeout, reader.header(io)) => match read {
                Err(_) => return Next::Close("idle timeout"),
                Ok(Err(ReadError::Closed)) => return Next::Close("closed by the client"),
                Ok(Err(ReadError::Io { error, .. })) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Next::Close("closed by the client"),
                Ok(Err(ReadError::Io { error, .. })) => return Next::Abort(format!("read: {error}")),
                Ok(Err(e)) => return Next::Abort(format!("message header: {e}")),
                Ok(Ok(_)) => {}
            },
        }
        let mut message = Vec::new();
        match tokio::time::timeout(BODY_TIMEOUT, reader.read(io, &mut message)).await {
            Ok(Ok(())) => Next::Request(Bytes::from(message)),
            Ok(Err(e)) => Next::Abort(format!("message body: {e}")),
            Err(_) => Next::Abort("message body timed out".into()),
        }
    }
}

#[async_trait]
impl ServerApp for KmipApp {
    /// Hands the connection to a task of its own and returns at once. Pingora awaits this in
    /// the connection's first task, which it spawned to run the TLS handshake and which is
    /// therefore sized for the handshake's state (8.6 KiB); served there, every idle KMIP
    /// connection (clients hold theirs for hours) would keep that allocation for its whole
    /// life. The task spawned here holds only [`KmipApp::serve`]'s state. Shutdown still
    /// reaches it through `shutdown`, and it runs on the listener's runtime like the task
    /// it replaces.
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        tokio::spawn(self.clone().serve(io, shutdown.clone()));
        // KMIP connections are never handed back for reuse: `serve` owns them to the end.
        None
    }
}

impl KmipApp {
    /// Serves one KMIP connection until the client leaves, idles out, breaks the framing,
    /// loses its admission, reaches its maximum age, or the gateway shuts down.
    async fn serve(self: Arc<Self>, mut io: Stream, mut shutdown: ShutdownWatch) {
        let _connection = self.metrics.connection();
        let closes_at = tokio::time::Instant::now() + self.limits.max_connection_age;
        let digest = io.get_ssl_digest();
        let peer = digest.as_deref().and_then(verified_peer);
        let identity = peer.map(|p| &p.identity);
        let mut table = self.routing.current();
        let mut decision = self.decide_under(&table, identity);
        let mut slot = self.connection_slot(&decision);
        let client = identity.map(client_header).unwrap_or_default();
        let mut counters = RequestCounters::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let request = match self.next_request(&mut io, &mut shutdown, closes_at).await {
                Next::Request(request) => request,
                Next::Close(why) => {
                    tracing::debug!(why, "KMIP connection closed");
                    break;
                }
                Next::Abort(why) => {
                    tracing::info!(why, client, "KMIP connection dropped");
                    break;
                }
            };
            // Admitted at the handshake is not admitted forever: before every request the
            // certificate must still be valid (and verify, after a CA bundle change), and
            // the tenant is decided again when the rules changed.
            let refusal = match peer.map(|p| self.recheck(p, &self.verifier)) {
                Some(Err(revoked)) => Some(revoked.to_string()),
                _ => None,
            };
            let current = self.routing.current();
            if refusal.is_none() && !Arc::ptr_eq(&current, &table) {
                let again = self.decide_under(&current, identity);
                if again != decision {
                    tracing::info!(client, "routing rules changed: connection decided again");
                    slot = self.connection_slot(&again);
                    decision = again;
                }
                table = current;
            }
            let refusal = refusal.or_else(|| match (&decision, &slot) {
                (Decision::Allow(route), None) => Some(format!(
                    "tenant {} already holds its {} connections to this gateway",
                    route.tenant, self.limits.tenant_connections
                )),
                _ => None,
            });
            if let Some(reason) = refusal {
                // Answered, then closed: the client reconnects (and is decided afresh).
                let answer = error_response(&request, ResultReason::PermissionDenied, &reason);
                let _ = write_all(&mut io, &answer).await;
                tracing::info!(client, reason, "KMIP connection closed after a refusal");
                break;
            }
            // Boxed: the upstream exchange is a large future, and inline it would be part of
            // every idle connection's task for the connection's whole life.
            let answer = Box::pin(self.answer(request, &decision, &client, &mut counters)).await;
            if let Err(e) = write_all(&mut io, &answer).await {
                tracing::info!(error = %e, client, "KMIP answer not delivered");
                return;
            }
        }
        // A clean close: TLS close_notify, then FIN. A client that sent a request meanwhile
        // reads the close_notify instead of an answer, and can tell it from a crash (no
        // close_notify): the request was never read, so it was not executed.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, io.shutdown()).await;
    }

    /// One of the tenant's connection slots (`None`: all taken, counted); a denied
    /// connection needs none.
    fn connection_slot(&self, decision: &Decision) -> Option<Slot> {
        let Decision::Allow(route) = decision else {
            return None;
        };
        let slot = self.connections.try_take(&route.tenant);
        if slot.is_none() {
            self.metrics
                .throttled()
                .throttled(&route.tenant, "connections");
            tracing::warn!(tenant = %route.tenant, limit = self.limits.tenant_connections, "tenant connection refused: its connection limit is reached");
        }
        slot
    }
}

/// The KMIP listener's app when the [`KmipApp`] is shared with the HTTPS listener.
#[derive(Debug, Clone)]
pub struct SharedKmipApp(pub Arc<KmipApp>);

#[async_trait]
impl ServerApp for SharedKmipApp {
    async fn process_new(self: &Arc<Self>, io: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        self.0.process_new(io, shutdown).await
    }
}

async fn write_all(io: &mut Stream, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// The tenant client's identity for keysvc's audit log: the subject DN and serial, in
/// the characters and the length the header admits.
pub fn client_header(peer: &PeerIdentity) -> String {
    let mut text: String = format!("{} serial={}", peer.subject, peer.serial)
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    text.truncate(contract::MAX_HEADER_VALUE_LEN);
    text
}
