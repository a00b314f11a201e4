//! Everything Kafka: topic templates, record encoding and the producer.

pub mod encoder;
pub mod producer;
pub mod topic;

pub use encoder::{Encoder, RecordBatch, TeePoint};
pub use producer::{TeeProducer, WriteAck};
pub use topic::{TopicTemplate, TopicVars};
