//! Health checks: every replica's `/ready`, polled on its own pooled connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use super::retry::Attempt;
use super::{
    Replica, UpstreamPool, HEALTH_CHECK_INTERVAL, HEALTH_CHECK_TIMEOUT, POOL_IDLE_TIMEOUT,
};
use crate::metrics::GatewayMetrics;

/// Pool group of the health checks' connections (requests use group 0).
const HEALTH_CHECK_GROUP: u64 = 1;

impl UpstreamPool {
    /// Polls every replica's `/ready` every [`HEALTH_CHECK_INTERVAL`] (a tokio task).
    pub fn start_health_checks(
        self: &Arc<Self>,
        metrics: Arc<GatewayMetrics>,
    ) -> tokio::task::AbortHandle {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.check_all(&metrics).await;
            }
        })
        .abort_handle()
    }

    /// One round of health checks, all replicas concurrently.
    pub async fn check_all(&self, metrics: &GatewayMetrics) {
        let replicas = self.replicas.load_full();
        let checks = replicas.iter().map(|replica| async move {
            let ok = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, self.check(replica))
                .await
                .unwrap_or_else(|_| Err("timed out".into()));
            let was = replica.healthy.swap(ok.is_ok(), Ordering::Relaxed);
            match &ok {
                Ok(()) => {
                    replica
                        .last_ok_ms
                        .store(self.now_ms().max(1), Ordering::Relaxed);
                    if !was {
                        tracing::info!(upstream = %replica.addr, "keysvc replica healthy again");
                    }
                }
                Err(e) if was => {
                    tracing::warn!(upstream = %replica.addr, error = %e, "keysvc replica failed its health check");
                }
                Err(_) => {}
            }
            metrics.set_upstream_healthy(&replica.addr.to_string(), ok.is_ok());
        });
        futures::future::join_all(checks).await;
    }

    async fn check(&self, replica: &Replica) -> Result<(), String> {
        // Health checks keep connections of their own: a pooled HTTP/2 connection is driven
        // on the runtime that opened it, and request traffic should stay on the listeners'
        // runtimes rather than hop to the background one for every request.
        let mut peer = HttpPeer::clone(&replica.peer.load().peer);
        peer.group_key = HEALTH_CHECK_GROUP;
        let peer = &peer;
        let mut session = self.h2_session(peer).await.map_err(|e| match e {
            Attempt::NotSent(e) | Attempt::Sent(e) => e,
        })?;
        let mut header =
            RequestHeader::build("GET", b"/ready", Some(2)).map_err(|e| e.to_string())?;
        header
            .insert_header("host", &peer.sni)
            .map_err(|e| e.to_string())?;
        session
            .write_request_header(Box::new(header), true)
            .map_err(|e| e.to_string())?;
        session
            .read_response_header()
            .await
            .map_err(|e| e.to_string())?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(0);
        while session
            .read_response_body()
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {}
        self.connector
            .release_http_session(session, peer, Some(POOL_IDLE_TIMEOUT));
        if status == 200 {
            Ok(())
        } else {
            Err(format!("/ready answered HTTP {status}"))
        }
    }
}
