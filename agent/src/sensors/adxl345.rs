//! ADXL345 3-axis accelerometer driver, generic over `embedded_hal::i2c::I2c`.
//!
//! Register map (datasheet rev. G): DEVID 0x00 (reads 0xE5), BW_RATE 0x2C (rate code in
//! bits 3:0), POWER_CTL 0x2D (bit 3 = measure), DATA_FORMAT 0x31 (bit 3 = FULL_RES, bits
//! 1:0 = range), DATAX0..DATAZ1 0x32..0x37 (little-endian i16 per axis), FIFO_CTL 0x38
//! (bits 7:6 = mode), FIFO_STATUS 0x39 (bits 5:0 = entries). The driver runs the part in
//! full-resolution ±16 g (3.9 mg/LSB) with the FIFO in stream mode, and reads all six data
//! bytes in one burst so the axes of a sample are coherent (the part pops one FIFO entry
//! per multi-byte read of the data registers).

use embedded_hal::i2c::I2c;

/// Register addresses.
pub mod reg {
    /// Device id (0xE5).
    pub const DEVID: u8 = 0x00;
    /// Data rate and power mode.
    pub const BW_RATE: u8 = 0x2C;
    /// Power-saving features; bit 3 = measure.
    pub const POWER_CTL: u8 = 0x2D;
    /// Data format; bit 3 = full resolution, bits 1:0 = range.
    pub const DATA_FORMAT: u8 = 0x31;
    /// First data register (X LSB).
    pub const DATAX0: u8 = 0x32;
    /// FIFO control.
    pub const FIFO_CTL: u8 = 0x38;
    /// FIFO status; bits 5:0 = entries.
    pub const FIFO_STATUS: u8 = 0x39;
}

/// The value DEVID reads on a genuine part.
pub const DEVICE_ID: u8 = 0xE5;
/// Default 7-bit address (ALT ADDRESS low).
pub const DEFAULT_ADDRESS: u8 = 0x53;
/// POWER_CTL: measure.
pub const MEASURE: u8 = 0x08;
/// DATA_FORMAT: full resolution, ±16 g.
pub const FULL_RES_16G: u8 = 0x0B;
/// FIFO_CTL: stream mode, watermark 16.
pub const FIFO_STREAM: u8 = 0x80 | 16;

/// Output data rates (BW_RATE codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DataRate {
    /// 3200 Hz.
    Hz3200 = 0x0F,
    /// 1600 Hz (the pipeline's rate).
    Hz1600 = 0x0E,
    /// 800 Hz.
    Hz800 = 0x0D,
    /// 400 Hz.
    Hz400 = 0x0C,
    /// 100 Hz.
    Hz100 = 0x0A,
}

/// Driver errors.
#[derive(Debug, thiserror::Error)]
pub enum Adxl345Error<E: std::fmt::Debug> {
    /// The bus failed.
    #[error("I2C error: {0:?}")]
    Bus(E),
    /// Something answered that is not an ADXL345.
    #[error("device at 0x{address:02x} reports id 0x{id:02x}, expected 0xE5 (not an ADXL345)")]
    WrongDevice {
        /// Address probed.
        address: u8,
        /// Id read.
        id: u8,
    },
}

/// An ADXL345 on an I2C bus.
pub struct Adxl345<I> {
    i2c: I,
    address: u8,
}

impl<I: I2c> Adxl345<I> {
    /// Probes the device id; fails unless an ADXL345 answers at `address`.
    pub fn new(mut i2c: I, address: u8) -> Result<Self, Adxl345Error<I::Error>> {
        let mut id = [0u8];
        i2c.write_read(address, &[reg::DEVID], &mut id)
            .map_err(Adxl345Error::Bus)?;
        if id[0] != DEVICE_ID {
            return Err(Adxl345Error::WrongDevice { address, id: id[0] });
        }
        Ok(Self { i2c, address })
    }

    fn write(&mut self, r: u8, v: u8) -> Result<(), Adxl345Error<I::Error>> {
        self.i2c
            .write(self.address, &[r, v])
            .map_err(Adxl345Error::Bus)
    }

    /// Reads one register.
    pub fn read_register(&mut self, r: u8) -> Result<u8, Adxl345Error<I::Error>> {
        let mut b = [0u8];
        self.i2c
            .write_read(self.address, &[r], &mut b)
            .map_err(Adxl345Error::Bus)?;
        Ok(b[0])
    }

    /// Full resolution ±16 g, FIFO stream mode, `rate`, then starts measuring.
    pub fn configure(&mut self, rate: DataRate) -> Result<(), Adxl345Error<I::Error>> {
        self.write(reg::POWER_CTL, 0)?; // standby while configuring
        self.write(reg::BW_RATE, rate as u8)?;
        self.write(reg::DATA_FORMAT, FULL_RES_16G)?;
        self.write(reg::FIFO_CTL, FIFO_STREAM)?;
        self.write(reg::POWER_CTL, MEASURE)
    }

    /// Samples waiting in the FIFO (0..=32).
    pub fn fifo_entries(&mut self) -> Result<u8, Adxl345Error<I::Error>> {
        Ok(self.read_register(reg::FIFO_STATUS)? & 0x3F)
    }

    /// One sample as raw LSB counts (x, y, z).
    pub fn read_raw(&mut self) -> Result<[i16; 3], Adxl345Error<I::Error>> {
        let mut b = [0u8; 6];
        self.i2c
            .write_read(self.address, &[reg::DATAX0], &mut b)
            .map_err(Adxl345Error::Bus)?;
        Ok([
            i16::from_le_bytes([b[0], b[1]]),
            i16::from_le_bytes([b[2], b[3]]),
            i16::from_le_bytes([b[4], b[5]]),
        ])
    }

    /// One sample in g.
    pub fn read_g(&mut self) -> Result<[f64; 3], Adxl345Error<I::Error>> {
        Ok(self.read_raw()?.map(|v| f64::from(v) * super::LSB_G))
    }

    /// Releases the bus.
    pub fn release(self) -> I {
        self.i2c
    }
}
