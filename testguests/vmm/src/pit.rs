//! The 8254 programmable interval timer, in userspace, counting in host
//! time: channel 0 drives ISA line 0 (the guest's timer tick), channel 2
//! is the one whose output the guest reads in port 0x61 (Linux times its
//! TSC calibration with it).
//!
//! Nothing here reads a clock: every call takes `now`, the time since the
//! VMM started, so the tests can drive the timer through made-up times.
//! The run loop asks `next_irq` when channel 0 wants to interrupt, makes
//! sure it is awake then, and calls `poll`, which says whether an edge of
//! the output fell due. Ticks that were missed while the guest was not
//! running are folded into one, as 2006's QEMU did: Linux keeps time from
//! the TSC, not by counting ticks.
//!
//! Modes: 0 (interrupt on terminal count) and 4 (software strobe) are one
//! shot; 2 (rate generator) and 3 (square wave) are periodic; 1 and 5,
//! which need a gate edge, count like 0 and 4. BCD counting is not
//! modelled. The read-back command (0xC0..0xFF) latches counts and status.
//!
//! See: Intel 82C54 CHMOS programmable interval timer datasheet (order
//! number 231244), "Operation" and "Read-Back Command".

use std::time::Duration;

/// The 8254's input clock on a PC: 1.193182 MHz.
pub const FREQUENCY_HZ: u64 = 1_193_182;
/// Channel 0's data port; channels 1 and 2 follow, then the control word.
pub const BASE_PORT: u16 = 0x40;
/// The PC's system control port B: channel 2's gate (bit 0), the speaker
/// (bit 1), the refresh toggle (bit 4) and channel 2's output (bit 5).
pub const PORT_B: u16 = 0x61;

/// How the data port is read and written (control word bits 5..4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Access {
    Lsb,
    Msb,
    /// Low byte, then high byte.
    #[default]
    Word,
}

/// One counter of the 8254.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Channel {
    pub mode: u8,
    access: Access,
    /// The count last written (0 stands for 65536).
    reload: u32,
    /// When counting started from `reload`; None until a count is written.
    loaded_at: Option<Duration>,
    /// The low byte of a count being written as a word.
    write_low: Option<u8>,
    /// A word read is between its two bytes.
    read_high_next: bool,
    /// A count latched by command, read out before the live count.
    latched: Option<u16>,
    latched_high_next: bool,
    /// A status byte latched by the read-back command.
    status: Option<u8>,
    /// When the output's next interrupting edge falls due (channel 0).
    next_edge: Option<Duration>,
}

fn ticks(span: Duration) -> u64 {
    (span.as_nanos() * u128::from(FREQUENCY_HZ) / 1_000_000_000) as u64
}

/// The time `ticks` take, rounded up, so that an edge is never early.
fn span(ticks: u64) -> Duration {
    Duration::from_nanos((u128::from(ticks) * 1_000_000_000).div_ceil(u128::from(FREQUENCY_HZ)) as u64)
}

impl Channel {
    fn periodic(&self) -> bool {
        matches!(self.mode, 2 | 3)
    }

    /// A control word for this channel (not a latch command).
    fn program(&mut self, access: Access, mode: u8) {
        // Modes 6 and 7 are aliases of 2 and 3.
        let mode = if mode >= 6 { mode - 4 } else { mode };
        *self = Channel { mode, access, ..Channel::default() };
    }

    fn write(&mut self, value: u8, now: Duration) {
        let count = match self.access {
            Access::Lsb => u32::from(value),
            Access::Msb => u32::from(value) << 8,
            Access::Word => match self.write_low.take() {
                None => return self.write_low = Some(value),
                Some(low) => u32::from(low) | u32::from(value) << 8,
            },
        };
        self.reload = if count == 0 { 0x1_0000 } else { count };
        self.loaded_at = Some(now);
        self.next_edge = Some(now + span(u64::from(self.reload)));
    }

    /// The counting element at `now`.
    pub fn count(&self, now: Duration) -> u16 {
        let Some(start) = self.loaded_at else { return 0 };
        let elapsed = ticks(now.saturating_sub(start));
        let reload = u64::from(self.reload);
        let value = if self.periodic() {
            let phase = elapsed % reload;
            // Mode 3 counts down by two, twice per period.
            if self.mode == 3 { (reload - (2 * phase) % reload) & !1 } else { reload - phase }
        } else {
            // One-shot modes wrap around and keep counting.
            reload.wrapping_sub(elapsed) & 0xFFFF
        };
        value as u16
    }

    /// The output pin at `now`.
    pub fn output(&self, now: Duration) -> bool {
        let Some(start) = self.loaded_at else { return self.mode != 0 };
        let elapsed = ticks(now.saturating_sub(start));
        let reload = u64::from(self.reload);
        match self.mode {
            0 | 1 => elapsed >= reload,
            2 => elapsed % reload != reload - 1,
            3 => elapsed % reload < reload.div_ceil(2),
            _ => elapsed != reload,
        }
    }

    fn read(&mut self, now: Duration) -> u8 {
        if let Some(status) = self.status.take() {
            return status;
        }
        let (value, high) = match self.latched {
            Some(latched) => {
                let high = self.latched_high_next;
                self.latched_high_next = !high && self.access == Access::Word;
                if !self.latched_high_next {
                    self.latched = None;
                }
                (latched, high)
            }
            None => {
                let high = self.read_high_next;
                self.read_high_next = !high && self.access == Access::Word;
                (self.count(now), high)
            }
        };
        let high = high || self.access == Access::Msb;
        if high { (value >> 8) as u8 } else { value as u8 }
    }

    fn latch(&mut self, now: Duration) {
        if self.latched.is_none() {
            self.latched = Some(self.count(now));
            self.latched_high_next = self.access == Access::Msb;
        }
    }

    fn status_byte(&self, now: Duration) -> u8 {
        let access = match self.access {
            Access::Lsb => 1,
            Access::Msb => 2,
            Access::Word => 3,
        };
        let null_count = if self.loaded_at.is_none() { 0x40 } else { 0 };
        (u8::from(self.output(now)) << 7) | null_count | (access << 4) | (self.mode << 1)
    }

    /// Whether an interrupting edge fell due by `now`, and when the next one will.
    fn poll(&mut self, now: Duration) -> bool {
        let Some(edge) = self.next_edge else { return false };
        if now < edge {
            return false;
        }
        self.next_edge = match (self.periodic(), self.loaded_at) {
            (true, Some(start)) => {
                let period = span(u64::from(self.reload)).max(Duration::from_micros(1));
                let periods = (now.saturating_sub(start).as_nanos() / period.as_nanos()) as u32 + 1;
                Some(start + period * periods)
            }
            _ => None,
        };
        true
    }
}

/// The three channels and port 0x61.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pit {
    pub channels: [Channel; 3],
    /// Port 0x61's writable bits: channel 2's gate and the speaker.
    port_b: u8,
    /// The refresh-request bit, toggled on every read of port 0x61.
    refresh: bool,
}

impl Pit {
    /// Reads port 0x40..0x42 or 0x61.
    pub fn read(&mut self, port: u16, now: Duration) -> u8 {
        match port {
            PORT_B => {
                self.refresh = !self.refresh;
                let out2 = self.channels[2].output(now);
                (self.port_b & 0x03) | (u8::from(self.refresh) << 4) | (u8::from(out2) << 5)
            }
            0x40..=0x42 => self.channels[usize::from(port - BASE_PORT)].read(now),
            _ => 0xFF,
        }
    }

    /// Writes port 0x40..0x43 or 0x61.
    pub fn write(&mut self, port: u16, value: u8, now: Duration) {
        match port {
            PORT_B => self.port_b = value & 0x03,
            0x40..=0x42 => self.channels[usize::from(port - BASE_PORT)].write(value, now),
            0x43 => self.control(value, now),
            _ => {}
        }
    }

    /// A control word: program a channel, latch its count, or read back.
    fn control(&mut self, value: u8, now: Duration) {
        let select = usize::from(value >> 6);
        let access = match (value >> 4) & 3 {
            0 if select < 3 => return self.channels[select].latch(now),
            0 => Access::Word,
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::Word,
        };
        if select < 3 {
            return self.channels[select].program(access, (value >> 1) & 7);
        }
        // Read-back: bits 3..1 select channels; bit 5 clear latches the
        // counts, bit 4 clear latches the status.
        for (i, channel) in self.channels.iter_mut().enumerate() {
            if value & (2 << i) == 0 {
                continue;
            }
            if value & 0x10 == 0 && channel.status.is_none() {
                channel.status = Some(channel.status_byte(now));
            }
            if value & 0x20 == 0 {
                channel.latch(now);
            }
        }
    }

    /// When channel 0 next wants to interrupt.
    pub fn next_irq(&self) -> Option<Duration> {
        self.channels[0].next_edge
    }

    /// Whether channel 0's output gave an interrupting edge by `now`.
    pub fn poll(&mut self, now: Duration) -> bool {
        self.channels[0].poll(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// Linux's periodic tick at HZ=250: mode 2, LATCH = 4773.
    fn periodic_250hz(now: Duration) -> Pit {
        let mut pit = Pit::default();
        pit.write(0x43, 0x34, now);
        pit.write(0x40, (4773 & 0xFF) as u8, now);
        pit.write(0x40, (4773 >> 8) as u8, now);
        pit
    }

    #[test]
    fn a_periodic_tick_fires_every_period_and_folds_missed_ones() {
        let mut pit = periodic_250hz(ms(0));
        assert_eq!(pit.next_irq(), Some(span(4773)));
        assert!(!pit.poll(ms(3)));
        assert!(pit.poll(ms(5)));
        assert!(!pit.poll(ms(6)));
        assert!(pit.poll(ms(9)));
        // Ten periods pass unseen: one edge, and the next is in the future.
        assert!(pit.poll(ms(48)));
        assert!(!pit.poll(ms(48)));
        let next = pit.next_irq().unwrap();
        assert!(next > ms(48) && next <= ms(48) + span(4773), "{next:?}");
    }

    #[test]
    fn a_one_shot_fires_once() {
        // Linux's oneshot clockevent: mode 4, then a count per event.
        let mut pit = Pit::default();
        pit.write(0x43, 0x38, ms(0));
        assert_eq!(pit.next_irq(), None, "no count, no edge");
        pit.write(0x40, 0xE8, ms(1));
        pit.write(0x40, 0x03, ms(1)); // 1000 ticks: 838 µs
        assert!(!pit.poll(ms(1) + us(800)));
        assert!(pit.poll(ms(1) + us(840)));
        assert!(!pit.poll(ms(100)));
        assert_eq!(pit.next_irq(), None);
    }

    #[test]
    fn the_counter_counts_down_in_host_time() {
        let mut pit = periodic_250hz(ms(0));
        pit.write(0x43, 0x00, ms(1)); // latch channel 0
        let low = pit.read(0x40, ms(2));
        let high = pit.read(0x40, ms(3));
        let latched = u16::from_le_bytes([low, high]);
        // 1 ms is 1193 ticks.
        assert_eq!(latched, 4773 - 1193);
        // Without a latch, each byte comes from the live count.
        let low = pit.read(0x40, ms(2));
        let high = pit.read(0x40, ms(2));
        assert_eq!(u16::from_le_bytes([low, high]), 4773 - 2386);
    }

    #[test]
    fn channel_two_output_shows_in_port_b_after_terminal_count() {
        // Linux's pit_calibrate_tsc(): gate on, mode 0, a 10 ms count.
        let mut pit = Pit::default();
        let gate = pit.read(0x61, ms(0)) & !0x02 | 0x01;
        pit.write(0x61, gate, ms(0));
        pit.write(0x43, 0xB0, ms(0));
        pit.write(0x42, (11932 & 0xFF) as u8, ms(0));
        pit.write(0x42, (11932 >> 8) as u8, ms(0));
        assert_eq!(pit.read(0x61, ms(5)) & 0x21, 0x01);
        assert_eq!(pit.read(0x61, ms(11)) & 0x21, 0x21);
        assert_eq!(pit.next_irq(), None, "channel 2 does not interrupt");
    }

    #[test]
    fn the_refresh_bit_toggles_on_every_read() {
        let mut pit = Pit::default();
        let a = pit.read(0x61, ms(0)) & 0x10;
        let b = pit.read(0x61, ms(0)) & 0x10;
        assert_ne!(a, b);
    }

    #[test]
    fn read_back_latches_status_then_count() {
        let mut pit = periodic_250hz(ms(0));
        pit.write(0x43, 0xC2, ms(1)); // read-back, count and status, channel 0
        let status = pit.read(0x40, ms(2));
        assert_eq!(status & 0x3F, 0x34, "access word, mode 2");
        assert_eq!(status & 0x40, 0, "a count is loaded");
        let count = u16::from_le_bytes([pit.read(0x40, ms(2)), pit.read(0x40, ms(2))]);
        assert_eq!(count, 4773 - 1193);
    }

    #[test]
    fn a_zero_count_means_65536() {
        let mut pit = Pit::default();
        pit.write(0x43, 0x30, ms(0));
        pit.write(0x40, 0, ms(0));
        pit.write(0x40, 0, ms(0));
        assert_eq!(pit.next_irq(), Some(span(65536)));
    }

    #[test]
    fn square_wave_counts_by_two_and_is_periodic() {
        let mut pit = Pit::default();
        pit.write(0x43, 0x36, ms(0));
        pit.write(0x40, 100, ms(0));
        pit.write(0x40, 0, ms(0));
        assert_eq!(pit.channels[0].count(span(10)), 80);
        assert!(pit.channels[0].output(span(10)));
        assert!(!pit.channels[0].output(span(60)));
        assert!(pit.poll(span(100)));
        assert!(pit.poll(span(200)));
    }
}
