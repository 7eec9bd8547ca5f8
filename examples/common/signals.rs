//! Signals for the Linux examples (`afpacket_director`, `tun_decap`): SIGINT and SIGTERM ask
//! the loop to stop, SIGUSR1 to print its counters. The handler only stores to atomics.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT and SIGTERM: stop.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGUSR1: print the counters.
pub static DUMP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Only atomics here: anything else is not async-signal-safe.
    if sig == libc::SIGUSR1 {
        DUMP.store(true, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

/// SIGINT and SIGTERM set [`STOP`], SIGUSR1 sets [`DUMP`]. Without SA_RESTART, so that a
/// signal cuts `poll` short.
pub fn install_signal_handlers() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1] {
        // SAFETY: sigaction is plain old data; all zeroes is a valid value.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: `sa.sa_mask` is a sigset_t owned here.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: `sa` is fully initialised, its handler only touches atomics; the old
        // action is not asked for.
        if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
