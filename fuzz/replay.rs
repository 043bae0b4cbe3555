//! Replays the fuzz corpus in the normal test suite, under a counting allocator.
//!
//! Included with `#[path]` by `broker/tests/fuzz_corpus.rs` and `mirror/tests/fuzz_corpus.rs`,
//! so both crates measure inputs the same way. A fuzzer only reports an allocation beyond its
//! `-malloc_limit_mb`; this holds every kept input to the bound the style guide asks for ("no
//! more memory than a small multiple of what was received"), so a decoder change that starts
//! reserving from an untrusted count fails `cargo test` on the inputs the fuzzer already found.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Memory an input may cost per byte received.
pub const BYTES_PER_INPUT_BYTE_MAX: usize = 64;
/// Memory any input may cost regardless of its size: the fixed part of an error message, a
/// decoder's first buffers, a config's defaults.
pub const FIXED_BYTES_MAX: usize = 1 << 20;

/// `System`, counting the bytes live and the largest single request.
pub struct CountingAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);
static LARGEST_REQUEST_BYTES: AtomicUsize = AtomicUsize::new(0);

fn grew(by_bytes: usize, request_bytes: usize) {
    let live = LIVE_BYTES.fetch_add(by_bytes, Relaxed) + by_bytes;
    PEAK_BYTES.fetch_max(live, Relaxed);
    LARGEST_REQUEST_BYTES.fetch_max(request_bytes, Relaxed);
}

// SAFETY: every call is forwarded to `System` with the caller's arguments; the counting only
// reads sizes and touches atomics, which neither allocate nor unwind.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size(), layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size(), layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size(), new_size);
            } else {
                LIVE_BYTES.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        new_ptr
    }
}

/// What one call cost.
struct Cost {
    peak_bytes: usize,
    largest_request_bytes: usize,
}

/// Runs `call` and measures it. The counters are global, so callers hold `SERIAL`: libtest runs
/// tests on several threads, and two replays at once would be charged each other's bytes.
fn measure(call: impl FnOnce()) -> Cost {
    let base_bytes = LIVE_BYTES.load(Relaxed);
    PEAK_BYTES.store(base_bytes, Relaxed);
    LARGEST_REQUEST_BYTES.store(0, Relaxed);
    call();
    Cost {
        peak_bytes: PEAK_BYTES.load(Relaxed).saturating_sub(base_bytes),
        largest_request_bytes: LARGEST_REQUEST_BYTES.load(Relaxed),
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// The kept inputs of `target`: `fuzz/corpus/<target>/` (what `cargo fuzz cmin` left) and
/// `fuzz/regressions/<target>/` (inputs that once crashed or blew a limit), sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir.join(kind).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("listing a fuzz input directory").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Feeds every kept input of `target` to `call`, asserting that none costs more live memory at
/// its peak than `allowance_bytes + 64 * its length + 1 MiB`, and that there was an input at all
/// (an empty or moved corpus would otherwise pass without testing anything). Returns how many
/// inputs were replayed.
pub fn replay(target: &str, allowance_bytes: usize, call: impl Fn(&[u8])) -> usize {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no inputs in fuzz/corpus/{target}/ or fuzz/regressions/{target}/: the corpus is part \
         of the repository (see fuzz/README.md to regenerate it)"
    );
    let mut over = Vec::new();
    for path in &files {
        let input = std::fs::read(path).expect("reading a fuzz input");
        let bound_bytes =
            allowance_bytes + BYTES_PER_INPUT_BYTE_MAX * input.len() + FIXED_BYTES_MAX;
        let cost = measure(|| call(&input));
        if cost.peak_bytes > bound_bytes {
            over.push(format!(
                "{}: {} bytes in, peak {} bytes live (largest single request {}), bound {}",
                path.display(),
                input.len(),
                cost.peak_bytes,
                cost.largest_request_bytes,
                bound_bytes
            ));
        }
    }
    assert!(
        over.is_empty(),
        "{target}: {} of {} inputs cost more memory than allowed:\n{}",
        over.len(),
        files.len(),
        over.join("\n")
    );
    files.len()
}
