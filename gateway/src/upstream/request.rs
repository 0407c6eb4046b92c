//! One request to one replica: the headers keysvc expects from the gateway, the body sent
//! with them, the answer gathered.

use bytes::{Bytes, BytesMut};
use kmip::contract;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::Peer;

use super::retry::Attempt;
use super::{Replica, TenantHeaders, UpstreamPool, MAX_RESPONSE_SIZE, POOL_IDLE_TIMEOUT};
use runtime::http2::never_processed;

impl UpstreamPool {
    pub(super) async fn exchange(
        &self,
        replica: &Replica,
        request: &Bytes,
        who: &TenantHeaders<'_>,
    ) -> Result<Bytes, Attempt> {
        let peer = &*replica.peer.load_full();
        // A pooled connection with a free stream needs no turn at `acquire`.
        let mut session = match self.pooled_session(peer).await? {
            Some(session) => session,
            None => self.session_in_turn(replica, peer).await?,
        };
        let header = request_header(peer.sni(), request.len(), who)
            .map_err(|e| Attempt::NotSent(e.to_string()))?;
        // [`EXCHANGE_TIMEOUT`] bounds the whole exchange (`forward`), so the session's own
        // per-read timers are left unset. Writing the header only queues HEADERS on the
        // stream: a failure means the pooled connection was already unusable and nothing of
        // this request left.
        session
            .write_request_header(header, false)
            .map_err(|e| Attempt::NotSent(e.to_string()))?;
        // The body goes into the stream's send buffer at once, with END_STREAM, so that
        // HEADERS and DATA leave in one write. Pingora's `write_request_body` first waits for
        // flow-control capacity, which h2 grants a new stream only after the connection task
        // has sent its HEADERS: every request then took two writes and a round trip between
        // this task and the connection's. Buffering the whole body is bounded: a KMIP
        // request is at most the listener's message size limit.
        session
            .take_request_body_writer()
            .ok_or_else(|| Attempt::NotSent("the request stream has no body writer".into()))?
            .send_data(request.clone(), true)
            .map_err(|e| match never_processed(&e) {
                true => Attempt::NotSent(e.to_string()),
                false => Attempt::Sent(e.to_string()),
            })?;
        session
            .read_response_header()
            .await
            .map_err(|e| Attempt::after_send(&e))?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(0);
        // An answer that arrives in one DATA frame (most do) is kept as it came; only a
        // longer one is gathered into a buffer.
        let mut body = Bytes::new();
        let mut gathered: Option<BytesMut> = None;
        while let Some(chunk) = session
            .read_response_body()
            .await
            // Headers arrived: the replica processed this request, whatever happens next.
            .map_err(|e| Attempt::Sent(e.to_string()))?
        {
            let len = gathered.as_ref().map_or(body.len(), BytesMut::len);
            if len + chunk.len() > MAX_RESPONSE_SIZE {
                return Err(Attempt::Sent(format!(
                    "answer larger than {MAX_RESPONSE_SIZE} bytes"
                )));
            }
            match &mut gathered {
                Some(buffer) => buffer.extend_from_slice(&chunk),
                None if body.is_empty() => body = chunk,
                None => {
                    let mut buffer = BytesMut::with_capacity(body.len() + chunk.len());
                    buffer.extend_from_slice(&body);
                    buffer.extend_from_slice(&chunk);
                    gathered = Some(buffer);
                }
            }
        }
        let body = gathered.map_or(body, BytesMut::freeze);
        self.connector
            .release_http_session(session, peer, Some(POOL_IDLE_TIMEOUT));
        if status != 200 {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(Attempt::Sent(format!("HTTP {status}: {text}")));
        }
        Ok(body)
    }
}

fn request_header(
    authority: &str,
    len: usize,
    who: &TenantHeaders<'_>,
) -> pingora::Result<Box<RequestHeader>> {
    // No header-name case map: that is for HTTP/1 and HTTP/2 sends names in lower case.
    let mut header = RequestHeader::build_no_case("POST", contract::KMIP_PATH.as_bytes(), Some(8))?;
    header.insert_header("host", authority)?;
    header.insert_header(
        "content-type",
        http::HeaderValue::from_static("application/octet-stream"),
    )?;
    header.insert_header("content-length", http::HeaderValue::from(len))?;
    header.insert_header(contract::TENANT_HEADER, who.tenant)?;
    if let Some(database) = who.database {
        header.insert_header(contract::DATABASE_HEADER, database)?;
    }
    header.insert_header(contract::CLIENT_HEADER, who.client)?;
    // Unique per request: marked never-indexed, so that it does not churn the HTTP/2
    // header table and push out the repeated headers above (sent as one-byte indexes).
    let mut request_id = http::HeaderValue::from_str(who.request_id).map_err(|e| {
        pingora::Error::because(
            pingora::ErrorType::InvalidHTTPHeader,
            contract::REQUEST_ID_HEADER,
            e,
        )
    })?;
    request_id.set_sensitive(true);
    header.insert_header(contract::REQUEST_ID_HEADER, request_id)?;
    Ok(Box::new(header))
}
