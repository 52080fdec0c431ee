//! What `tally check --connect` reports for one sink: one line, and whether
//! it is a problem. Each sink's probe is read-only: it creates, sends or
//! changes nothing at the destination.

#[derive(Debug)]
pub struct ProbeReport {
    pub line: String,
    pub ok: bool,
}

impl ProbeReport {
    pub fn ok(line: String) -> ProbeReport {
        ProbeReport {
            line: format!("ok ({line})"),
            ok: true,
        }
    }

    pub fn failed(message: impl std::fmt::Display) -> ProbeReport {
        ProbeReport {
            line: format!("FAILED ({message})"),
            ok: false,
        }
    }
}
