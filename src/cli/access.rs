//! How a state command reads the store: directly when no daemon holds it,
//! else through the daemon's admin API when `[admin]` is configured.

use anyhow::Context;
use serde::de::DeserializeOwned;

use crate::admin::AdminClient;
use crate::config::Settings;
use crate::pipeline::store_config;
use crate::store::{Store, StoreError};

pub(crate) enum Access {
    Store(Store),
    Daemon(AdminClient),
}

/// Open the store, or fall back to the running daemon's admin API.
pub(crate) fn open(settings: &Settings) -> anyhow::Result<Access> {
    match Store::open(&store_config(settings)) {
        Ok(s) => Ok(Access::Store(s)),
        Err(e @ StoreError::Locked { .. }) => match &settings.admin {
            Some(a) => Ok(Access::Daemon(AdminClient::new(a)?)),
            None => Err(anyhow::Error::new(e).context(
                "the daemon holds the store and this config has no [admin] table to ask it through \
                 (add `[admin] listen = \"127.0.0.1:9464\"` and restart it, or stop it to read the store directly)",
            )),
        },
        Err(e) => Err(anyhow::Error::new(e).context("opening the store")),
    }
}

/// Open the store for a command that must have it to itself (it writes offsets).
pub(crate) fn open_exclusive(settings: &Settings, what: &str) -> anyhow::Result<Store> {
    Store::open(&store_config(settings)).with_context(|| match lock_pid(settings) {
        Some(pid) => format!(
            "{what} refuses to run while the daemon (pid {pid}) holds the store: stop it first \
             (`kill -TERM {pid}`: it drains and commits), run {what} again, then start it"
        ),
        None => format!("{what}: opening the store"),
    })
}

fn lock_pid(settings: &Settings) -> Option<String> {
    match crate::store::lock_holder(&settings.store.path) {
        Ok(Some(Some(pid))) => Some(pid.to_string()),
        Ok(Some(None)) => Some("unknown".into()),
        _ => None,
    }
}

/// GET a JSON document from the daemon.
pub(crate) fn daemon_get<T: DeserializeOwned>(
    client: &AdminClient,
    path: &str,
) -> anyhow::Result<T> {
    let rt = super::runtime()?;
    let bytes = rt.block_on(client.get(path)).with_context(|| {
        format!("the store is locked by the running daemon; asked its admin API ({path})")
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("admin API {path}: unexpected answer"))
}

/// POST a JSON body to the daemon (a token-protected endpoint), JSON back.
pub(crate) fn daemon_post<T: DeserializeOwned>(
    client: &AdminClient,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<T> {
    let rt = super::runtime()?;
    let body = axum::body::Bytes::from(body.to_string());
    let bytes = rt.block_on(client.post(path, body)).with_context(|| {
        format!("the store is locked by the running daemon; asked its admin API ({path})")
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("admin API {path}: unexpected answer"))
}

/// `?name=value` pairs, percent-encoded; `None` values are left out.
pub(crate) fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", crate::admin::client::encode_segment(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
