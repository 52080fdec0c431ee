//! Reading tally's log in end-to-end tests: colour codes stripped, the tail
//! for failure messages, fields of the "stopped cleanly" summary line.
#![allow(dead_code)]

/// The log without terminal colour codes (tracing writes them to files too).
pub fn plain_log(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last 60 lines, colour codes removed.
pub fn tail(s: &str) -> String {
    let s = plain_log(s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// `name=N` from the "stopped cleanly" summary line.
pub fn summary_field(stderr: &str, name: &str) -> u64 {
    let stderr = plain_log(stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("stopped cleanly"))
        .unwrap_or_else(|| panic!("no summary line:\n{}", tail(&stderr)));
    let pat = format!("{name}=");
    let at = line
        .find(&pat)
        .unwrap_or_else(|| panic!("{name} in {line}"))
        + pat.len();
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {line}"))
}
