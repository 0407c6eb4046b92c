//! Concurrent KMIP requests share the gateway's HTTP/2 connections to keysvc: a burst of
//! requests that arrive together opens no connection per request in flight (each would cost
//! keysvc a TLS handshake and a socket, and the gateway a connection cycled through its idle
//! pool per request).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::{kmip_client, start_keysvc, Pki, RunningGateway};
use tokio::net::{TcpListener, TcpStream};

const CLIENTS: usize = 32;
const GETS_PER_CLIENT: usize = 25;

/// A TCP relay in front of `target` that counts the connections it accepts; TLS passes
/// through it untouched, so the gateway still verifies keysvc's certificate.
async fn counting_relay(target: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
    let addr = listener.local_addr().expect("relay address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_few_upstream_connections() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let (relay, accepted) = counting_relay(keysvc.api_addr()).await;
    let gateway = RunningGateway::start(&pki, &[relay]).await;

    let addr = gateway.addr_text();
    let connect = || kmip_client(&pki, &addr, "tenant-a");
    let uid = connect()
        .await
        .create_aes_key(256, None)
        .await
        .expect("create");

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect().await);
    }
    let before = accepted.load(Ordering::SeqCst);
    let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let uid = uid.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                for _ in 0..GETS_PER_CLIENT {
                    client.get(&uid).await.expect("get through the gateway");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    let opened = accepted.load(Ordering::SeqCst);
    // Before: the health checks' connection and the create's, which the burst shares
    // (requests take streams from the pool one at a time); at most one more if that
    // connection went away meanwhile. Never one per concurrent client.
    assert!(
        opened <= before + 1,
        "{CLIENTS} concurrent clients made the gateway open {} connections to keysvc \
         ({before} before they started)",
        opened - before
    );
    assert_eq!(
        gateway.metrics.requests("tenant-a", "Get", "Success"),
        (CLIENTS * GETS_PER_CLIENT) as u64
    );
}
