//! The CMOS real-time clock (MC146818), enough for a kernel to read the
//! date at boot: an index port (0x70) and a data port (0x71).
//!
//! The time registers are read from the host's clock at the moment of
//! each read, in BCD and 24-hour mode (status register B = 0x02), with
//! the update-in-progress bit always clear, so the guest never waits. The
//! other bytes of CMOS memory are plain storage. Writes to the time
//! registers are ignored: the guest cannot set the host's clock. Alarms
//! and periodic interrupts (line 8) are not modelled.
//!
//! See: Motorola MC146818A datasheet, "Address Map".

pub const INDEX_PORT: u16 = 0x70;
pub const DATA_PORT: u16 = 0x71;

const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0A;
const STATUS_B: u8 = 0x0B;
const STATUS_C: u8 = 0x0C;
const STATUS_D: u8 = 0x0D;
/// The century, where PCs keep it (ACPI's FADT names this byte).
const CENTURY: u8 = 0x32;

/// A civil date and time, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: u32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl DateTime {
    /// The date of `unix` seconds since 1970-01-01 00:00 UTC.
    pub fn from_unix(unix: u64) -> DateTime {
        let days = unix / 86_400;
        let secs = unix % 86_400;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (secs / 3600) as u32,
            minute: (secs / 60 % 60) as u32,
            second: (secs % 60) as u32,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4) % 7) as u32,
        }
    }
}

/// Year, month (1..12) and day (1..31) of a count of days since
/// 1970-01-01, by the proleptic Gregorian calendar: shift the year to
/// start in March, so that the leap day falls at its end, then count in
/// 400-year eras of 146,097 days.
fn civil_from_days(days: u64) -> (u32, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year as u32, month as u32, day as u32)
}

fn bcd(value: u32) -> u8 {
    let value = value % 100;
    (((value / 10) << 4) | (value % 10)) as u8
}

/// The CMOS chip: 128 bytes and the selected index.
pub struct Rtc {
    index: u8,
    memory: [u8; 128],
}

impl Default for Rtc {
    fn default() -> Rtc {
        let mut memory = [0; 128];
        memory[usize::from(STATUS_A)] = 0x26; // 32.768 kHz time base, 1024 Hz rate
        memory[usize::from(STATUS_B)] = 0x02; // 24-hour mode, BCD
        memory[usize::from(STATUS_D)] = 0x80; // valid RAM and time: the battery is good
        Rtc { index: 0, memory }
    }
}

impl Rtc {
    /// Port 0x70 selects a register; its bit 7 masks NMIs, which we ignore.
    pub fn write_index(&mut self, value: u8) {
        self.index = value & 0x7F;
    }

    /// Port 0x71 reads the selected register; `now` is the host's time.
    pub fn read_data(&self, now: &DateTime) -> u8 {
        match self.index {
            SECONDS => bcd(now.second),
            MINUTES => bcd(now.minute),
            HOURS => bcd(now.hour),
            WEEKDAY => bcd(now.weekday + 1),
            DAY => bcd(now.day),
            MONTH => bcd(now.month),
            YEAR => bcd(now.year),
            CENTURY => bcd(now.year / 100),
            // Reading C clears the interrupt flags; none are ever set.
            STATUS_C => 0,
            index => self.memory[usize::from(index)],
        }
    }

    pub fn write_data(&mut self, value: u8) {
        match self.index {
            SECONDS..=YEAR | STATUS_C | STATUS_D | CENTURY => {}
            // The guest may pick the rate; UIP (bit 7) is read-only.
            STATUS_A => self.memory[usize::from(STATUS_A)] = value & 0x7F,
            // Keep BCD and 24-hour mode: the time registers are computed in them.
            STATUS_B => self.memory[usize::from(STATUS_B)] = value & !0x06 | 0x02,
            index => self.memory[usize::from(index)] = value,
        }
    }

    /// The host's time now.
    pub fn host_time() -> DateTime {
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        DateTime::from_unix(unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_time() {
        let epoch = DateTime::from_unix(0);
        assert_eq!((epoch.year, epoch.month, epoch.day, epoch.weekday), (1970, 1, 1, 4));
        let leap = DateTime::from_unix(951_782_400 + 3661);
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        assert_eq!((leap.hour, leap.minute, leap.second, leap.weekday), (1, 1, 1, 2));
        let end = DateTime::from_unix(4_102_444_799);
        assert_eq!((end.year, end.month, end.day, end.hour, end.minute, end.second), (2099, 12, 31, 23, 59, 59));
    }

    #[test]
    fn the_kernel_reads_bcd_time_with_no_update_in_progress() {
        let mut rtc = Rtc::default();
        let now = DateTime::from_unix(1_796_171_551); // 2026-12-02 00:32:31, a Wednesday
        let mut read = |index| {
            rtc.write_index(index | 0x80);
            rtc.read_data(&now)
        };
        assert_eq!(read(STATUS_A) & 0x80, 0);
        assert_eq!(read(STATUS_B), 0x02);
        let fields = [SECONDS, MINUTES, HOURS, DAY, MONTH, YEAR, CENTURY, WEEKDAY].map(&mut read);
        assert_eq!(fields, [0x31, 0x32, 0x00, 0x02, 0x12, 0x26, 0x20, 0x04]);
    }

    #[test]
    fn cmos_memory_keeps_what_is_written_but_not_the_time() {
        let mut rtc = Rtc::default();
        let now = DateTime::from_unix(0);
        rtc.write_index(0x40);
        rtc.write_data(0xAB);
        assert_eq!(rtc.read_data(&now), 0xAB);
        rtc.write_index(SECONDS);
        rtc.write_data(0x59);
        assert_eq!(rtc.read_data(&now), 0x00);
        rtc.write_index(STATUS_B);
        rtc.write_data(0x04); // binary mode, 12-hour: refused
        assert_eq!(rtc.read_data(&now), 0x02);
    }
}
