//! A register-level simulated ADXL345: it implements `embedded_hal::i2c::I2c` and answers
//! register reads and writes like the part, with samples from the seeded vibration model.
//!
//! Modelled: the register file, the register pointer with auto-increment on multi-byte
//! access, DEVID, POWER_CTL measure bit (no data in standby), DATA_FORMAT range and
//! FULL_RES (clamping to the range's LSB span), FIFO stream mode with FIFO_STATUS, and one
//! FIFO entry popped per read that starts at DATAX0. Time is virtual: the FIFO is always
//! full while measuring, so a simulated fleet runs as fast as its CPU allows and every run
//! is reproducible from its seed. Faults can be injected (`fail_next`) to exercise the
//! driver's and pipeline's error paths.

use std::sync::{Arc, Mutex};

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use super::LSB_G;
use super::adxl345::{DEVICE_ID, reg};
use super::vibration::{Controls, MachineMode, VibrationSource};

/// Bus error from the simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimI2cError(pub ErrorKind);

impl embedded_hal::i2c::Error for SimI2cError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

/// Shared handle to change the simulated machine while the device is in use.
#[derive(Debug, Clone)]
pub struct SimHandle(Arc<Mutex<SimShared>>);

#[derive(Debug)]
struct SimShared {
    controls: Controls,
    fail_next: u32,
    samples: u64,
    paused: bool,
}

impl SimHandle {
    /// Sets the machine mode (takes effect at the next window boundary).
    pub fn set_mode(&self, mode: MachineMode) {
        self.lock().controls.mode = mode;
    }
    /// Sets drift, clamped to 0..=1.
    pub fn set_drift(&self, drift: f64) {
        self.lock().controls.drift = drift.clamp(0.0, 1.0);
    }
    /// Current controls.
    pub fn controls(&self) -> Controls {
        self.lock().controls
    }
    /// Makes the next `n` bus transactions fail with a NACK.
    pub fn fail_next(&self, n: u32) {
        self.lock().fail_next = n;
    }
    /// Stops (or resumes) producing samples: the FIFO reads empty, as with a stopped
    /// machine, so the pipeline produces nothing until resumed.
    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }
    /// Samples produced so far.
    pub fn samples(&self) -> u64 {
        self.lock().samples
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, SimShared> {
        // A panic elsewhere while holding this lock cannot leave it inconsistent (plain
        // values), so recover the guard rather than propagate the poison.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The simulated part. Clones share one device (reopening the bus after an error gets
/// the same registers and signal back, as with real hardware).
#[derive(Clone)]
pub struct SimAdxl345 {
    address: u8,
    dev: Arc<Mutex<Registers>>,
    shared: SimHandle,
}

struct Registers {
    regs: [u8; 64],
    pointer: u8,
    source: VibrationSource,
}

impl SimAdxl345 {
    /// A device at `address` simulating a machine in `mode` with `drift`, seeded.
    pub fn new(address: u8, seed: u64, mode: MachineMode, drift: f64) -> Self {
        let mut regs = [0u8; 64];
        regs[reg::DEVID as usize] = DEVICE_ID;
        regs[reg::BW_RATE as usize] = 0x0A; // power-on default: 100 Hz
        Self {
            address,
            dev: Arc::new(Mutex::new(Registers {
                regs,
                pointer: 0,
                source: VibrationSource::new(seed),
            })),
            shared: SimHandle(Arc::new(Mutex::new(SimShared {
                controls: Controls {
                    mode,
                    drift: drift.clamp(0.0, 1.0),
                },
                fail_next: 0,
                samples: 0,
                paused: false,
            }))),
        }
    }

    /// The control handle.
    pub fn handle(&self) -> SimHandle {
        self.shared.clone()
    }
}

impl Registers {
    fn measuring(&self) -> bool {
        self.regs[reg::POWER_CTL as usize] & 0x08 != 0
    }

    /// Largest magnitude in LSB for the configured range (full resolution: 256 LSB/g·2).
    fn span(&self) -> i32 {
        let f = self.regs[reg::DATA_FORMAT as usize];
        let range = i32::from(f & 0x03);
        if f & 0x08 != 0 { 512 << range } else { 512 }
    }

    fn latch_sample(&mut self, shared: &SimHandle) {
        if !self.measuring() {
            return;
        }
        let controls = {
            let mut s = shared.lock();
            s.samples += 1;
            s.controls
        };
        let g = self.source.next_sample(controls);
        let span = self.span();
        for (axis, v) in g.iter().enumerate() {
            let lsb = ((v / LSB_G).round() as i32).clamp(-span, span - 1) as i16;
            let at = reg::DATAX0 as usize + 2 * axis;
            self.regs[at..at + 2].copy_from_slice(&lsb.to_le_bytes());
        }
    }

    fn read_into(&mut self, buf: &mut [u8], shared: &SimHandle) {
        if self.pointer == reg::DATAX0 {
            self.latch_sample(shared);
        }
        let paused = shared.lock().paused;
        for b in buf.iter_mut() {
            let p = self.pointer as usize;
            *b = match self.pointer {
                reg::FIFO_STATUS => {
                    if self.measuring() && !paused {
                        32
                    } else {
                        0
                    }
                }
                _ => self.regs.get(p).copied().unwrap_or(0),
            };
            self.pointer = self.pointer.wrapping_add(1) & 0x3F;
        }
    }

    fn write_from(&mut self, bytes: &[u8]) {
        let Some((&first, data)) = bytes.split_first() else {
            return;
        };
        self.pointer = first & 0x3F;
        for &v in data {
            let p = self.pointer as usize;
            // DEVID, data and FIFO_STATUS registers are read-only on the part.
            let read_only = p == reg::DEVID as usize
                || (reg::DATAX0 as usize..=reg::DATAX0 as usize + 5).contains(&p)
                || p == reg::FIFO_STATUS as usize;
            if !read_only {
                self.regs[p] = v;
            }
            self.pointer = self.pointer.wrapping_add(1) & 0x3F;
        }
    }
}

impl ErrorType for SimAdxl345 {
    type Error = SimI2cError;
}

impl I2c for SimAdxl345 {
    fn transaction(&mut self, address: u8, ops: &mut [Operation<'_>]) -> Result<(), Self::Error> {
        if address != self.address {
            return Err(SimI2cError(ErrorKind::NoAcknowledge(
                NoAcknowledgeSource::Address,
            )));
        }
        {
            let mut s = self.shared.lock();
            if s.fail_next > 0 {
                s.fail_next -= 1;
                return Err(SimI2cError(ErrorKind::NoAcknowledge(
                    NoAcknowledgeSource::Data,
                )));
            }
        }
        let mut dev = self.dev.lock().unwrap_or_else(|p| p.into_inner());
        for op in ops {
            match op {
                Operation::Write(bytes) => dev.write_from(bytes),
                Operation::Read(buf) => dev.read_into(buf, &self.shared),
            }
        }
        Ok(())
    }
}
