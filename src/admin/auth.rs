//! Bearer-token check for mutating admin endpoints.

use std::path::Path;

use super::AdminError;
use crate::config::AdminSettings;

/// The admin token, resolved from `token_env` / `token_file` at start.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// `Ok(None)` when the config names no token: mutating endpoints are then off.
    pub fn resolve(admin: &AdminSettings) -> Result<Option<Token>, AdminError> {
        let text = if let Some(var) = &admin.token_env {
            match std::env::var(var) {
                Ok(v) => v,
                Err(_) => {
                    return Err(AdminError::Token(format!(
                        "admin.token_env names {var}, which is not set (or not UTF-8)"
                    )));
                }
            }
        } else if let Some(path) = &admin.token_file {
            read_file(path)?
        } else {
            return Ok(None);
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(AdminError::Token("the admin token is empty".into()));
        }
        Ok(Some(Token(t.to_string())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Does an `Authorization` header value carry this token? Constant time
    /// in the token's content, so timing does not reveal how much matched.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(h) = authorization else {
            return false;
        };
        let Some(given) = h.strip_prefix(b"Bearer ") else {
            return false;
        };
        constant_time_eq(given, self.0.as_bytes())
    }
}

fn read_file(path: &Path) -> Result<String, AdminError> {
    std::fs::read_to_string(path).map_err(|e| {
        AdminError::Token(format!(
            "admin.token_file {}: cannot read it: {e}",
            path.display()
        ))
    })
}

/// Compares every byte whatever the outcome (a length mismatch still walks
/// the expected token), so the time taken does not depend on where the first
/// difference is. Ten lines instead of a dependency.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(0);
        diff |= g ^ e;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let t = Token("s3cret".into());
        assert!(t.accepts(Some(b"Bearer s3cret")));
        assert!(!t.accepts(Some(b"Bearer s3cre")));
        assert!(!t.accepts(Some(b"Bearer s3cretX")));
        assert!(!t.accepts(Some(b"Basic s3cret")));
        assert!(!t.accepts(Some(b"Bearer ")));
        assert!(!t.accepts(None));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }
}
