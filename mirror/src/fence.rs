//! Fencing a pump that may have lost its partitions without knowing it.
//!
//! The source cluster's group protocol gives each partition of a flow to one pump at a time,
//! but a pump only learns that it lost a partition when its consumer next talks to the group
//! coordinator. Two things can reach the target after the group moved a partition away:
//!
//! - records already handed to the target producer (librdkafka's queue). The pump's producer
//!   gives up on a record [`PUMP_MESSAGE_TIMEOUT_MS`] after it was queued, and that is shorter
//!   than the time the coordinator needs to give a silent member's partitions away (the
//!   session timeout, counted from its last heartbeat): whatever a frozen or cut-off pump had
//!   queued is delivered or expired before a new owner starts. librdkafka checks the age of
//!   queued records before it builds a request, also on the first pass after the process was
//!   stopped, so a record older than its timeout is never sent.
//! - records the pump hands over after it wakes from a freeze (SIGSTOP, a stalled process) but
//!   before its consumer has heard that the group moved on. [`FreezeWatch`] notices the
//!   stall (a thread that should tick every [`TICK_MS`] did not for [`FREEZE_SUSPECT_MS`]);
//!   the pump then sends nothing more until a synchronous offset commit (which the
//!   coordinator accepts only from a current member of the current generation) proves it
//!   still owns its partitions. If the commit is refused, the pump drops its producer's
//!   queue and starts over as a new member.
//!
//! On an ordinary revocation the pump waits, inside the rebalance callback, until every
//! record it handed to the producer is acknowledged or failed, so the next owner's
//! reconciliation with the target's tail sees all of them.
//!
//! Both clocks involved (librdkafka's and [`FreezeWatch`]'s) are monotonic clocks that keep
//! running while a process is stopped. A virtual machine paused by its hypervisor may stop
//! the guest's monotonic clock too; such a pause is not detected here, and its records may
//! outlive the group's session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long the pump's consumer may go without a heartbeat before the coordinator gives its
/// partitions to another daemon.
pub const SESSION_TIMEOUT_MS: u64 = 10_000;
/// How often the pump's consumer heartbeats.
pub const HEARTBEAT_INTERVAL_MS: u64 = 1_000;
/// How long the pump's producer tries to deliver a record before it fails (and the pump
/// restarts from the index): below the session timeout less one heartbeat interval, so no
/// record queued by a member can arrive after the coordinator expired that member.
pub const PUMP_MESSAGE_TIMEOUT_MS: u64 = 8_000;
const _: () = assert!(PUMP_MESSAGE_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS < SESSION_TIMEOUT_MS);

/// How long a revocation waits for the pump's records to be acknowledged or failed: every
/// queued record's fate is known after its message timeout, and a request on the wire after
/// the producer's request timeout.
pub const REVOKE_DRAIN_TIMEOUT_MS: u64 = 35_000;

/// How often the watch thread ticks.
pub const TICK_MS: u64 = 100;
/// A tick this late means the process (or the machine) stalled: the pump confirms that it
/// is still a member before it sends anything more. Well below the session timeout, far
/// above scheduling noise.
pub const FREEZE_SUSPECT_MS: u64 = 2_000;
const _: () = assert!(FREEZE_SUSPECT_MS + HEARTBEAT_INTERVAL_MS < SESSION_TIMEOUT_MS);

/// Notices that the process stopped running for a while.
pub struct FreezeWatch {
    started: Instant,
    /// Milliseconds since `started` at the last tick.
    last_tick_ms: AtomicU64,
    /// Stalls seen by the thread.
    freezes: AtomicU64,
}

impl FreezeWatch {
    /// Starts the watch thread; it ends when the last handle is dropped.
    pub fn start() -> Arc<FreezeWatch> {
        let watch = Arc::new(FreezeWatch {
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            freezes: AtomicU64::new(0),
        });
        let weak: Weak<FreezeWatch> = Arc::downgrade(&watch);
        let spawned = std::thread::Builder::new()
            .name("strait-freeze-watch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(TICK_MS));
                let Some(watch) = weak.upgrade() else { return };
                watch.tick();
            });
        if let Err(e) = spawned {
            // Without the thread every check sees a stale tick and confirms membership:
            // slower, never unsafe.
            tracing::warn!(error = %e, "cannot start the freeze watch thread; the pump confirms its membership before every send");
        }
        watch
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tick(&self) {
        let now = self.now_ms();
        let last = self.last_tick_ms.load(Ordering::SeqCst);
        if now.saturating_sub(last) > FREEZE_SUSPECT_MS {
            tracing::warn!(
                stalled_ms = now - last,
                "the process did not run for a while; the pump confirms its membership before it sends again"
            );
            // Counted before the tick moves, so a reader that sees the new tick sees the
            // freeze too.
            self.freezes.fetch_add(1, Ordering::SeqCst);
        }
        self.last_tick_ms.store(now, Ordering::SeqCst);
    }

    /// `None` if nothing stalled since the caller confirmed at `confirmed`; else the value
    /// to pass next time once membership is confirmed again.
    pub fn suspect(&self, confirmed: u64) -> Option<u64> {
        let last = self.last_tick_ms.load(Ordering::SeqCst);
        let freezes = self.freezes.load(Ordering::SeqCst);
        let stale = self.now_ms().saturating_sub(last) > FREEZE_SUSPECT_MS;
        if stale {
            // The thread has not run since the stall: it will count it; confirming now
            // covers it, and its count makes the next check confirm once more.
            Some(freezes)
        } else if freezes != confirmed {
            Some(freezes)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A watch without its thread, whose clock started `ago_ms` in the past.
    fn unstarted(ago_ms: u64) -> FreezeWatch {
        FreezeWatch {
            started: Instant::now() - Duration::from_millis(ago_ms),
            last_tick_ms: AtomicU64::new(ago_ms),
            freezes: AtomicU64::new(0),
        }
    }

    #[test]
    fn a_running_process_is_not_suspect_and_a_stall_is_until_confirmed() {
        let watch = unstarted(10_000);
        watch.tick();
        assert_eq!(watch.suspect(0), None, "ticking normally");
        // The process stalls: the last tick falls behind the clock.
        watch
            .last_tick_ms
            .store(10_000 - FREEZE_SUSPECT_MS - 500, Ordering::SeqCst);
        let confirmed = watch
            .suspect(0)
            .expect("a stale tick is suspect before the thread counts it");
        assert_eq!(confirmed, 0);
        // The thread wakes and counts the stall: whoever confirmed before that confirms once
        // more, then is trusted.
        watch.tick();
        assert_eq!(watch.freezes.load(Ordering::SeqCst), 1);
        let again = watch.suspect(confirmed).expect("the counted stall");
        assert_eq!(again, 1);
        assert_eq!(watch.suspect(again), None);
        // A tick on time is not a stall.
        watch.tick();
        assert_eq!(watch.freezes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_thread_keeps_a_running_process_trusted() {
        let watch = FreezeWatch::start();
        std::thread::sleep(Duration::from_millis(5 * TICK_MS));
        assert_eq!(watch.suspect(0), None);
    }

    #[test]
    fn the_thread_ends_with_the_last_handle() {
        let watch = FreezeWatch::start();
        let weak = Arc::downgrade(&watch);
        drop(watch);
        std::thread::sleep(Duration::from_millis(3 * TICK_MS));
        assert!(weak.upgrade().is_none());
    }
}
