//! Runs a connection's HTTP/2 streams inside the connection's own task.
//!
//! hyper hands each request stream to an executor. With `tokio::spawn` every stream was a
//! task of its own: it woke the connection task when its answer was ready, and tokio runs a
//! task woken that way next, so the connection flushed after every single answer — one
//! TLS record and one `writev` per request even when the gateway had sent dozens in one
//! read — and each spawn woke the other worker thread to steal it.
//!
//! [`ConnectionStreams`] is the executor instead: spawned streams are collected and polled
//! by [`ConnectionStreams::drive`] in the same task as the connection, which then flushes
//! every answer they produced in one write. Connections still run in parallel on the
//! runtime's workers; the streams of one connection share its thread, which costs nothing
//! here (a KMIP operation is microseconds of CPU; database waits are asynchronous).

use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor of one connection (cheap to clone: hyper keeps a copy).
#[derive(Clone, Default)]
pub struct ConnectionStreams {
    spawned: Arc<Mutex<Vec<StreamFuture>>>,
}

impl<F> hyper::rt::Executor<F> for ConnectionStreams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // A panic in one stream must cost that request only, as it did as a task of its own.
        let stream = AssertUnwindSafe(stream).catch_unwind().map(|outcome| {
            if outcome.is_err() {
                tracing::error!("an HTTP/2 stream panicked; its request got no answer");
            }
        });
        self.spawned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Box::pin(stream));
    }
}

impl ConnectionStreams {
    /// Polls `connection` and the streams it spawned until the connection has ended and
    /// its last stream has finished; returns the connection's outcome.
    pub async fn drive<C: Future>(&self, connection: C) -> C::Output {
        let mut connection = pin!(connection);
        let mut outcome = None;
        let mut streams = FuturesUnordered::new();
        poll_fn(|cx| {
            // Pass 1 reads requests and runs their streams; pass 2 lets the connection
            // flush the answers those streams queued, all in one write.
            for _ in 0..2 {
                if outcome.is_none() {
                    if let Poll::Ready(out) = connection.as_mut().poll(cx) {
                        outcome = Some(out);
                    }
                }
                streams.extend(
                    self.spawned
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .drain(..),
                );
                let mut finished = false;
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {
                    finished = true;
                }
                if !finished || outcome.is_some() {
                    break;
                }
            }
            match outcome.take() {
                // Streams still running after the connection ended (it was torn down) are
                // finished, not dropped: a store write in progress completes.
                Some(out) if streams.is_empty() => Poll::Ready(out),
                kept => {
                    outcome = kept;
                    Poll::Pending
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Waker;

    use hyper::rt::Executor;

    use super::*;

    /// Stands in for an HTTP/2 connection: its first poll "reads" `requests` streams and
    /// spawns them; each stream queues its answer and wakes the connection; every later
    /// poll "flushes" the queued answers as one write, recording how many it carried.
    struct FakeConnection {
        exec: ConnectionStreams,
        requests: usize,
        queued: Arc<Mutex<(usize, Option<Waker>)>>,
        writes: Vec<usize>,
        answered: usize,
    }

    impl Future for FakeConnection {
        type Output = Vec<usize>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Vec<usize>> {
            let this = &mut *self;
            let mut queued = this.queued.lock().unwrap();
            queued.1 = Some(cx.waker().clone());
            if this.requests > 0 {
                for _ in 0..std::mem::take(&mut this.requests) {
                    let queued = this.queued.clone();
                    this.exec.execute(async move {
                        let mut q = queued.lock().unwrap();
                        q.0 += 1;
                        if let Some(waker) = q.1.take() {
                            waker.wake();
                        }
                    });
                }
            }
            if queued.0 > 0 {
                this.writes.push(queued.0);
                this.answered += queued.0;
                queued.0 = 0;
            }
            if this.answered == 32 {
                Poll::Ready(std::mem::take(&mut this.writes))
            } else {
                Poll::Pending
            }
        }
    }

    // Multi-threaded like keysvc's runtime: a stream spawned as a task of its own was run on
    // the other worker or woke the connection after each answer (one write each).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_of_one_read_leave_in_one_write() {
        let exec = ConnectionStreams::default();
        let connection = FakeConnection {
            exec: exec.clone(),
            requests: 32,
            queued: Arc::default(),
            writes: Vec::new(),
            answered: 0,
        };
        let writes = exec.drive(connection).await;
        assert_eq!(writes, vec![32], "32 answers ready together, one write");
    }

    #[tokio::test]
    async fn streams_outlive_the_connection_and_a_panic_costs_one_stream() {
        let exec = ConnectionStreams::default();
        let finished = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let connection = {
            let exec = exec.clone();
            let finished = finished.clone();
            async move {
                exec.execute(async { panic!("a handler bug") });
                exec.execute(async move {
                    released.await.expect("released");
                    finished.fetch_add(1, Ordering::SeqCst);
                });
                "connection closed"
            }
        };
        let driven = tokio::spawn(async move { exec.drive(connection).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!driven.is_finished(), "a stream is still running");
        release.send(()).expect("stream waiting");
        let outcome = driven.await.expect("no panic escapes drive");
        assert_eq!(outcome, "connection closed");
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }
}
