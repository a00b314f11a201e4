//! influx-tee: an InfluxDB-compatible write proxy that tees accepted points to Kafka.

pub mod line_protocol;
pub mod parse_command;
