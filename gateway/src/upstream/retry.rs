//! The retry rule: a request goes to the next replica in round-robin order (those marked
//! down or failing their health check last) and is tried on one more replica only when it
//! provably never reached the first — whatever the operation — and never after it may have.
//! A request that reached a replica is never sent to a second one: whatever it did to the
//! first (crashed it, say) it cannot do to the next.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use runtime::http2::never_processed;

use super::{Replica, TenantHeaders, UpstreamError, UpstreamPool, EXCHANGE_TIMEOUT};

/// Replicas one request is tried on: the first, and one more if the first never saw it.
pub const MAX_ATTEMPTS: usize = 2;

/// How one attempt failed.
#[derive(Debug)]
pub(super) enum Attempt {
    /// Nothing reached the replica: connect failed, the stream was refused
    /// (REFUSED_STREAM), or a GOAWAY said the replica will never process it.
    NotSent(String),
    /// The request (perhaps) reached the replica: reset mid-exchange, timeout, an error
    /// status, a broken connection after the request left.
    Sent(String),
}

impl Attempt {
    /// An HTTP/2 failure after the request was handed to the connection: not sent only
    /// when the server said so — REFUSED_STREAM, or a graceful GOAWAY whose last stream id
    /// is below this stream (h2 fails exactly those streams with the GOAWAY's own error).
    pub(super) fn after_send(e: &pingora::Error) -> Self {
        match e.root_cause().downcast_ref::<h2::Error>() {
            Some(h2) if never_processed(h2) => Attempt::NotSent(format!("{e} (not processed)")),
            _ => Attempt::Sent(e.to_string()),
        }
    }
}

impl UpstreamPool {
    /// Sends one TTLV request and returns keysvc's TTLV answer, retrying per the module rules.
    pub async fn forward(
        &self,
        request: &Bytes,
        who: &TenantHeaders<'_>,
    ) -> Result<Bytes, UpstreamError> {
        let mut last = String::from("no replica (upstream names not resolved yet?)");
        for replica in self.order().into_iter().take(MAX_ATTEMPTS) {
            let replica = &*replica;
            let attempt =
                tokio::time::timeout(EXCHANGE_TIMEOUT, self.exchange(replica, request, who))
                    .await
                    .unwrap_or_else(|_| Err(Attempt::Sent("timed out".into())));
            match attempt {
                Ok(answer) => {
                    replica.down_since_ms.store(0, Ordering::Relaxed);
                    replica
                        .last_ok_ms
                        .store(self.now_ms().max(1), Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(Attempt::NotSent(e)) => {
                    tracing::warn!(upstream = %replica.addr, request_id = who.request_id, error = %e, "keysvc replica did not take the request");
                    replica.mark_down(self.now_ms());
                    last = format!("{}: {e}", replica.addr);
                }
                Err(Attempt::Sent(e)) => {
                    tracing::warn!(upstream = %replica.addr, request_id = who.request_id, error = %e, "keysvc exchange failed");
                    return Err(UpstreamError::MaybeApplied(format!(
                        "{}: {e}",
                        replica.addr
                    )));
                }
            }
        }
        Err(UpstreamError::Unavailable(last))
    }

    /// Every replica once, starting at the next in round-robin order, the ones marked down
    /// or failing their health check last (still tried: a replica that is back is better
    /// than no answer).
    fn order(&self) -> Vec<Arc<Replica>> {
        let replicas = self.replicas.load_full();
        let n = replicas.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now_ms();
        let up = |r: &Arc<Replica>| r.healthy.load(Ordering::Relaxed) && !r.is_down(now);
        let rotated = || (0..n).map(|i| &replicas[(start + i) % n]);
        let mut order = Vec::with_capacity(n);
        order.extend(rotated().filter(|r| up(r)).cloned());
        order.extend(rotated().filter(|r| !up(r)).cloned());
        order
    }
}
