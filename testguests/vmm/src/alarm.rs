//! The VMM's alarm clock: a POSIX timer that sends SIGALRM to the vCPU
//! thread when the next device deadline (the PIT's next tick) falls due,
//! so that `KVM_RUN` returns with EINTR and the run loop can raise the
//! interrupt. Both 2006's KVM and today's leave the guest on a host
//! interrupt and check for pending signals before entering it again.
//!
//! A signal that lands while the thread is outside `KVM_RUN` is lost for
//! that purpose, so the timer repeats every millisecond after the
//! deadline until the run loop moves the deadline on.

use anyhow::{Result, bail};
use std::time::Duration;

/// How often the signal repeats after a deadline the loop has not seen.
const REPEAT: Duration = Duration::from_millis(1);

extern "C" fn on_alarm(_signal: libc::c_int) {}

/// A timer aimed at the calling thread; deleted on drop.
pub struct Alarm {
    timer: libc::timer_t,
    /// The deadline the timer is set for, to skip needless system calls.
    armed: Option<Duration>,
}

impl Alarm {
    /// A disarmed timer that will signal the calling thread.
    pub fn for_this_thread() -> Result<Alarm> {
        install_handler()?;
        // SAFETY: a zeroed sigevent is a valid value; the fields that
        // matter are set below.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = libc::SIGALRM;
        // SAFETY: gettid has no preconditions.
        event.sigev_notify_thread_id = unsafe { libc::gettid() };
        let mut timer: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `event` and `timer` are valid for the call; the kernel
        // copies the event and writes the timer's id.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) } != 0 {
            bail!("timer_create: {}", std::io::Error::last_os_error());
        }
        Ok(Alarm { timer, armed: None })
    }

    /// Rings `deadline - now` from now (at once if it is past), then every
    /// millisecond; `None` disarms.
    pub fn set(&mut self, deadline: Option<Duration>, now: Duration) -> Result<()> {
        if deadline == self.armed {
            return Ok(());
        }
        let timespec = |d: Duration| libc::timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos().into() };
        let spec = match deadline {
            None => libc::itimerspec { it_value: timespec(Duration::ZERO), it_interval: timespec(Duration::ZERO) },
            // A zero it_value would disarm: ring after at least 1 ns.
            Some(d) => libc::itimerspec {
                it_value: timespec(d.saturating_sub(now).max(Duration::from_nanos(1))),
                it_interval: timespec(REPEAT),
            },
        };
        // SAFETY: `self.timer` is a live timer and `spec` a valid itimerspec.
        if unsafe { libc::timer_settime(self.timer, 0, &spec, std::ptr::null_mut()) } != 0 {
            bail!("timer_settime: {}", std::io::Error::last_os_error());
        }
        self.armed = deadline;
        Ok(())
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        // SAFETY: the timer was created by `for_this_thread` and is deleted once.
        unsafe { libc::timer_delete(self.timer) };
    }
}

/// SIGALRM gets a handler that does nothing, so that it interrupts system
/// calls instead of killing the process; SA_RESTART stays clear so that
/// `KVM_RUN` returns EINTR instead of starting again.
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

    /// A blocking read of a pipe nobody writes: only a signal ends it.
    fn interrupted_read() -> bool {
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
        read == -1 && error == Some(libc::EINTR)
    }

    #[test]
    fn the_alarm_interrupts_a_blocking_call_of_its_thread() {
        let mut alarm = Alarm::for_this_thread().unwrap();
        let start = std::time::Instant::now();
        alarm.set(Some(Duration::from_millis(20)), Duration::ZERO).unwrap();
        assert!(interrupted_read());
        assert!(start.elapsed() >= Duration::from_millis(19));
        alarm.set(None, Duration::ZERO).unwrap();
    }
}
