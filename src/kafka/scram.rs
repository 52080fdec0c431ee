//! SCRAM client (RFC 5802) for SCRAM-SHA-256 (RFC 7677) and SCRAM-SHA-512,
//! as Kafka uses it: no channel binding (`n,,`), no authzid.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("server message is not valid SCRAM: {0}")]
    Malformed(String),
    #[error("server refused the login: {0}")]
    ServerError(String),
    #[error("server's nonce does not extend ours (possible man in the middle)")]
    NonceMismatch,
    #[error("iteration count {0} is outside 4096..=10000000")]
    Iterations(u32),
    #[error("server signature does not verify: the server does not know this password")]
    BadServerSignature,
}

/// Kafka brokers refuse fewer than 4096 iterations; more than ten million is
/// a broker trying to burn our CPU.
const ITERATIONS: std::ops::RangeInclusive<u32> = 4096..=10_000_000;

pub struct ScramClient {
    hash: ScramHash,
    password: String,
    nonce: String,
    first_bare: String,
}

/// What the client keeps between its final message and the server's answer.
pub struct AwaitingServerFinal {
    hash: ScramHash,
    server_key: Vec<u8>,
    auth_message: String,
}

impl ScramClient {
    pub fn new(hash: ScramHash, username: &str, password: &str, nonce: String) -> Self {
        let name = username.replace('=', "=3D").replace(',', "=2C");
        ScramClient {
            hash,
            password: password.to_string(),
            first_bare: format!("n={name},r={nonce}"),
            nonce,
        }
    }

    /// `client-first-message`: GS2 header `n,,` (no channel binding) + bare part.
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.first_bare)
    }

    /// Answers `server-first-message` with `client-final-message`.
    pub fn client_final(
        self,
        server_first: &str,
    ) -> Result<(String, AwaitingServerFinal), ScramError> {
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attr in server_first.split(',') {
            match attr.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(v),
                Some(("i", v)) => iterations = Some(v),
                Some(("e", v)) => return Err(ScramError::ServerError(v.to_string())),
                Some(("m", _)) => return Err(ScramError::Malformed("mandatory extension".into())),
                _ => {}
            }
        }
        let missing = |what: &str| ScramError::Malformed(format!("server-first without {what}"));
        let nonce = nonce.ok_or_else(|| missing("r="))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = B64
            .decode(salt.ok_or_else(|| missing("s="))?)
            .map_err(|e| ScramError::Malformed(format!("salt: {e}")))?;
        let iterations: u32 = iterations
            .ok_or_else(|| missing("i="))?
            .parse()
            .map_err(|e| ScramError::Malformed(format!("iteration count: {e}")))?;
        if !ITERATIONS.contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }

        let salted = salted_password(self.hash, self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(self.hash, &salted, b"Client Key");
        let stored_key = digest(self.hash, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.first_bare);
        let signature = hmac(self.hash, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac(self.hash, &salted, b"Server Key");
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)),
            AwaitingServerFinal {
                hash: self.hash,
                server_key,
                auth_message,
            },
        ))
    }
}

impl AwaitingServerFinal {
    /// Checks `server-final-message`: the server proves it knows the password too.
    pub fn verify(self, server_final: &str) -> Result<(), ScramError> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_string()));
        }
        let v = server_final
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| ScramError::Malformed("server-final without v=".into()))?;
        let got = B64
            .decode(v)
            .map_err(|e| ScramError::Malformed(format!("server signature: {e}")))?;
        let want = hmac(self.hash, &self.server_key, self.auth_message.as_bytes());
        if got != want {
            return Err(ScramError::BadServerSignature);
        }
        Ok(())
    }
}

fn salted_password(hash: ScramHash, password: &[u8], salt: &[u8], rounds: u32) -> Vec<u8> {
    match hash {
        ScramHash::Sha256 => {
            pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, rounds).to_vec()
        }
        ScramHash::Sha512 => {
            pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, rounds).to_vec()
        }
    }
}

fn hmac(hash: ScramHash, key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail here.
    match hash {
        ScramHash::Sha256 => match <Hmac<Sha256> as Mac>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        },
        ScramHash::Sha512 => match <Hmac<Sha512> as Mac>::new_from_slice(key) {
            Ok(mut m) => {
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Err(_) => Vec::new(),
        },
    }
}

fn digest(hash: ScramHash, data: &[u8]) -> Vec<u8> {
    match hash {
        ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        ScramHash::Sha512 => Sha512::digest(data).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3.
    #[test]
    fn rfc7677_sha256_vector() {
        let c = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let (fin, wait) = c.client_final(server_first).unwrap();
        assert_eq!(
            fin,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        wait.verify("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn wrong_server_signature_and_nonce_are_refused() {
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let c = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        let (_, wait) = c.client_final(server_first).unwrap();
        assert_eq!(
            wait.verify("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
        let c = ScramClient::new(ScramHash::Sha256, "user", "pencil", "other".into());
        assert!(matches!(
            c.client_final(server_first),
            Err(ScramError::NonceMismatch)
        ));
        let c = ScramClient::new(
            ScramHash::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert!(matches!(
            c.client_final("e=unknown-user"),
            Err(ScramError::ServerError(e)) if e == "unknown-user"
        ));
        let c = ScramClient::new(ScramHash::Sha256, "user", "pencil", "r".into());
        assert_eq!(
            c.client_final("r=rx,s=AAAA,i=1").err(),
            Some(ScramError::Iterations(1))
        );
    }

    /// No published SHA-512 vector: play the server's side of RFC 5802
    /// (ClientKey = proof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) == StoredKey).
    #[test]
    fn sha512_proof_verifies_as_a_server_would() {
        let h = ScramHash::Sha512;
        let salt = b"0123456789abcdef";
        let c = ScramClient::new(h, "u=,ser", "pässword", "cnonce".into());
        assert_eq!(c.client_first(), "n,,n=u=3D=2Cser,r=cnonce");
        let server_first = format!("r=cnonceSNONCE,s={},i=4096", B64.encode(salt));
        let (fin, wait) = c.client_final(&server_first).unwrap();
        let (without_proof, proof) = fin.rsplit_once(",p=").unwrap();
        let proof = B64.decode(proof).unwrap();
        let salted = salted_password(h, "pässword".as_bytes(), salt, 4096);
        let stored = digest(h, &hmac(h, &salted, b"Client Key"));
        let auth = format!("n=u=3D=2Cser,r=cnonce,{server_first},{without_proof}");
        let sig = hmac(h, &stored, auth.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(&sig).map(|(p, s)| p ^ s).collect();
        assert_eq!(digest(h, &client_key), stored);
        let server_sig = hmac(h, &hmac(h, &salted, b"Server Key"), auth.as_bytes());
        wait.verify(&format!("v={}", B64.encode(server_sig)))
            .unwrap();
    }
}
