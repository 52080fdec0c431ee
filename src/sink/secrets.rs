//! Read the secrets that the config names by reference. Errors name the
//! reference (variable or file), never the value.

use std::path::PathBuf;

use crate::config::SecretRef;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{what}: environment variable {var} is not set or empty")]
    EnvMissing { what: String, var: String },
    #[error("{what}: cannot read secret file {path}: {source}")]
    File {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: secret file {path} is empty")]
    FileEmpty { what: String, path: PathBuf },
}

/// The secret's value. A trailing newline in a secret file (as editors and
/// `echo` leave) is not part of the secret.
pub(crate) fn resolve(what: &str, r: &SecretRef) -> Result<String, SecretError> {
    match r {
        SecretRef::Env(var) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(v),
            _ => Err(SecretError::EnvMissing {
                what: what.to_string(),
                var: var.clone(),
            }),
        },
        SecretRef::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                what: what.to_string(),
                path: path.clone(),
                source,
            })?;
            let value = text.trim_end_matches(['\n', '\r']).to_string();
            if value.is_empty() {
                return Err(SecretError::FileEmpty {
                    what: what.to_string(),
                    path: path.clone(),
                });
            }
            Ok(value)
        }
    }
}
