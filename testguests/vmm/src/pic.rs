//! The 8259A programmable interrupt controllers, master and slave, in
//! userspace, as 2006's QEMU had them when KVM had no irqchip of its own.
//!
//! A device raises an edge on an input line (`pulse`); the controller
//! remembers it in its interrupt request register (IRR) unless the line is
//! masked in the IMR. When the vCPU can take an interrupt, the run loop
//! asks the pair for the vector (`acknowledge`), which moves the request
//! into the in-service register (ISR) until the guest writes an EOI; then
//! it hands the vector to `KVM_INTERRUPT`. The slave is wired to the
//! master's line 2, as on every PC since the AT.
//!
//! Modelled: the initialization sequence (ICW1..ICW4, including auto-EOI),
//! masks (OCW1), specific and non-specific EOI (OCW2), reading the IRR or
//! ISR (OCW3), and fixed priority with line 0 highest. Not modelled, as
//! Linux does not use them on a PC: rotation, special mask mode, poll
//! mode, level-triggered lines (ELCR), and buffered mode.
//!
//! See: Intel 8259A datasheet (order number 231468), "Programming the 8259A".

/// The master's I/O ports (command, data); the slave's are at 0xA0.
pub const MASTER_PORT: u16 = 0x20;
pub const SLAVE_PORT: u16 = 0xA0;
/// The master input the slave's output is wired to.
const CASCADE_LINE: u8 = 2;

/// One 8259A.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chip {
    /// Interrupt request register: edges seen and not yet acknowledged.
    pub irr: u8,
    /// Interrupt mask register (OCW1): a set bit ignores the line.
    pub imr: u8,
    /// In-service register: acknowledged and not yet ended by an EOI.
    pub isr: u8,
    /// The level of each input line, to see rising edges.
    lines: u8,
    /// The vector of line 0 (ICW2, its low three bits cleared).
    pub vector_base: u8,
    /// Which initialization word the data port expects next.
    init: InitStep,
    /// ICW1 said there will be an ICW4.
    expects_icw4: bool,
    /// ICW1 said there is no slave (single mode): no ICW3.
    single: bool,
    /// ICW4's AEOI bit: acknowledging ends the interrupt at once.
    auto_eoi: bool,
    /// OCW3's choice for reads of the command port: ISR or IRR.
    read_isr: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum InitStep {
    #[default]
    Ready,
    Icw2,
    Icw3,
    Icw4,
}

impl Chip {
    /// Sets input `line` to `level`; a rising edge requests an interrupt.
    pub fn set_line(&mut self, line: u8, level: bool) {
        let bit = 1 << line;
        if level && self.lines & bit == 0 {
            self.irr |= bit;
        }
        if level { self.lines |= bit } else { self.lines &= !bit }
    }

    /// The line with the highest priority among those requesting and
    /// unmasked, if nothing of equal or higher priority is in service.
    pub fn pending(&self) -> Option<u8> {
        let requested = self.irr & !self.imr;
        let line = lowest_bit(requested)?;
        match lowest_bit(self.isr) {
            Some(in_service) if in_service <= line => None,
            _ => Some(line),
        }
    }

    /// The interrupt acknowledge cycle for `line`: IRR to ISR.
    fn acknowledge(&mut self, line: u8) {
        self.irr &= !(1 << line);
        if !self.auto_eoi {
            self.isr |= 1 << line;
        }
    }

    /// A write to the command port (A0 = 0): ICW1, OCW2 or OCW3.
    pub fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1: start over. The masks and requests are cleared.
            *self = Chip { lines: self.lines, ..Chip::default() };
            self.expects_icw4 = value & 0x01 != 0;
            self.single = value & 0x02 != 0;
            self.init = InitStep::Icw2;
        } else if value & 0x08 != 0 {
            // OCW3: RR (bit 1) set means RIS (bit 0) picks the register.
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
        } else {
            self.write_ocw2(value);
        }
    }

    /// OCW2: end-of-interrupt commands (bits 7..5 = R SL EOI).
    fn write_ocw2(&mut self, value: u8) {
        match value >> 5 {
            // Non-specific EOI (also with rotation): the highest priority in service.
            0b001 | 0b101 => {
                if let Some(line) = lowest_bit(self.isr) {
                    self.isr &= !(1 << line);
                }
            }
            // Specific EOI (also with rotation): the line in bits 2..0.
            0b011 | 0b111 => self.isr &= !(1 << (value & 7)),
            _ => {}
        }
    }

    /// A write to the data port (A0 = 1): an ICW during initialization,
    /// else OCW1, the mask.
    pub fn write_data(&mut self, value: u8) {
        self.init = match self.init {
            InitStep::Ready => {
                self.imr = value;
                InitStep::Ready
            }
            InitStep::Icw2 => {
                self.vector_base = value & 0xF8;
                if !self.single { InitStep::Icw3 } else { self.after_icw3() }
            }
            InitStep::Icw3 => self.after_icw3(),
            InitStep::Icw4 => {
                self.auto_eoi = value & 0x02 != 0;
                InitStep::Ready
            }
        };
    }

    fn after_icw3(&self) -> InitStep {
        if self.expects_icw4 { InitStep::Icw4 } else { InitStep::Ready }
    }

    pub fn read_command(&self) -> u8 {
        if self.read_isr { self.isr } else { self.irr }
    }

    pub fn read_data(&self) -> u8 {
        self.imr
    }
}

fn lowest_bit(bits: u8) -> Option<u8> {
    (bits != 0).then(|| bits.trailing_zeros() as u8)
}

/// The master and the slave, as one interrupt controller with 16 lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pic {
    pub master: Chip,
    pub slave: Chip,
}

impl Pic {
    /// An edge on ISA line `irq` (0..15): the line goes up, then down.
    pub fn pulse(&mut self, irq: u8) {
        self.set_irq(irq, true);
        self.set_irq(irq, false);
    }

    /// Sets ISA line `irq` to `level`.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..8 => self.master.set_line(irq, level),
            8..16 => {
                self.slave.set_line(irq - 8, level);
                self.update_cascade();
            }
            _ => {}
        }
    }

    /// The slave's output follows whether it has something to deliver.
    fn update_cascade(&mut self) {
        let level = self.slave.pending().is_some();
        self.master.set_line(CASCADE_LINE, level);
    }

    /// Whether the pair would interrupt the processor now.
    pub fn has_interrupt(&self) -> bool {
        self.master.pending().is_some()
    }

    /// The acknowledge cycle: the vector the processor receives, with the
    /// request moved into service. None if nothing is pending.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let line = self.master.pending()?;
        self.master.acknowledge(line);
        if line != CASCADE_LINE {
            return Some(self.master.vector_base + line);
        }
        // The slave supplies the vector. If its request vanished meanwhile,
        // the 8259A answers with its line 7: a spurious interrupt.
        let slave_line = self.slave.pending().unwrap_or(7);
        self.slave.acknowledge(slave_line);
        self.update_cascade();
        Some(self.slave.vector_base + slave_line)
    }

    /// Reads port `port` (0x20, 0x21, 0xA0 or 0xA1).
    pub fn read(&self, port: u16) -> u8 {
        let chip = if port & 0x80 != 0 { &self.slave } else { &self.master };
        if port & 1 == 0 { chip.read_command() } else { chip.read_data() }
    }

    /// Writes port `port` (0x20, 0x21, 0xA0 or 0xA1).
    pub fn write(&mut self, port: u16, value: u8) {
        let chip = if port & 0x80 != 0 { &mut self.slave } else { &mut self.master };
        if port & 1 == 0 { chip.write_command(value) } else { chip.write_data(value) }
        // A slave EOI or mask change may let a waiting request through.
        self.update_cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's `init_8259A()`: vectors 0x30 and 0x38, cascade on line 2,
    /// normal EOI, everything masked, then the masks it keeps.
    fn linux_pic(master_mask: u8, slave_mask: u8) -> Pic {
        let mut pic = Pic::default();
        for (port, value) in [
            (0x21, 0xFF), (0xA1, 0xFF),
            (0x20, 0x11), (0x21, 0x30), (0x21, 0x04), (0x21, 0x01),
            (0xA0, 0x11), (0xA1, 0x38), (0xA1, 0x02), (0xA1, 0x01),
            (0x21, master_mask), (0xA1, slave_mask),
        ] {
            pic.write(port, value);
        }
        pic
    }

    #[test]
    fn initialization_sets_the_vectors_and_the_masks_read_back() {
        let pic = linux_pic(0xFA, 0xFF);
        assert_eq!((pic.master.vector_base, pic.slave.vector_base), (0x30, 0x38));
        assert_eq!((pic.read(0x21), pic.read(0xA1)), (0xFA, 0xFF));
    }

    #[test]
    fn a_timer_edge_is_delivered_once_and_ended_by_eoi() {
        let mut pic = linux_pic(0xFA, 0xFF);
        pic.pulse(0);
        assert!(pic.has_interrupt());
        assert_eq!(pic.acknowledge(), Some(0x30));
        assert_eq!(pic.master.isr, 0x01);
        assert!(!pic.has_interrupt(), "the request went into service");
        pic.pulse(0);
        assert!(!pic.has_interrupt(), "line 0 is in service: a second tick waits for the EOI");
        pic.write(0x20, 0x60); // specific EOI, line 0
        assert_eq!(pic.acknowledge(), Some(0x30));
    }

    #[test]
    fn a_masked_line_is_remembered_until_unmasked() {
        let mut pic = linux_pic(0xFF, 0xFF);
        pic.pulse(4);
        assert!(!pic.has_interrupt());
        pic.write(0x21, 0xEF);
        assert_eq!(pic.acknowledge(), Some(0x34));
    }

    #[test]
    fn lower_lines_have_priority_and_preempt_higher_ones_in_service() {
        let mut pic = linux_pic(0x00, 0xFF);
        pic.pulse(4);
        pic.pulse(3);
        assert_eq!(pic.acknowledge(), Some(0x33));
        assert!(!pic.has_interrupt(), "line 4 waits while line 3 is in service");
        pic.pulse(0);
        assert_eq!(pic.acknowledge(), Some(0x30), "line 0 preempts line 3");
        pic.write(0x20, 0x20); // non-specific EOI: ends line 0
        pic.write(0x20, 0x20); // ends line 3
        assert_eq!(pic.acknowledge(), Some(0x34));
    }

    #[test]
    fn the_slave_delivers_through_the_cascade_line() {
        let mut pic = linux_pic(0xFB, 0xFE);
        pic.pulse(8);
        assert_eq!(pic.acknowledge(), Some(0x38));
        assert_eq!((pic.master.isr, pic.slave.isr), (0x04, 0x01));
        pic.write(0xA0, 0x20);
        pic.write(0x20, 0x62);
        assert_eq!((pic.master.isr, pic.slave.isr), (0, 0));
        assert!(!pic.has_interrupt());
    }

    #[test]
    fn auto_eoi_leaves_nothing_in_service() {
        let mut pic = Pic::default();
        for (port, value) in [(0x20, 0x13), (0x21, 0x08), (0x21, 0x03), (0x21, 0x00)] {
            pic.write(port, value);
        }
        pic.pulse(1);
        assert_eq!(pic.acknowledge(), Some(0x09));
        assert_eq!(pic.master.isr, 0);
    }

    #[test]
    fn ocw3_selects_irr_or_isr_for_reads() {
        let mut pic = linux_pic(0x00, 0xFF);
        pic.pulse(1);
        pic.pulse(5);
        pic.acknowledge();
        assert_eq!(pic.read(0x20), 0x20, "IRR by default");
        pic.write(0x20, 0x0B);
        assert_eq!(pic.read(0x20), 0x02, "ISR after OCW3 with RR RIS");
        pic.write(0x20, 0x0A);
        assert_eq!(pic.read(0x20), 0x20);
    }

    #[test]
    fn a_held_line_is_one_request_not_many() {
        let mut pic = linux_pic(0x00, 0xFF);
        pic.set_irq(3, true);
        pic.acknowledge();
        pic.write(0x20, 0x20);
        pic.set_irq(3, true);
        assert!(!pic.has_interrupt(), "no new edge");
    }

    #[test]
    fn nothing_pending_acknowledges_nothing() {
        assert_eq!(linux_pic(0, 0).acknowledge(), None);
    }
}
