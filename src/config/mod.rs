//! Configuration: TOML on disk (`raw`) → validated `Settings`.
//!
//! Unknown keys are errors that name the key; durations are written like
//! `"30s"`; every default lives in `settings.rs`.

mod admin;
mod amqp;
mod assignment;
mod error;
mod http;
mod kafka_security;
mod killbill;
mod raw;
mod settings;

pub use admin::{AdminSettings, DEFAULT_ADMIN_LISTEN};
pub use error::ConfigError;
pub use kafka_security::{KafkaSaslSettings, KafkaTlsSettings, SaslMechanism};
pub use settings::*;
