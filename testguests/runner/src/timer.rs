//! The timeout: a signal that interrupts `KVM_RUN`.
//!
//! A guest that never halts would keep `KVM_RUN` busy for ever. A watchdog
//! thread waits for the timeout, sets a flag, and sends SIGALRM to the
//! thread that runs the guest; the signal makes the kernel return from
//! `KVM_RUN` with EINTR (both 2006's KVM and today's check for pending
//! signals before entering the guest and leave it on a host interrupt).
//! The watchdog repeats the signal every 50 ms, so a signal that lands
//! while the runner is outside `KVM_RUN` is followed by one that lands
//! inside it. The signal goes to one thread, not the process, so tests
//! that run guests on parallel threads do not interrupt each other.

use anyhow::{Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// The interval of the repeated signal.
const REPEAT: Duration = Duration::from_millis(50);

extern "C" fn on_alarm(_signal: libc::c_int) {}

/// A running timeout; dropping it stops the watchdog and waits for it.
pub struct Timer {
    expired: Arc<AtomicBool>,
    stop: Option<Sender<()>>,
    watchdog: Option<JoinHandle<()>>,
}

impl Timer {
    /// Starts a watchdog that interrupts the calling thread after `timeout`.
    pub fn start(timeout: Duration) -> Result<Timer> {
        Timer::start_repeating(timeout, REPEAT)
    }

    /// As `start`, with the signal repeated every `repeat` after the first.
    pub fn start_repeating(timeout: Duration, repeat: Duration) -> Result<Timer> {
        install_handler()?;
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let expired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = Arc::clone(&expired);
        let watchdog = std::thread::spawn(move || {
            let mut wait = timeout;
            // Only the Sender's drop ends the wait early: nothing is sent.
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                flag.store(true, Ordering::SeqCst);
                // SAFETY: `target` is alive: it owns the Timer, whose drop
                // waits for this thread to end.
                unsafe { libc::pthread_kill(target, libc::SIGALRM) };
                wait = repeat;
            }
        });
        Ok(Timer { expired, stop: Some(stop), watchdog: Some(watchdog) })
    }

    /// Whether the timeout has passed.
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::SeqCst)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
    }
}

/// SIGALRM gets a handler that does nothing, so that it interrupts system
/// calls instead of killing the process. SA_RESTART stays clear: the
/// interrupted `KVM_RUN` returns EINTR instead of starting again.
fn install_handler() -> Result<()> {
    // SAFETY: a zeroed `sigaction` is a valid empty one, and the handler
    // does nothing, which is async-signal-safe.
    let result = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_alarm as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut())
    };
    if result != 0 {
        bail!("cannot install the SIGALRM handler: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blocking read of a pipe nobody writes, which only a signal ends.
    fn blocking_read() -> Option<i32> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into `byte`, which outlives the call.
        let read = unsafe { libc::read(fds[0], (&mut byte as *mut u8).cast(), 1) };
        let error = std::io::Error::last_os_error().raw_os_error();
        // SAFETY: closes the two descriptors opened above.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        (read == -1).then_some(error).flatten()
    }

    #[test]
    fn the_timer_expires_and_interrupts_a_blocking_call() {
        let timer = Timer::start(Duration::from_millis(20)).unwrap();
        assert!(!timer.expired());
        assert_eq!(blocking_read(), Some(libc::EINTR));
        assert!(timer.expired());
    }

    #[test]
    fn a_dropped_timer_never_fires() {
        let timer = Timer::start(Duration::from_millis(30)).unwrap();
        let expired = Arc::clone(&timer.expired);
        drop(timer);
        std::thread::sleep(Duration::from_millis(80));
        assert!(!expired.load(Ordering::SeqCst));
    }
}
