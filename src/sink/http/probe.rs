//! `tally check --connect` for the http sink: one HEAD request to the URL
//! with the configured headers. It proves name resolution, TCP, TLS (with the
//! client certificate) and that an HTTP server answers, and sends no event.

use super::HttpSink;
use crate::sink::http_client::error_chain;
use crate::sink::probe::ProbeReport;

impl HttpSink {
    pub async fn probe(&self) -> ProbeReport {
        let host = self.url.host_str().unwrap_or("?").to_string();
        match self
            .http
            .head(self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await
        {
            Err(e) => ProbeReport::failed(format!("{host}: {}", error_chain(&e))),
            Ok(resp) => {
                let status = resp.status();
                match status.as_u16() {
                    401 | 403 | 407 => ProbeReport::failed(format!(
                        "{host} answered HEAD with {status}: credentials refused"
                    )),
                    500..=599 => ProbeReport::failed(format!(
                        "{host} answered HEAD with {status}: server error"
                    )),
                    // 405 and friends: the endpoint is there, it just takes POST.
                    _ => ProbeReport::ok(format!("{host} answered HEAD with {status}")),
                }
            }
        }
    }
}
