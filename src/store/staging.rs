//! A commit's batches on their way into the two logs and sled: their digest
//! records and encoded keys collected up front, appended to the digest log
//! and the key log before the transaction, and the headers and `meta`
//! writes that transaction records.

use sled::IVec;

use super::batch::{self, BatchInfo, Header};
use super::digest_log::{self, DigestLog, IoResult, LogKind, Pending, RECORD, checksum, pack};
use super::key_codec;
use super::keys;

/// One batch, encoded but for where its bytes land in the logs.
struct Staged {
    seq: u64,
    info: BatchInfo,
    /// Its first record within `Staging::records`, and their checksum.
    at: u64,
    checksum: u64,
    /// Its encoded keys within `Staging::keys`.
    key_at: u64,
    key_len: u32,
    key_checksum: u64,
}

#[derive(Default)]
pub(crate) struct Staging {
    records: Vec<u8>,
    keys: Vec<u8>,
    batches: Vec<Staged>,
}

/// The staged bytes, written to the logs, waiting for the transaction.
pub(crate) struct Appended {
    digests: Option<Pending>,
    keys: Option<Pending>,
    /// (id_batches key, id_batches value) per batch.
    pub headers: Vec<(IVec, IVec)>,
    /// `meta` writes recording both logs' new state.
    pub meta: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Staging {
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Bytes staged for the logs.
    pub fn bytes(&self) -> usize {
        self.records.len() + self.keys.len()
    }

    /// Stage batch `info` (its `count` is set here) with its digests and
    /// keys (all of them, or none if they are lost).
    pub fn push<S: AsRef<str>>(
        &mut self,
        mut info: BatchInfo,
        digests: impl ExactSizeIterator<Item = u128>,
        keys: &[S],
    ) {
        info.count = digests.len() as u32;
        let from = self.records.len();
        self.records.reserve(digests.len() * RECORD);
        for d in digests {
            pack(d, &mut self.records);
        }
        // No keys for a batch that has digests: a schema-1 store had lost
        // them before it was migrated. Recorded as zero key bytes.
        let key_at = self.keys.len();
        if !(keys.is_empty() && info.count > 0) {
            key_codec::encode_into(keys, &mut self.keys);
        }
        let encoded = &self.keys[key_at..];
        self.batches.push(Staged {
            seq: info.seq,
            info,
            at: (from / RECORD) as u64,
            checksum: checksum(&self.records[from..]),
            key_at: key_at as u64,
            key_len: encoded.len() as u32,
            key_checksum: checksum(encoded),
        });
    }

    /// Write the staged bytes to the logs: the keys synced (they cannot be
    /// recomputed), the digests synced only with `sync_digests` (else they
    /// are mended from the keys if lost). `first_seq` is the first staged
    /// batch's sequence, `next_seq` the one after the last.
    pub fn append(
        &self,
        digests: &DigestLog,
        keys: &DigestLog,
        first_seq: u64,
        next_seq: u64,
        sync_digests: bool,
    ) -> IoResult<Appended> {
        if self.is_empty() {
            return Ok(Appended {
                digests: None,
                keys: None,
                headers: Vec::new(),
                meta: Vec::new(),
            });
        }
        let kp = keys.prepare(&self.keys, first_seq, Some(next_seq))?;
        let dp = digests.prepare(&self.records, first_seq, sync_digests.then_some(next_seq))?;
        let headers = self
            .batches
            .iter()
            .map(|b| {
                let h = Header {
                    info: b.info.clone(),
                    first_record: dp.first + b.at,
                    checksum: b.checksum,
                    key_first: kp.first + b.key_at,
                    key_len: b.key_len,
                    key_checksum: b.key_checksum,
                };
                (
                    IVec::from(&keys::seq_key(b.seq)[..]),
                    IVec::from(batch::encode_header(&h)),
                )
            })
            .collect();
        let mut meta = Vec::new();
        meta_writes(digests.kind(), &dp, &mut meta);
        meta_writes(keys.kind(), &kp, &mut meta);
        Ok(Appended {
            digests: Some(dp),
            keys: Some(kp),
            headers,
            meta,
        })
    }
}

impl Appended {
    /// The transaction recording these appends succeeded.
    pub fn apply(self, digests: &mut DigestLog, keys: &mut DigestLog) {
        if let Some(p) = self.digests {
            digests.apply(p);
        }
        if let Some(p) = self.keys {
            keys.apply(p);
        }
    }
}

fn meta_writes(kind: &LogKind, p: &Pending, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    out.push((kind.state_key.to_vec(), digest_log::encode_state(&p.state)));
    if let Some((first, c)) = &p.closed {
        out.push((
            digest_log::segment_key(kind, *first),
            digest_log::encode_segment(c).to_vec(),
        ));
    }
}
