//! The operations, one module per family.

pub mod probe;
pub mod read;
pub mod readback;
pub mod write;
