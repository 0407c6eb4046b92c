//! Open loop: requests fall due on a fixed schedule whatever the server does, and each one's
//! latency is measured from when it was due, not from when a connection got round to
//! sending it, so a server that stalls is charged for the queue it causes (no coordinated
//! omission).
//!
//! ```text
//!  dispatcher thread ──due times──► bounded queue ──► idle connection takes the next one
//!  (sleeps until the next due       (≤ 1 s of backlog;   sends it, records
//!   time, releases all due)          full = counted error) answer − due time
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The i-th request of a run at `rate`/s is due at `start + i / rate`, computed from the
/// index (no accumulated rounding drift over long runs).
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub start: Instant,
    pub rate: u32,
}

impl Schedule {
    /// Offset of request `i` from the start.
    pub fn offset(&self, i: u64) -> Duration {
        let nanos = u128::from(i) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(nanos as u64)
    }

    pub fn due(&self, i: u64) -> Instant {
        self.start + self.offset(i)
    }

    /// How many requests are due `elapsed` after the start (request 0 is due at once).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        (elapsed.as_nanos() * u128::from(self.rate) / 1_000_000_000) as u64 + 1
    }

    /// Requests due in `[0, length)`.
    pub fn count_within(&self, length: Duration) -> u64 {
        let n = length.as_nanos() * u128::from(self.rate);
        n.div_ceil(1_000_000_000) as u64
    }

    /// The queue bound: one second of requests at this rate (a request waiting longer than
    /// that has already failed any latency goal), at least [`MIN_BACKLOG`].
    pub fn backlog_capacity(&self) -> usize {
        (self.rate as usize).max(MIN_BACKLOG)
    }
}

/// Backlog floor for low rates, so that a brief stall does not drop requests.
pub const MIN_BACKLOG: usize = 1024;

/// The dispatcher sleeps at least this long between releases: above 10,000 requests/s it
/// releases small batches (each request then goes out at most this late, which the send
/// lag shows) so that its own wake-ups do not take a core from the server it measures.
pub const MIN_TICK: Duration = Duration::from_micros(100);

/// What the dispatcher did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DispatchSummary {
    pub released: u64,
    /// Due requests that found the queue full (the server is too slow for the rate).
    pub overflowed: u64,
}

/// Releases due times into `queue` from a plain thread: `thread::sleep` wakes within tens
/// of microseconds where the runtime's timer wheel has a 1 ms tick, which would add up to a
/// millisecond to every measured latency. Stops at `end`, after `limit` requests, or when
/// `stop` is set; dropping the sender then closes the queue.
pub fn dispatch(
    schedule: Schedule,
    end: Instant,
    limit: Option<u64>,
    queue: async_channel::Sender<Instant>,
    stop: Arc<AtomicBool>,
) -> DispatchSummary {
    let mut summary = DispatchSummary::default();
    let mut next = 0u64;
    let limit = limit.unwrap_or(u64::MAX);
    loop {
        if stop.load(Ordering::Relaxed) || next >= limit {
            break;
        }
        let now = Instant::now().min(end);
        let due = schedule.due_by(now - schedule.start).min(limit);
        while next < due {
            let at = schedule.due(next);
            if at >= end {
                break;
            }
            match queue.try_send(at) {
                Ok(()) => summary.released += 1,
                Err(async_channel::TrySendError::Full(_)) => summary.overflowed += 1,
                Err(async_channel::TrySendError::Closed(_)) => return summary,
            }
            next += 1;
        }
        let next_due = schedule.due(next);
        if next_due >= end {
            break;
        }
        let now = Instant::now();
        let wake = next_due.max(now + MIN_TICK).min(end);
        if wake > now {
            std::thread::sleep(wake - now);
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rate: u32) -> Schedule {
        Schedule {
            start: Instant::now(),
            rate,
        }
    }

    #[test]
    fn due_times_are_evenly_spaced_without_drift() {
        let s = at(10_000);
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_micros(100));
        assert_eq!(s.offset(10_000), Duration::from_secs(1));
        // An hour in, still exact (a running sum of 1/3 s steps would drift).
        let t = at(3);
        assert_eq!(t.offset(3 * 3600), Duration::from_secs(3600));
        assert_eq!(t.offset(1), Duration::from_nanos(333_333_333));
    }

    #[test]
    fn due_by_counts_requests_including_the_first() {
        let s = at(1000);
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_by(Duration::from_micros(999)), 1);
        assert_eq!(s.due_by(Duration::from_millis(1)), 2);
        assert_eq!(s.due_by(Duration::from_secs(1)), 1001);
        // due_by and due agree: request n-1 is due by then, request n is not.
        for ms in [0u64, 1, 7, 999, 12_345] {
            let e = Duration::from_millis(ms);
            let n = s.due_by(e);
            assert!(s.offset(n - 1) <= e && s.offset(n) > e, "{ms} ms");
        }
        assert_eq!(s.count_within(Duration::from_secs(60)), 60_000);
        assert_eq!(at(10_000).count_within(Duration::from_secs(60)), 600_000);
        assert_eq!(at(3).count_within(Duration::from_millis(1001)), 4);
    }

    #[test]
    fn backlog_is_one_second_of_requests() {
        assert_eq!(at(10_000).backlog_capacity(), 10_000);
        assert_eq!(at(5).backlog_capacity(), MIN_BACKLOG);
    }

    #[test]
    fn dispatcher_releases_the_schedule_and_counts_overflow() {
        let start = Instant::now();
        let schedule = Schedule { start, rate: 2000 };
        let (tx, rx) = async_channel::bounded(10_000);
        let stop = Arc::new(AtomicBool::new(false));
        let end = start + Duration::from_millis(100);
        let summary = dispatch(schedule, end, None, tx, stop);
        assert_eq!(summary.overflowed, 0);
        assert_eq!(summary.released, 200);
        let mut previous = None;
        for i in 0..200u64 {
            let due = rx.try_recv().expect("released");
            assert_eq!(due, schedule.due(i));
            assert!(previous < Some(due));
            previous = Some(due);
        }
        assert!(rx.try_recv().is_err());

        // Nobody takes from a queue of 10: the rest overflow.
        let schedule = Schedule {
            start: Instant::now(),
            rate: 2000,
        };
        let (tx, _rx) = async_channel::bounded(10);
        let end = schedule.start + Duration::from_millis(50);
        let summary = dispatch(
            schedule,
            end,
            Some(60),
            tx,
            Arc::new(AtomicBool::new(false)),
        );
        assert_eq!(summary.released, 10);
        assert_eq!(summary.overflowed, 50);
    }
}
