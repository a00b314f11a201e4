//! Topic templates such as `influx.{bucket}` or `metrics.{db}.{measurement}`.
//!
//! The mapping from a write's names to a topic must not merge two names into one
//! topic, nor produce two topics Kafka cannot hold side by side (it refuses a topic
//! that differs from an existing one only in `.` versus `_`). So each variable's value
//! is rendered as follows:
//!
//! - a value of only ASCII letters, digits, `_` and `-` (or empty) is kept as it is,
//!   unless it ends like a hash suffix (`-` and 16 lowercase hex digits);
//! - any other value (a `.`, a `/` as in a v1 bucket `db/rp`, a space, non-ASCII…)
//!   has each such character replaced by `_` and gets `-` plus 16 hex digits of the
//!   64-bit FNV-1a hash of the original value appended.
//!
//! Rendered values therefore never contain `.`, and a plain value never looks like a
//! hashed one. A topic longer than Kafka's 249 characters is cut to 232 and ends in
//! `-` plus the hash of the whole rendered name. Distinct values stay distinct up to
//! a 64-bit hash collision (not resistant to deliberately crafted names). Templates
//! with several variables separated by `.` or `_` can still render names Kafka
//! confuses (`{db}.{rp}`: `a_b`+`c` and `a`+`b_c`); the shipper detects such pairs,
//! logs them, and dead-letters what Kafka refuses.

use std::fmt::Write;

/// Kafka's longest legal topic name.
pub(crate) const MAX_TOPIC_LEN: usize = 249;
/// `-` and 16 hex digits.
const HASH_SUFFIX_LEN: usize = 17;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Bucket,
    Org,
    Db,
    Rp,
    Measurement,
}

/// The names a topic template may use for one write.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicVars<'a> {
    pub bucket: &'a str,
    pub org: &'a str,
    pub db: &'a str,
    pub rp: &'a str,
}

/// A parsed topic template.
#[derive(Debug, Clone)]
pub struct TopicTemplate {
    segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid topic template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: String,
}

impl TopicTemplate {
    pub fn parse(template: &str) -> Result<TopicTemplate, TemplateError> {
        let error = |reason: String| TemplateError {
            template: template.to_owned(),
            reason,
        };
        let mut segments = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| error("unclosed '{'".into()))?
                + open;
            segments.push(match &rest[open + 1..close] {
                "bucket" => Segment::Bucket,
                "org" => Segment::Org,
                "db" => Segment::Db,
                "rp" => Segment::Rp,
                "measurement" => Segment::Measurement,
                other => return Err(error(format!("unknown variable {{{other}}}"))),
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        if segments.is_empty() {
            return Err(error("empty template".into()));
        }
        Ok(TopicTemplate { segments })
    }

    /// Whether the topic differs per point, so it must be rendered per measurement.
    pub fn uses_measurement(&self) -> bool {
        self.segments.contains(&Segment::Measurement)
    }

    /// The topic for a write (and a measurement); see the module documentation.
    pub fn render(&self, vars: &TopicVars<'_>, measurement: &str) -> String {
        let mut topic = String::with_capacity(64);
        for segment in &self.segments {
            let value = match segment {
                Segment::Literal(text) => {
                    // The operator's own text: illegal characters become `_`.
                    topic.extend(text.chars().map(|c| if is_legal(c) { c } else { '_' }));
                    continue;
                }
                Segment::Bucket => vars.bucket,
                Segment::Org => vars.org,
                Segment::Db => vars.db,
                Segment::Rp => vars.rp,
                Segment::Measurement => measurement,
            };
            push_value(&mut topic, value);
        }
        if topic.len() > MAX_TOPIC_LEN {
            // Rendered names are ASCII, so any byte is a character boundary.
            let hash = fnv1a(topic.as_bytes());
            topic.truncate(MAX_TOPIC_LEN - HASH_SUFFIX_LEN);
            let _ = write!(topic, "-{hash:016x}");
        }
        if topic.is_empty() || topic == "." || topic == ".." {
            let _ = write!(topic, "_");
        }
        topic
    }
}

/// Kafka topic names allow ASCII letters, digits, `.`, `_` and `-`.
fn is_legal(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Characters a variable's value keeps as they are: `.` is left out, as Kafka
/// treats it as `_` when it compares topic names.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Whether `value` ends like the hash suffix of a rendered value.
fn ends_like_hash(value: &[u8]) -> bool {
    value.len() >= HASH_SUFFIX_LEN && {
        let tail = &value[value.len() - HASH_SUFFIX_LEN..];
        tail[0] == b'-'
            && tail[1..]
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    }
}

fn push_value(topic: &mut String, value: &str) {
    let bytes = value.as_bytes();
    if bytes.iter().all(|b| is_plain(*b)) && !ends_like_hash(bytes) {
        topic.push_str(value);
        return;
    }
    topic.extend(value.chars().map(|c| {
        if c.is_ascii() && is_plain(c as u8) {
            c
        } else {
            '_'
        }
    }));
    let _ = write!(topic, "-{:016x}", fnv1a(bytes));
}

/// 64-bit FNV-1a: stable across releases and platforms, so topic names are too.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A topic as Kafka compares names for collisions: `.` and `_` are the same.
pub fn collision_key(topic: &str) -> String {
    topic.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_sanitises() {
        let template = TopicTemplate::parse("influx.{bucket}").unwrap();
        let vars = TopicVars {
            bucket: "telegraf/autogen",
            ..Default::default()
        };
        let rendered = template.render(&vars, "cpu");
        assert!(
            rendered.starts_with("influx.telegraf_autogen-") && rendered.len() == 24 + 16,
            "{rendered}"
        );
        let vars = TopicVars {
            bucket: "telegraf_db-1",
            ..Default::default()
        };
        assert_eq!(template.render(&vars, "cpu"), "influx.telegraf_db-1");
        assert!(!template.uses_measurement());
        let per_measurement = TopicTemplate::parse("{db}-{rp}.{measurement}").unwrap();
        let vars = TopicVars {
            db: "db",
            rp: "rp",
            ..Default::default()
        };
        let rendered = per_measurement.render(&vars, "disk used");
        assert!(rendered.starts_with("db-rp.disk_used-"), "{rendered}");
    }

    #[test]
    fn rejects_unknown_variables() {
        assert!(TopicTemplate::parse("x.{nope}").is_err());
        assert!(TopicTemplate::parse("x.{bucket").is_err());
    }

    #[test]
    fn caps_length() {
        let template = TopicTemplate::parse("{bucket}").unwrap();
        let long = "b".repeat(400);
        let vars = TopicVars {
            bucket: &long,
            ..Default::default()
        };
        assert_eq!(template.render(&vars, "m").len(), MAX_TOPIC_LEN);
    }

    #[test]
    fn names_kafka_would_confuse_stay_apart() {
        let template = TopicTemplate::parse("t.{db}").unwrap();
        let render = |db: &str| {
            template.render(
                &TopicVars {
                    db,
                    ..Default::default()
                },
                "",
            )
        };
        let names = [
            "x.y",
            "x_y",
            "x/y",
            "x y",
            "xéy",
            "x_y-0123456789abcdef",
            "",
            &"a".repeat(300),
            &format!("{}b", "a".repeat(299)),
            &format!("{}.b", "a".repeat(298)),
        ];
        let rendered: Vec<String> = names.iter().map(|n| render(n)).collect();
        let keys: std::collections::BTreeSet<String> =
            rendered.iter().map(|t| collision_key(t)).collect();
        assert_eq!(keys.len(), names.len(), "{rendered:?}");
        for topic in &rendered {
            assert!(topic.len() <= MAX_TOPIC_LEN, "{topic}");
            assert!(topic.chars().all(is_legal), "{topic}");
        }
        // Stable across releases: topic names must not change under a running deployment.
        assert_eq!(render("x_y"), "t.x_y");
        assert_eq!(render("x.y"), format!("t.x_y-{:016x}", fnv1a(b"x.y")));
    }
}
