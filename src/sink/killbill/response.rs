//! Reading Kill Bill's answers: error bodies and subscription lookups.

use super::error::{KillbillError, Op};

/// Longest error message kept (dead letters and logs stay readable).
const MAX_MESSAGE: usize = 300;

/// Kill Bill's JSON error body, `{"code":50000,"message":"…",…}`. `code` is
/// `None` when the body is not such a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ErrorBody {
    pub code: Option<i64>,
    pub message: String,
}

pub(super) fn error_body(body: &[u8]) -> ErrorBody {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(serde_json::Value::as_i64);
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    ErrorBody {
        code,
        message: truncate(message),
    }
}

pub(super) fn status_error(op: Op, status: u16, body: &[u8]) -> KillbillError {
    let b = error_body(body);
    KillbillError::Status {
        op,
        status,
        code: b.code,
        message: b.message,
    }
}

/// The `subscriptionId` from a lookup answer: one subscription object, or a
/// list of them (the first with an id).
pub(super) fn subscription_id(body: &[u8]) -> Result<String, KillbillError> {
    let bad = |message: String| KillbillError::BadAnswer {
        op: Op::Lookup,
        message,
    };
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "not JSON ({e}): {}",
            truncate(String::from_utf8_lossy(body).into_owned())
        ))
    })?;
    let id_of = |o: &serde_json::Value| {
        o.get("subscriptionId")
            .and_then(serde_json::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let found = match &v {
        serde_json::Value::Array(items) => items.iter().find_map(id_of),
        other => id_of(other),
    };
    found.ok_or_else(|| bad("no subscriptionId in the answer".to_string()))
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_bill_error_body() {
        let b = error_body(
            br#"{"className":"X","code":50000,"message":"A usage record with tracking ID t1 already exists","causeClassName":null}"#,
        );
        assert_eq!(b.code, Some(50000));
        assert!(b.message.contains("already exists"));
        let proxy = error_body(b"<html>Not Found</html>");
        assert_eq!(proxy.code, None);
        assert_eq!(proxy.message, "<html>Not Found</html>");
        assert!(error_body(&vec![b'x'; 5000]).message.len() < 400);
    }

    #[test]
    fn lookup_answers() {
        assert_eq!(
            subscription_id(br#"{"subscriptionId":"s-1","externalKey":"k"}"#).unwrap(),
            "s-1"
        );
        assert_eq!(
            subscription_id(br#"[{"externalKey":"k"},{"subscriptionId":"s-2"}]"#).unwrap(),
            "s-2"
        );
        assert!(subscription_id(b"{}").is_err());
        assert!(subscription_id(b"<html>").is_err());
    }
}
