//! Recycled byte buffers for the request path.
//!
//! Every produce request's records, every encoded response and the records a Fetch reads
//! from a segment need a buffer of up to a few MiB. Allocated fresh each time, such a buffer comes from `mmap` (or
//! from an arena that glibc trims back with `madvise`), so each request page-faults its whole
//! buffer in again: under `strait bench replication` a third of a node's CPU went to those
//! faults. A buffer handed back with [`recycle`] is kept by the thread that recycled it and
//! given out again by [`take`] on that thread, so the pages stay mapped.
//!
//! Bounds: each thread keeps at most [`KEPT_PER_THREAD`] buffers, none larger than
//! [`KEPT_CAPACITY_MAX_BYTES`]; a larger or surplus buffer is simply freed.

use std::cell::RefCell;

use bytes::BytesMut;

/// Buffers kept per thread.
pub const KEPT_PER_THREAD: usize = 4;
/// Largest buffer kept; bigger ones (a rare huge request) go back to the allocator.
pub const KEPT_CAPACITY_MAX_BYTES: usize = 16 * 1024 * 1024;

thread_local! {
    static KEPT: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least `capacity_bytes`: a kept one when this thread has
/// one, else a new one.
pub fn take(capacity_bytes: usize) -> BytesMut {
    let kept = KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        // The smallest buffer that is large enough, so a small response does not tie up a
        // large buffer; else the largest, which grows least.
        let fits = (0..kept.len())
            .filter(|&i| kept[i].capacity() >= capacity_bytes)
            .min_by_key(|&i| kept[i].capacity());
        let chosen = fits.or_else(|| (0..kept.len()).max_by_key(|&i| kept[i].capacity()))?;
        Some(kept.swap_remove(chosen))
    });
    match kept {
        Some(mut buf) => {
            debug_assert!(buf.is_empty(), "kept buffers are cleared");
            buf.reserve(capacity_bytes);
            buf
        }
        None => BytesMut::with_capacity(capacity_bytes),
    }
}

/// Hands `buf` back for reuse on this thread. Only a buffer that owns its whole allocation
/// can be reused in place; callers pass what they allocated with [`take`] once nothing else
/// refers to it.
pub fn recycle(mut buf: BytesMut) {
    if buf.capacity() > KEPT_CAPACITY_MAX_BYTES {
        return;
    }
    buf.clear();
    KEPT.with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEPT_PER_THREAD {
            kept.push(buf);
        } else if let Some(smallest) = (0..kept.len()).min_by_key(|&i| kept[i].capacity()) {
            if kept[smallest].capacity() < buf.capacity() {
                kept[smallest] = buf;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recycled_buffer_comes_back_with_its_memory() {
        let mut buf = take(1 << 20);
        buf.extend_from_slice(&[7u8; 1000]);
        let ptr = buf.as_ptr();
        recycle(buf);
        let again = take(4096);
        assert!(again.is_empty());
        assert!(again.capacity() >= 1 << 20);
        assert_eq!(
            again.as_ptr(),
            ptr,
            "the same allocation is handed out again"
        );
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_handed_out() {
        while KEPT.with(|k| !k.borrow().is_empty()) {
            drop(take(0));
        }
        recycle(BytesMut::with_capacity(4 << 20));
        recycle(BytesMut::with_capacity(64 << 10));
        recycle(BytesMut::with_capacity(1 << 20));
        let small = take(1000);
        assert_eq!(
            small.capacity(),
            64 << 10,
            "a small request takes the small buffer"
        );
        let mid = take(100 << 10);
        assert_eq!(mid.capacity(), 1 << 20, "the smallest that fits");
        let big = take(8 << 20);
        assert!(
            big.capacity() >= 8 << 20,
            "nothing fits: the largest, grown"
        );
    }

    #[test]
    fn kept_buffers_are_bounded_in_number_and_size() {
        // Drain whatever this test thread kept before.
        while KEPT.with(|k| !k.borrow().is_empty()) {
            drop(take(0));
        }
        recycle(BytesMut::with_capacity(KEPT_CAPACITY_MAX_BYTES + 1));
        assert_eq!(KEPT.with(|k| k.borrow().len()), 0, "too large to keep");
        for size in [10, 20, 30, 40, 50, 60] {
            recycle(BytesMut::with_capacity(size * 1024));
        }
        let kept: Vec<usize> = KEPT.with(|k| k.borrow().iter().map(BytesMut::capacity).collect());
        assert_eq!(kept.len(), KEPT_PER_THREAD);
        assert!(
            kept.iter().all(|&c| c >= 30 * 1024),
            "the largest are kept: {kept:?}"
        );
    }
}
