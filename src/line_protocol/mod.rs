//! Line protocol parsing with the InfluxDB server's semantics.
