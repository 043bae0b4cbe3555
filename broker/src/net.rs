//! What both listeners (Kafka and controller) need to stay up under hostile or broken peers:
//! a per-address connection cap and a rate limit on the warnings peers can cause.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counts open connections per peer address and refuses one past the cap.
#[derive(Debug, Default)]
pub struct PerIpSlots {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIpSlots`], given back on drop.
#[derive(Debug)]
pub struct IpSlot {
    slots: Arc<PerIpSlots>,
    ip: IpAddr,
}

impl PerIpSlots {
    /// Takes a slot for `ip` unless it already holds `cap_per_ip`.
    pub fn take(slots: &Arc<PerIpSlots>, ip: IpAddr, cap_per_ip: usize) -> Option<IpSlot> {
        let mut open = slots.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= cap_per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            slots: slots.clone(),
            ip,
        })
    }

    /// Open connections from `ip`.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // The map holds only addresses with open connections, so a scan of many
                // addresses does not grow it for good.
                open.remove(&self.ip);
            }
        }
    }
}

/// Lets at most `burst` warnings through per `window`; the rest are counted, and the next
/// warning let through says how many were held back. Peers decide how often a listener has
/// something to complain about, so without this a flood of bad frames is a flood of log lines.
#[derive(Debug)]
pub struct LogLimiter {
    burst: u32,
    window: Duration,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    window_start: Instant,
    let_through: u32,
    held_back: u64,
}

impl LogLimiter {
    /// At most `burst` warnings per `window`.
    pub fn new(burst: u32, window: Duration) -> LogLimiter {
        LogLimiter {
            burst,
            window,
            state: Mutex::new(LimiterState {
                window_start: Instant::now(),
                let_through: 0,
                held_back: 0,
            }),
        }
    }

    /// `Some(n)` if this warning may be logged, `n` being how many were held back since the
    /// last one that was; `None` if it is to be held back (and counted).
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(s.window_start) >= self.window {
            s.window_start = now;
            s.let_through = 0;
        }
        if s.let_through < self.burst {
            s.let_through += 1;
            Some(std::mem::take(&mut s.held_back))
        } else {
            s.held_back += 1;
            None
        }
    }
}

/// Ten warnings per ten seconds: enough to see what is happening, few enough that no peer can
/// fill a disk with them.
pub fn default_log_limiter() -> LogLimiter {
    LogLimiter::new(10, Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_each_address_and_come_back_on_drop() {
        let slots = Arc::new(PerIpSlots::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = PerIpSlots::take(&slots, a, 2).unwrap();
        let second = PerIpSlots::take(&slots, a, 2).unwrap();
        assert!(PerIpSlots::take(&slots, a, 2).is_none());
        assert!(
            PerIpSlots::take(&slots, b, 2).is_some(),
            "other addresses unaffected"
        );
        drop(first);
        assert_eq!(slots.open_from(a), 1);
        let _third = PerIpSlots::take(&slots, a, 2).unwrap();
        drop(second);
        assert_eq!(slots.open_from(a), 1);
    }

    #[test]
    fn the_limiter_lets_a_burst_through_then_counts() {
        let limiter = LogLimiter::new(3, Duration::from_millis(200));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), Some(0));
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(limiter.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(
            limiter.allow(),
            Some(5),
            "the first one after says what was held back"
        );
        assert_eq!(limiter.allow(), Some(0));
    }
}
