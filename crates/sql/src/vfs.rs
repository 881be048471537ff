//! A SQLite VFS that is the platform's default VFS in every respect but the
//! clock: while a log entry is being applied, SQLite's "now" is the time the
//! proposer fixed in the entry, so `DEFAULT CURRENT_TIMESTAMP`, triggers
//! calling `datetime('now')` and anything else reading the clock give the same
//! value on every replica.
//!
//! The pinned time is thread-local: each replica applies on the thread that
//! owns it, and the simulator applies many replicas one after another on one
//! thread, setting the time before each entry.

use rusqlite::ffi;
use std::cell::Cell;
use std::ffi::{c_double, c_int};
use std::sync::OnceLock;

/// The name the VFS is registered under.
pub(crate) const NAME: &str = "paxsql";

/// Milliseconds between the Julian day epoch and the Unix epoch, as SQLite's
/// `xCurrentTimeInt64` counts them.
const UNIX_EPOCH_JULIAN_MS: i64 = 210_866_760_000_000;

thread_local! {
    static PINNED_UNIX_MS: Cell<Option<i64>> = const { Cell::new(None) };
}

struct Registered {
    default_vfs: *mut ffi::sqlite3_vfs,
}

// SAFETY: the pointer refers to SQLite's static default VFS, which lives for
// the whole process and is only read.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceLock<Registered> = OnceLock::new();

/// Registers the VFS once per process.
pub(crate) fn register() {
    REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, a static
        // struct; we copy it, change the name and the clock, and leak the
        // copy so it outlives every connection, as sqlite3_vfs_register needs.
        unsafe {
            ffi::sqlite3_initialize();
            let default_vfs = ffi::sqlite3_vfs_find(std::ptr::null());
            assert!(!default_vfs.is_null(), "SQLite has no default VFS");
            let mut ours: ffi::sqlite3_vfs = *default_vfs;
            ours.zName = c"paxsql".as_ptr();
            ours.xCurrentTime = Some(current_time);
            ours.xCurrentTimeInt64 = Some(current_time_int64);
            if ours.iVersion < 2 {
                ours.iVersion = 2;
            }
            let leaked = Box::leak(Box::new(ours));
            let rc = ffi::sqlite3_vfs_register(leaked, 0);
            assert_eq!(rc, ffi::SQLITE_OK, "registering the paxsql VFS failed");
            Registered { default_vfs }
        }
    });
}

/// Pins SQLite's clock on this thread until the guard is dropped.
pub(crate) fn pin_clock(unix_ms: i64) -> ClockGuard {
    PINNED_UNIX_MS.with(|c| c.set(Some(unix_ms)));
    ClockGuard(())
}

/// Unpins the clock when dropped.
pub(crate) struct ClockGuard(());

impl Drop for ClockGuard {
    fn drop(&mut self) {
        PINNED_UNIX_MS.with(|c| c.set(None));
    }
}

unsafe extern "C" fn current_time_int64(_vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    if let Some(ms) = PINNED_UNIX_MS.with(Cell::get) {
        // SAFETY: SQLite passes a valid pointer to write the time to.
        unsafe { *out = ms + UNIX_EPOCH_JULIAN_MS };
        return ffi::SQLITE_OK;
    }
    let default_vfs = REGISTERED.get().expect("VFS registered").default_vfs;
    // SAFETY: the default VFS is static; its clock takes the same arguments.
    unsafe {
        match (*default_vfs).xCurrentTimeInt64 {
            Some(f) => f(default_vfs, out),
            None => {
                let mut days: c_double = 0.0;
                let rc =
                    (*default_vfs).xCurrentTime.expect("a VFS has a clock")(default_vfs, &mut days);
                *out = (days * 86_400_000.0) as i64;
                rc
            }
        }
    }
}

unsafe extern "C" fn current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut c_double) -> c_int {
    let mut ms: i64 = 0;
    // SAFETY: forwards to our own int64 clock with a valid out pointer.
    let rc = unsafe { current_time_int64(vfs, &mut ms) };
    // SAFETY: SQLite passes a valid pointer to write the time to.
    unsafe { *out = ms as c_double / 86_400_000.0 };
    rc
}
