//! The phases of a run: connect, set up keys (create + activate, or `--uid`; key pairs for
//! Sign), warm each key with its requests, then load (closed or open loop) with a progress
//! line each second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kmip::message::payloads::IdRequest;
use kmip::message::{
    ByteString, RequestMessage, RequestPayload, ResponseMessage, ResponsePayload, UniqueIdentifier,
};
use kmip::spec::{ObjectType, ResultStatus, ValidityIndicator};
use kmip::Limits;

use crate::config::{Config, Rate};
use crate::report::Report;
use crate::schedule::{self, Schedule};
use crate::stats::Recorder;
use crate::transport::{Connection, Dialer, TransportError};
use crate::workload::{self, Op, PairKind, PreparedKey, Requests};

/// TLS handshakes in flight at once while connecting: enough to open 10,000 connections in
/// seconds, few enough not to overflow the server's accept backlog (often 128–4096).
const CONNECT_CONCURRENCY: usize = 128;
/// Connections the set-up phase uses (key creation is a one-off; more would only contend).
const SETUP_CONNECTIONS: usize = 32;
/// Pause after a failed reconnect, so a dead server costs a few attempts per second per
/// connection rather than a busy loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Open loop: how long after the end due requests may still be sent (then they count as
/// not sent).
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// Open loop: a request that could not be sent within this of its due time is abandoned
/// (counted as an error), as a client would give up. Without it an overloaded run spends
/// its measured time sending requests that fell due long before (during the warm-up),
/// and its throughput reads as a collapse instead of the server's capacity.
const MAX_SEND_LAG: Duration = Duration::from_secs(1);

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("set-up: {0}")]
    Setup(String),
    #[error("no connection could be opened: {0}")]
    NoConnection(TransportError),
}

/// One typed request/response outside the measured loop (set-up and warm-up).
async fn call(
    conn: &mut Connection,
    config: &Config,
    payload: RequestPayload,
) -> Result<ResponsePayload, RunError> {
    let op = payload.operation();
    let request = bytes::Bytes::from(RequestMessage::new(config.version, vec![payload]).to_ttlv());
    let answer = tokio::time::timeout(config.timeout, conn.exchange(&request))
        .await
        .map_err(|_| TransportError::Timeout)??;
    let response = ResponseMessage::from_ttlv(answer, &Limits::default())
        .map_err(|e| RunError::Setup(format!("{op:?}: malformed response: {e}")))?;
    let item = response
        .batch_items
        .into_iter()
        .next()
        .ok_or_else(|| RunError::Setup(format!("{op:?}: response without batch item")))?;
    if item.result_status != ResultStatus::Success {
        return Err(RunError::Setup(format!(
            "{op:?} failed: {}: {}",
            item.result_reason.map_or("no reason", |r| r.name()),
            item.result_message.unwrap_or_default()
        )));
    }
    match item.payload {
        Some(Ok(p)) => Ok(p),
        _ => Err(RunError::Setup(format!("{op:?}: response without payload"))),
    }
}

fn text_uid(what: &str, uid: UniqueIdentifier) -> Result<String, RunError> {
    match uid {
        UniqueIdentifier::Text(t) => Ok(t),
        other => Err(RunError::Setup(format!("{what}: identifier {other:?}"))),
    }
}

async fn activate(conn: &mut Connection, config: &Config, uid: &str) -> Result<(), RunError> {
    call(
        conn,
        config,
        RequestPayload::Activate(IdRequest {
            unique_identifier: Some(UniqueIdentifier::from(uid)),
        }),
    )
    .await
    .map(drop)
}

/// Sends an encoded request twice before measuring, each answered with Success.
async fn warm(
    conn: &mut Connection,
    config: &Config,
    request: &bytes::Bytes,
    what: &str,
) -> Result<(), RunError> {
    for _ in 0..2 {
        let answer = tokio::time::timeout(config.timeout, conn.exchange(request))
            .await
            .map_err(|_| TransportError::Timeout)??;
        let outcome =
            workload::scan_response(answer).map_err(|e| RunError::Setup(e.to_string()))?;
        if !outcome.is_success() {
            return Err(RunError::Setup(format!(
                "warm-up {what}: {}",
                outcome.describe()
            )));
        }
    }
    Ok(())
}

/// For Sign: creates a key pair and activates both keys (unless a private key is given),
/// signs [`workload::PLAINTEXT`] once and checks the signature with Signature Verify (a
/// sample of the server's signatures, outside the measured loop), then warms the private
/// key with the measured request itself, twice.
async fn prepare_pair(
    conn: &mut Connection,
    config: &Config,
    kind: PairKind,
    uid: Option<&str>,
) -> Result<PreparedKey, RunError> {
    let (private, public) = match uid {
        Some(u) => (u.to_owned(), None),
        None => {
            let created = call(conn, config, workload::create_key_pair_payload(kind)).await?;
            let ResponsePayload::CreateKeyPair(created) = created else {
                return Err(RunError::Setup(
                    "Create Key Pair: unexpected payload".into(),
                ));
            };
            let private = text_uid("Create Key Pair", created.private_key_unique_identifier)?;
            let public = text_uid("Create Key Pair", created.public_key_unique_identifier)?;
            activate(conn, config, &private).await?;
            activate(conn, config, &public).await?;
            (private, Some(public))
        }
    };
    if let Some(public) = public {
        let signed = call(conn, config, workload::sign_payload(&private)).await?;
        let ResponsePayload::Sign(signed) = signed else {
            return Err(RunError::Setup("Sign: unexpected payload".into()));
        };
        let signature = signed
            .signature_data
            .ok_or_else(|| RunError::Setup("Sign: no Signature Data".into()))?;
        let verified = call(
            conn,
            config,
            workload::signature_verify_payload(&public, &signature),
        )
        .await?;
        let ResponsePayload::SignatureVerify(verified) = verified else {
            return Err(RunError::Setup(
                "Signature Verify: unexpected payload".into(),
            ));
        };
        if verified.validity_indicator != Some(ValidityIndicator::Valid) {
            return Err(RunError::Setup(format!(
                "Signature Verify of {private}'s signature with {public}: {:?}",
                verified.validity_indicator
            )));
        }
    }
    let sign = workload::sign_request(config.version, &private);
    warm(conn, config, &sign, &format!("Sign with {private}")).await?;
    Ok(PreparedKey {
        uid: private,
        ciphertext: None,
    })
}

/// Creates + activates (unless given), encrypts once (for Decrypt) and warms one key.
async fn prepare_key(
    conn: &mut Connection,
    config: &Config,
    uid: Option<&str>,
) -> Result<PreparedKey, RunError> {
    if let (Some(kind), true) = (config.op.pair(), config.op.is_sign()) {
        return prepare_pair(conn, config, kind, uid).await;
    }
    let uid = match uid {
        Some(u) => u.to_owned(),
        None => {
            let created = call(
                conn,
                config,
                RequestPayload::Create(kmip::message::payloads::CreateRequest {
                    object_type: ObjectType::SymmetricKey,
                    attributes: Some(workload::aes_256_attributes()),
                    protection_storage_masks: None,
                }),
            )
            .await?;
            let ResponsePayload::Create(created) = created else {
                return Err(RunError::Setup("Create: unexpected payload".into()));
            };
            let uid = text_uid("Create", created.unique_identifier)?;
            activate(conn, config, &uid).await?;
            uid
        }
    };
    let ciphertext = if config.op.needs_ciphertexts() {
        let encrypted = call(
            conn,
            config,
            RequestPayload::Encrypt(kmip::message::payloads::EncryptRequest {
                unique_identifier: Some(UniqueIdentifier::from(uid.as_str())),
                cryptographic_parameters: Some(workload::cbc_parameters()),
                data: Some(ByteString::from(&workload::PLAINTEXT[..])),
                iv_counter_nonce: Some(ByteString::from(&workload::IV[..])),
                correlation_value: None,
                init_indicator: None,
                final_indicator: None,
                authenticated_encryption_additional_data: None,
            }),
        )
        .await?;
        match encrypted {
            ResponsePayload::Encrypt(r) => Some(
                r.data
                    .ok_or_else(|| RunError::Setup("Encrypt: no data".into()))?
                    .0
                    .to_vec(),
            ),
            _ => return Err(RunError::Setup("Encrypt: unexpected payload".into())),
        }
    } else {
        None
    };
    // The first Get of an object may write (e.g. a server-maintained attribute such as
    // Fresh), which drops it from a server's cache; the second finds the object unchanged
    // and leaves it cached. Both before measuring: otherwise every connection misses every
    // key at once at the start (connections walk the keys in the same order).
    let get = workload::get_request(config.version, &uid);
    warm(conn, config, &get, &format!("Get of {uid}")).await?;
    Ok(PreparedKey { uid, ciphertext })
}

/// Opens `n` connections, [`CONNECT_CONCURRENCY`] handshakes at a time; returns those that
/// opened and the first failure.
async fn connect_all(
    dialer: &Dialer,
    n: usize,
    recorder: &Recorder,
) -> (Vec<Connection>, Option<TransportError>) {
    let mut opened = Vec::with_capacity(n);
    let mut first_error = None;
    let mut attempts = futures::stream::iter(0..n)
        .map(|_| dialer.connect())
        .buffer_unordered(CONNECT_CONCURRENCY);
    while let Some(result) = attempts.next().await {
        match result {
            Ok(c) => {
                recorder.connected.fetch_add(1, Ordering::Relaxed);
                opened.push(c);
            }
            Err(e) => {
                recorder.failed(0, e.label());
                first_error.get_or_insert(e);
            }
        }
    }
    (opened, first_error)
}

async fn setup_keys(config: &Config, dialer: &Dialer) -> Result<Vec<PreparedKey>, RunError> {
    if !config.op.needs_keys() {
        return Ok(Vec::new());
    }
    let count = config.keys as usize;
    let workers = count
        .min(SETUP_CONNECTIONS)
        .min(config.connections as usize);
    let given: Arc<Vec<String>> = Arc::new(config.uids.clone());
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (config, dialer, given, next) =
            (config.clone(), dialer.clone(), given.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = dialer.connect().await?;
            let mut keys = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= count {
                    return Ok::<_, RunError>(keys);
                }
                let uid = given.get(i).map(String::as_str);
                keys.push((i, prepare_key(&mut conn, &config, uid).await?));
            }
        }));
    }
    let mut keys = Vec::with_capacity(count);
    for t in tasks {
        let part = t
            .await
            .map_err(|e| RunError::Setup(format!("set-up task: {e}")))??;
        keys.extend(part);
    }
    keys.sort_by_key(|(i, _)| *i);
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

/// What every load task shares.
struct Shared {
    config: Config,
    dialer: Dialer,
    requests: Arc<Requests>,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    /// Requests started so far (for `--requests`).
    issued: AtomicU64,
    measure_from: Instant,
    end: Instant,
}

impl Shared {
    fn may_issue(&self) -> bool {
        match self.config.requests {
            None => true,
            Some(limit) => self.issued.fetch_add(1, Ordering::Relaxed) < limit,
        }
    }
}

/// One request on `conn`; `due` is when it was due (open loop) or `None` (closed loop:
/// measured from the send). Returns false if the connection had to be dropped.
async fn one_request(
    shared: &Shared,
    index: usize,
    n: u64,
    conn: &mut Option<Connection>,
    due: Option<Instant>,
) {
    let Some(c) = conn.as_mut() else {
        // The previous exchange broke the connection: reconnect (bounded by the end).
        match shared.dialer.connect().await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                shared.recorder.failed(index, e.label());
                shared.recorder.count_failed();
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
        return;
    };
    // Connections start evenly spread over the keys: walking them side by side would have
    // every connection ask for the same key at the same moment (all missing a cold cache
    // together, or all contending for one object).
    let stride =
        (shared.requests.keys() as u64 / u64::from(shared.config.connections.max(1))).max(1);
    let (op, request) = shared.requests.nth(n, index as u64 * stride);
    let sent = Instant::now();
    let started = due.unwrap_or(sent);
    let measured = started >= shared.measure_from;
    let result = tokio::time::timeout(shared.config.timeout, c.exchange(request)).await;
    let done = Instant::now();
    let counted = measured && (due.is_some() || done <= shared.end);
    match result {
        Ok(Ok(answer)) => {
            shared.recorder.count_answered();
            match workload::scan_response(answer) {
                Ok(outcome) if counted => {
                    let failure = (!outcome.is_success()).then(|| outcome.describe());
                    shared.recorder.answered(
                        index,
                        op.slot(),
                        done - started,
                        due.map(|d| sent.saturating_duration_since(d)),
                        failure,
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    if counted {
                        shared.recorder.failed(index, &format!("transport: {e}"));
                    }
                    *conn = None;
                }
            }
        }
        Ok(Err(e)) => {
            shared.recorder.count_failed();
            if counted {
                shared.recorder.failed(index, e.label());
            }
            *conn = None;
        }
        Err(_) => {
            shared.recorder.count_failed();
            if counted {
                shared
                    .recorder
                    .failed(index, TransportError::Timeout.label());
            }
            *conn = None;
        }
    }
}

async fn closed_loop(shared: Arc<Shared>, index: usize, conn: Connection) {
    let mut conn = Some(conn);
    let mut n = 0u64;
    while Instant::now() < shared.end && !shared.stop.load(Ordering::Relaxed) && shared.may_issue()
    {
        one_request(&shared, index, n, &mut conn, None).await;
        n += 1;
    }
}

async fn open_loop(
    shared: Arc<Shared>,
    index: usize,
    conn: Connection,
    queue: async_channel::Receiver<Instant>,
) {
    let mut conn = Some(conn);
    let mut n = 0u64;
    let drain_until = shared.end + DRAIN_GRACE;
    while let Ok(due) = queue.recv().await {
        if Instant::now() > drain_until || shared.stop.load(Ordering::Relaxed) {
            // Put nothing back: the caller counts what is left in the queue.
            shared.recorder.failed(index, NOT_SENT_AT_END);
            break;
        }
        if due.elapsed() > MAX_SEND_LAG {
            if due >= shared.measure_from {
                shared.recorder.failed(index, NOT_SENT_LATE);
            }
            continue;
        }
        one_request(&shared, index, n, &mut conn, Some(due)).await;
        n += 1;
    }
}

const NOT_SENT_AT_END: &str = "not sent: all connections busy until the end";
const NOT_SENT_BACKLOG: &str = "not sent: backlog full";
const NOT_SENT_LATE: &str = "not sent: more than 1 s behind schedule";

/// Prints a progress line to stderr each second until `done` is set.
async fn progress(
    recorder: Arc<Recorder>,
    started: Instant,
    measure_from: Instant,
    done: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0u64;
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        let answered = recorder.answered.load(Ordering::Relaxed);
        let failed = recorder.failed.load(Ordering::Relaxed);
        let phase = if Instant::now() < measure_from {
            "  (warm-up)"
        } else {
            ""
        };
        eprintln!(
            "loadtest {:>4.0}s  ops/s {:>8}  answered {:>10}  failed {:>6}  connections {}{phase}",
            started.elapsed().as_secs_f64(),
            answered - last,
            answered,
            failed,
            recorder.connected.load(Ordering::Relaxed),
        );
        last = answered;
    }
}

/// The whole run.
pub async fn run(config: Config) -> Result<Report, RunError> {
    let setup_started = Instant::now();
    let dialer = Dialer::new(&config)?;
    let recorder = Arc::new(Recorder::default());
    let keys = setup_keys(&config, &dialer).await?;
    let requests = Requests::new(config.op, config.version, &keys);
    drop(keys);

    let (connections, first_error) =
        connect_all(&dialer, config.connections as usize, &recorder).await;
    if connections.is_empty() {
        return Err(RunError::NoConnection(
            first_error.unwrap_or(TransportError::Closed),
        ));
    }
    if let Some(e) = &first_error {
        eprintln!(
            "loadtest: {} of {} connections opened; first failure: {e}",
            connections.len(),
            config.connections
        );
    }
    let setup = setup_started.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let measure_from = started + config.warmup;
    let end = measure_from + config.duration;
    let done = Arc::new(AtomicBool::new(false));
    let progress = (!config.quiet).then(|| {
        tokio::spawn(progress(
            recorder.clone(),
            started,
            measure_from,
            done.clone(),
        ))
    });

    let held = connections.len() as u64;
    let mut summary = schedule::DispatchSummary::default();
    let mut left_in_queue = 0;
    if config.op == Op::Idle {
        // Scripts wait for this line before measuring the server's memory.
        eprintln!("loadtest: holding {held} connections");
        let wait = tokio::time::sleep_until(end.into());
        tokio::pin!(wait);
        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                _ = &mut wait => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        drop(connections);
    } else {
        let shared = Arc::new(Shared {
            config: config.clone(),
            dialer: dialer.clone(),
            requests,
            recorder: recorder.clone(),
            stop: stop.clone(),
            issued: AtomicU64::new(0),
            measure_from,
            end,
        });
        let mut tasks = Vec::with_capacity(connections.len());
        match config.rate {
            Rate::Max => {
                for (i, c) in connections.into_iter().enumerate() {
                    tasks.push(tokio::spawn(closed_loop(shared.clone(), i, c)));
                }
                for t in tasks {
                    let _ = t.await;
                }
            }
            Rate::PerSecond(rate) => {
                let schedule = Schedule {
                    start: started,
                    rate,
                };
                let (tx, rx) = async_channel::bounded(schedule.backlog_capacity());
                for (i, c) in connections.into_iter().enumerate() {
                    tasks.push(tokio::spawn(open_loop(shared.clone(), i, c, rx.clone())));
                }
                let limit = config.requests;
                let dispatch_stop = stop.clone();
                let dispatcher = std::thread::Builder::new()
                    .name("loadtest-dispatch".into())
                    .spawn(move || schedule::dispatch(schedule, end, limit, tx, dispatch_stop))
                    .map_err(|e| RunError::Setup(format!("dispatcher thread: {e}")))?;
                for t in tasks {
                    let _ = t.await;
                }
                summary = tokio::task::spawn_blocking(move || dispatcher.join())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                left_in_queue = rx.len() as u64;
            }
        }
    }
    let finished = Instant::now();
    done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
    }
    ctrl_c.abort();

    let mut merged = recorder.merged();
    if summary.overflowed > 0 {
        *merged.errors.entry(NOT_SENT_BACKLOG.into()).or_default() += summary.overflowed;
    }
    if left_in_queue > 0 {
        *merged.errors.entry(NOT_SENT_AT_END.into()).or_default() += left_in_queue;
    }
    // A run cut short (Ctrl-C, --requests) is measured to when it stopped.
    let measured = if config.rate == Rate::Max {
        finished.min(end).saturating_duration_since(measure_from)
    } else if stop.load(Ordering::Relaxed) {
        finished.saturating_duration_since(measure_from)
    } else {
        match config.requests {
            Some(n) => Schedule {
                start: started,
                rate: rate_of(&config),
            }
            .offset(n)
            .min(config.duration + config.warmup)
            .saturating_sub(config.warmup),
            None => config.duration,
        }
    };
    Ok(Report::new(&config, &merged, measured, setup, held))
}

fn rate_of(config: &Config) -> u32 {
    match config.rate {
        Rate::PerSecond(r) => r,
        Rate::Max => 1,
    }
}
