//! The data/bad corpus against the decoder, without a broker: every file's
//! outcome (delivered or dead-lettered, and the reason) is the one its row in
//! data/bad/README.md promises, and every file has a row.

mod support;

use std::collections::BTreeSet;

use bytes::Bytes;
use support::*;
use tally::config::{DedupeSource, FormatKind};
use tally::format::Decoder;

#[test]
fn every_corpus_file_decodes_as_its_readme_row_says() {
    let table = bad_corpus();
    assert!(table.len() >= 30, "only {} corpus rows", table.len());
    let dir = repo_root().join("data/bad");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "README.md")
        .collect();
    let rows: BTreeSet<String> = table.iter().map(|e| e.file.clone()).collect();
    assert_eq!(files, rows, "files and README rows differ");
    assert_eq!(rows.len(), table.len(), "a file has two rows");

    let decoder = Decoder::new(FormatKind::KillbillUsage, DedupeSource::Format)
        .with_max_record_bytes(CORPUS_MAX_RECORD_BYTES);
    let mut wrong = Vec::new();
    for entry in &table {
        let value = Bytes::from(std::fs::read(dir.join(&entry.file)).unwrap());
        match (decoder.decode(None, Some(&value)), entry.good) {
            (Ok(_), true) => {}
            (Err(e), false) if e.to_string().contains(&entry.reason) => {}
            (Ok(d), false) => wrong.push(format!(
                "{}: delivered as {:?}, README says bad",
                entry.file, d.dedupe_key
            )),
            (Err(e), _) => wrong.push(format!(
                "{}: reason {:?}, README says {}",
                entry.file,
                e.to_string(),
                if entry.good {
                    "good".to_string()
                } else {
                    format!("{:?}", entry.reason)
                }
            )),
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}
