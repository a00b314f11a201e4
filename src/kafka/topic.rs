//! Topic templates such as `influx.{bucket}` or `metrics.{db}.{measurement}`.

use std::fmt::Write;

/// Kafka's longest legal topic name.
const MAX_TOPIC_LEN: usize = 249;

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

    /// The topic for a write (and a measurement), with illegal characters replaced by `_`.
    pub fn render(&self, vars: &TopicVars<'_>, measurement: &str) -> String {
        let mut topic = String::with_capacity(64);
        for segment in &self.segments {
            let text = match segment {
                Segment::Literal(text) => text.as_str(),
                Segment::Bucket => vars.bucket,
                Segment::Org => vars.org,
                Segment::Db => vars.db,
                Segment::Rp => vars.rp,
                Segment::Measurement => measurement,
            };
            topic.extend(text.chars().map(|c| if is_legal(c) { c } else { '_' }));
        }
        if topic.len() > MAX_TOPIC_LEN {
            topic.truncate(MAX_TOPIC_LEN);
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
        assert_eq!(template.render(&vars, "cpu"), "influx.telegraf_autogen");
        assert!(!template.uses_measurement());
        let per_measurement = TopicTemplate::parse("{db}-{rp}.{measurement}").unwrap();
        let vars = TopicVars {
            db: "db",
            rp: "rp",
            ..Default::default()
        };
        assert_eq!(
            per_measurement.render(&vars, "disk used"),
            "db-rp.disk_used"
        );
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
}
