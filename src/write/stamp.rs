//! Giving lines without a timestamp the proxy's receive time, so that InfluxDB and
//! Kafka hold the same time for them.

/// Copies `body`, inserting ` <timestamp>` at each offset in `insert_at` (ascending);
/// every other byte stays as the client sent it.
pub fn insert_timestamp(body: &[u8], insert_at: &[usize], timestamp: i64) -> Vec<u8> {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(timestamp).as_bytes();
    let mut out = Vec::with_capacity(body.len() + insert_at.len() * (digits.len() + 1));
    let mut copied = 0;
    for &at in insert_at {
        out.extend_from_slice(&body[copied..at]);
        out.push(b' ');
        out.extend_from_slice(digits);
        copied = at;
    }
    out.extend_from_slice(&body[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_only_the_digits() {
        let body = b"cpu v=1\nmem v=2 5\n  disk  v=3  \r\n";
        let stamped = insert_timestamp(body, &[7, 29], 42);
        assert_eq!(stamped, b"cpu v=1 42\nmem v=2 5\n  disk  v=3 42  \r\n");
    }
}
