//! A counting global allocator: while a case runs on a thread, every byte that thread
//! allocates and frees is counted, and the highest live total (the peak) is kept.
//!
//! Counters are thread-local, so the loaders that run in parallel (one per test) do not see
//! each other's allocations; the loaders under test allocate only on the calling thread.
//! An allocation that would take the case past its hard cap is refused (the loader then
//! sees an out-of-memory condition) after the case and the request are written to stderr,
//! so a loader that tries to allocate gigabytes fails the test instead of the machine.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

pub struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed since the case began (may dip below zero when the
    /// case frees memory allocated before it).
    static LIVE: Cell<i64> = const { Cell::new(0) };
    /// The highest `LIVE` reached, counting refused requests as if they had succeeded.
    static PEAK: Cell<i64> = const { Cell::new(0) };
    static CAP: Cell<i64> = const { Cell::new(i64::MAX) };
    static REFUSED: Cell<u64> = const { Cell::new(0) };
    /// The running case's name, for the message written when a request is refused.
    static LABEL: Cell<[u8; 64]> = const { Cell::new([0; 64]) };
}

/// Counts `size` more bytes; false if the case's cap refuses them.
fn grow(size: usize) -> bool {
    let Ok(true) = ARMED.try_with(Cell::get) else { return true };
    let live = LIVE.get() + size as i64;
    PEAK.set(PEAK.get().max(live));
    if live > CAP.get() {
        REFUSED.set(size as u64);
        report_refusal(size);
        return false;
    }
    LIVE.set(live);
    true
}

fn shrink(size: usize) {
    if let Ok(true) = ARMED.try_with(Cell::get) {
        LIVE.set(LIVE.get() - size as i64);
    }
}

/// Writes "fuzz: <case> asked for <n> bytes beyond its cap" without allocating.
fn report_refusal(size: usize) {
    let label = LABEL.get();
    let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = size;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr();
    let _ = err.write_all(b"fuzz: ");
    let _ = err.write_all(&label[..end]);
    let _ = err.write_all(b" asked for ");
    let _ = err.write_all(&digits[at..]);
    let _ = err.write_all(b" bytes beyond its allocation cap; refused\n");
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !grow(layout.size()) {
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrink(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks may exist at once while the contents move.
        if !grow(new_size) {
            return std::ptr::null_mut();
        }
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if moved.is_null() {
            shrink(new_size);
        } else {
            shrink(layout.size());
        }
        moved
    }
}

/// Whether this thread is inside a measured call.
pub fn armed() -> bool {
    ARMED.try_with(Cell::get).unwrap_or(false)
}

/// What one measured call allocated on this thread.
pub struct Usage {
    /// Highest live bytes above the level at the start, refused requests included.
    pub peak: u64,
    /// Size of a request the cap refused, if any.
    pub refused: Option<u64>,
}

/// Runs `f` with this thread's counters armed, catching a panic; requests beyond `cap` live
/// bytes are refused.
pub fn measure<T>(label: &str, cap: u64, f: impl FnOnce() -> T) -> (std::thread::Result<T>, Usage) {
    let mut name = [0u8; 64];
    let len = label.len().min(name.len() - 1);
    name[..len].copy_from_slice(&label.as_bytes()[..len]);
    LABEL.set(name);
    LIVE.set(0);
    PEAK.set(0);
    REFUSED.set(0);
    CAP.set(i64::try_from(cap).unwrap_or(i64::MAX));
    ARMED.set(true);
    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    ARMED.set(false);
    let refused = REFUSED.get();
    (value, Usage { peak: PEAK.get().max(0) as u64, refused: (refused > 0).then_some(refused) })
}
