//! The retry rule: every replica once per request in round-robin order (those marked down
//! or failing their health check last), the next one after a failure only when that cannot
//! change the outcome.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use kmip::relay::is_read_only;

use super::{Replica, TenantHeaders, UpstreamError, UpstreamPool, EXCHANGE_TIMEOUT};

/// How one attempt failed.
pub(super) enum Attempt {
    /// Nothing reached the replica: always safe to try another.
    NotSent(String),
    /// The request (perhaps) reached the replica.
    Sent(String),
}

impl UpstreamPool {
    /// Sends one TTLV request and returns keysvc's TTLV answer, retrying per the module rules.
    pub async fn forward(
        &self,
        request: &Bytes,
        who: &TenantHeaders<'_>,
    ) -> Result<Bytes, UpstreamError> {
        let mut read_only: Option<bool> = None;
        let mut last = String::from("no replica (upstream names not resolved yet?)");
        let mut sent = false;
        for replica in self.order() {
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
                    tracing::warn!(upstream = %replica.addr, request_id = who.request_id, error = %e, "keysvc replica unreachable");
                    replica.mark_down(self.now_ms());
                    last = format!("{}: {e}", replica.addr);
                }
                Err(Attempt::Sent(e)) => {
                    tracing::warn!(upstream = %replica.addr, request_id = who.request_id, error = %e, "keysvc exchange failed");
                    last = format!("{}: {e}", replica.addr);
                    sent = true;
                    let retry = *read_only.get_or_insert_with(|| is_read_only(request));
                    if !retry {
                        return Err(UpstreamError::MaybeApplied(last));
                    }
                }
            }
        }
        if sent {
            Err(UpstreamError::MaybeApplied(last))
        } else {
            Err(UpstreamError::Unavailable(last))
        }
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
