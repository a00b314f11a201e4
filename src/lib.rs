//! influx-tee: an InfluxDB-compatible write proxy that tees accepted points to Kafka.
//!
//! The write path, in order: [`http`] receives it, [`write`] parses
//! ([`line_protocol`]), stamps and forwards it ([`upstream`]), and [`kafka`] tees
//! what InfluxDB stored.

pub mod config;
pub mod http;
pub mod kafka;
pub mod line_protocol;
pub mod metrics;
pub mod parse_command;
pub mod server;
pub mod spool;
pub mod upstream;
pub mod write;
