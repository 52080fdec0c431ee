//! `tally check --connect` for the Kill Bill sink: per tenant, one read-only
//! subscription lookup of a key that cannot exist. Kill Bill answers it with
//! its own 404 when the URL, TLS and the tenant's credentials are right.

use super::KillbillSink;
use super::error::KillbillError;
use crate::sink::probe::ProbeReport;

/// Not a valid external key of any real subscription (it is never created).
const PROBE_KEY: &str = "tally-check-connect-probe";

impl KillbillSink {
    pub async fn probe(&self) -> ProbeReport {
        let mut answered = Vec::new();
        for (id, tenant) in self.client.tenants_sorted() {
            match self.client.lookup(tenant, PROBE_KEY).await {
                Ok(_)
                | Err(KillbillError::Status {
                    status: 404,
                    code: Some(_),
                    ..
                }) => answered.push(id),
                Err(
                    e @ KillbillError::Status {
                        status: 401 | 403, ..
                    },
                ) => {
                    return ProbeReport::failed(format!("tenant {id}: credentials refused: {e}"));
                }
                Err(e @ KillbillError::Status { status: 404, .. }) => {
                    return ProbeReport::failed(format!(
                        "tenant {id}: not Kill Bill's answer (check url): {e}"
                    ));
                }
                Err(e) => return ProbeReport::failed(format!("tenant {id}: {e}")),
            }
        }
        ProbeReport::ok(format!(
            "Kill Bill answered a read-only lookup for tenants [{}]",
            answered.join(", ")
        ))
    }
}
