//! Ed25519 keys and DSSE envelopes: what signs a run's attestation and checks it.
//!
//! Formats are the ones other tools read, so a reviewer needs nothing of bootgate to
//! check a signature: the private key is PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`),
//! the public key PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`), both as
//! `openssl genpkey -algorithm ed25519` and Python's `cryptography` write them. The
//! envelope is DSSE v1 (github.com/secure-systems-lab/dsse): the signature covers the
//! pre-authentication encoding of payload type and body, never the JSON around them.
//! A key's id is the lowercase hex sha256 of its public key's DER SubjectPublicKeyInfo
//! (the bytes inside the PEM armour), so anyone can recompute it from the .pub file.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The environment variable naming the signing key when `--sign-key` is not given.
pub const SIGN_KEY_ENV: &str = "BOOTGATE_SIGN_KEY";

/// The DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

const PRIVATE_PEM_LABEL: &str = "PRIVATE KEY";
const PUBLIC_PEM_LABEL: &str = "PUBLIC KEY";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error("{path} already exists; bootgate never overwrites a key (choose another --out, or remove it yourself)")]
    Exists { path: PathBuf },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot get random bytes for a new key from the operating system: {0}")]
    Random(String),
}

/// The PEM label of the first armour block in `text`, if it has one.
fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let len = text[start..].find("-----")?;
    Some(&text[start..start + len])
}

fn read_pem(path: &Path) -> Result<String, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| KeyError::Invalid {
        path: path.to_path_buf(),
        what: "not a PEM text file (binary content); expected an Ed25519 key as `bootgate keygen` writes".into(),
    })
}

/// Says what a PEM file is when it is not what was asked for: the usual mistakes are
/// the other half of the pair, or a key of another algorithm.
fn wrong_pem(path: &Path, text: &str, wanted: &str, detail: &str) -> KeyError {
    let what = match pem_label(text) {
        None => format!("no PEM block (-----BEGIN {wanted}-----) found; expected an Ed25519 key as `bootgate keygen` writes"),
        Some(PUBLIC_PEM_LABEL) if wanted == PRIVATE_PEM_LABEL => {
            "this is a public key; signing needs the private key (the .key file of `bootgate keygen`)".into()
        }
        Some(PRIVATE_PEM_LABEL) if wanted == PUBLIC_PEM_LABEL => {
            "this is a private key; verifying takes the public key (the .pub file of `bootgate keygen`): never hand the private key to a verifier".into()
        }
        Some(label) if label != wanted => {
            format!("holds a PEM {label:?} block; expected {wanted:?} (an Ed25519 key in PKCS#8 / SubjectPublicKeyInfo form)")
        }
        Some(_) => format!("not an Ed25519 key ({detail}); only Ed25519 keys are supported"),
    };
    KeyError::Invalid {
        path: path.to_path_buf(),
        what,
    }
}

/// The key id of a public key: hex sha256 of its DER SubjectPublicKeyInfo.
fn keyid_of(key: &VerifyingKey) -> String {
    match key.to_public_key_der() {
        Ok(der) => super::sha256_bytes(der.as_bytes()),
        // Encoding 32 bytes into a fixed structure cannot fail; hash the raw key
        // rather than panic should it ever.
        Err(_) => super::sha256_bytes(key.as_bytes()),
    }
}

/// A private key read from a file, ready to sign.
pub struct Signer {
    key: SigningKey,
    keyid: String,
    path: PathBuf,
}

impl std::fmt::Debug for Signer {
    // Never print the key itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("keyid", &self.keyid)
            .field("path", &self.path)
            .finish()
    }
}

impl Signer {
    /// Reads a PEM PKCS#8 Ed25519 private key.
    pub fn read(path: &Path) -> Result<Signer, KeyError> {
        let text = read_pem(path)?;
        let key = SigningKey::from_pkcs8_pem(&text)
            .map_err(|e| wrong_pem(path, &text, PRIVATE_PEM_LABEL, &e.to_string()))?;
        Ok(Signer {
            keyid: keyid_of(&key.verifying_key()),
            key,
            path: path.to_path_buf(),
        })
    }

    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A DSSE envelope of `body`, signed by this key.
    pub fn envelope(&self, payload_type: &str, body: &[u8]) -> Envelope {
        let sig = self.key.sign(&pae(payload_type, body));
        Envelope {
            payload: base64::engine::general_purpose::STANDARD.encode(body),
            payload_type: payload_type.to_string(),
            signatures: vec![EnvelopeSignature {
                keyid: self.keyid.clone(),
                sig: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
            }],
        }
    }
}

/// A public key read from a file, to check signatures with.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: VerifyingKey,
    keyid: String,
}

impl PublicKey {
    /// Reads a PEM SubjectPublicKeyInfo Ed25519 public key.
    pub fn read(path: &Path) -> Result<PublicKey, KeyError> {
        let text = read_pem(path)?;
        let key = VerifyingKey::from_public_key_pem(&text)
            .map_err(|e| wrong_pem(path, &text, PUBLIC_PEM_LABEL, &e.to_string()))?;
        Ok(PublicKey {
            keyid: keyid_of(&key),
            key,
        })
    }

    pub fn keyid(&self) -> &str {
        &self.keyid
    }
}

/// DSSE's pre-authentication encoding: what is signed.
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A DSSE envelope, field for field as the specification names them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// The statement, standard base64.
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    /// The Ed25519 signature of the PAE, standard base64.
    pub sig: String,
}

/// Why an envelope does not verify with a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("the envelope has no signature")]
    NoSignature,
    #[error("the payload is not valid base64: {0}")]
    Payload(String),
    #[error("signed by key id {found}, not by this key (key id {expected}): wrong public key?")]
    KeyIdMismatch { found: String, expected: String },
    #[error("the signature does not verify with this key (key id {keyid}): the statement was changed after it was signed, or another key signed it")]
    Invalid { keyid: String },
}

impl Envelope {
    /// The signed body (the statement's bytes).
    pub fn body(&self) -> Result<Vec<u8>, SignatureProblem> {
        base64::engine::general_purpose::STANDARD
            .decode(self.payload.as_bytes())
            .map_err(|e| SignatureProblem::Payload(e.to_string()))
    }

    /// Ok when one signature whose key id is this key's (or that names none) verifies
    /// over the PAE of the payload type and body. Strict verification: no malleable
    /// or small-order signatures.
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureProblem> {
        if self.signatures.is_empty() {
            return Err(SignatureProblem::NoSignature);
        }
        let body = self.body()?;
        let message = pae(&self.payload_type, &body);
        let mut candidates = self
            .signatures
            .iter()
            .filter(|s| s.keyid.is_empty() || s.keyid == key.keyid)
            .peekable();
        if candidates.peek().is_none() {
            let found: Vec<&str> = self.signatures.iter().map(|s| s.keyid.as_str()).collect();
            return Err(SignatureProblem::KeyIdMismatch {
                found: found.join(", "),
                expected: key.keyid.clone(),
            });
        }
        let verifies = candidates.any(|s| {
            base64::engine::general_purpose::STANDARD
                .decode(s.sig.as_bytes())
                .ok()
                .and_then(|bytes| Signature::from_slice(&bytes).ok())
                .is_some_and(|sig| key.key.verify_strict(&message, &sig).is_ok())
        });
        if verifies {
            Ok(())
        } else {
            Err(SignatureProblem::Invalid {
                keyid: key.keyid.clone(),
            })
        }
    }
}

/// A new key pair: `PREFIX.key` (private, mode 0600) and `PREFIX.pub`. Neither file
/// may exist already; each is written whole (temp file, then a rename that refuses
/// to replace anything). Returns both paths and the key id.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf, String), KeyError> {
    let private = with_suffix(prefix, "key");
    let public = with_suffix(prefix, "pub");
    for path in [&private, &public] {
        if path.symlink_metadata().is_ok() {
            return Err(KeyError::Exists { path: path.clone() });
        }
    }
    let mut seed = [0u8; ed25519_dalek::SECRET_KEY_LENGTH];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let invalid = |path: &Path, e: String| KeyError::Invalid {
        path: path.to_path_buf(),
        what: format!("cannot encode the new key: {e}"),
    };
    // PKCS#8 v1, the secret alone, as `openssl genpkey` writes it: OpenSSL 3.0 (and
    // so Python's cryptography on Debian 12) refuses the v2 form with the public key.
    let private_pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(Default::default())
    .map_err(|e| invalid(&private, e.to_string()))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| invalid(&public, e.to_string()))?;
    write_new(&private, private_pem.as_bytes(), 0o600)?;
    write_new(&public, public_pem.as_bytes(), 0o644)?;
    Ok((private, public, keyid_of(&key.verifying_key())))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_os_string();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes a file that must not exist, with `mode`, whole or not at all. The temp
/// file is created 0600, so a private key is never readable by others, even briefly.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let fail = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            fail(e.error)
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DSSE's own worked example (protocol.md): type "http://example.com/HelloWorld",
    /// body "hello world".
    #[test]
    fn pae_matches_the_dsse_specification() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ".to_vec());
    }

    #[test]
    fn keygen_writes_a_pair_that_signs_and_verifies_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("ci");
        let (private, public, keyid) = keygen(&prefix).unwrap();
        assert_eq!(private, dir.path().join("ci.key"));
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let private_text = std::fs::read_to_string(&private).unwrap();
        assert!(private_text.starts_with("-----BEGIN PRIVATE KEY-----"));
        let public_text = std::fs::read_to_string(&public).unwrap();
        assert!(public_text.starts_with("-----BEGIN PUBLIC KEY-----"));

        let signer = Signer::read(&private).unwrap();
        let key = PublicKey::read(&public).unwrap();
        assert_eq!(signer.keyid(), keyid);
        assert_eq!(key.keyid(), keyid);
        assert_eq!(keyid.len(), 64);

        let envelope = signer.envelope(IN_TOTO_PAYLOAD_TYPE, b"{\"a\":1}");
        assert_eq!(envelope.signatures[0].keyid, keyid);
        envelope.verify(&key).unwrap();
        assert_eq!(envelope.body().unwrap(), b"{\"a\":1}");

        // A changed body, or a changed payload type, no longer verifies.
        let mut changed = envelope.clone();
        changed.payload = base64::engine::general_purpose::STANDARD.encode(b"{\"a\":2}");
        assert!(matches!(
            changed.verify(&key),
            Err(SignatureProblem::Invalid { .. })
        ));
        let mut retyped = envelope.clone();
        retyped.payload_type = "application/json".into();
        assert!(retyped.verify(&key).is_err());

        // Another key: its key id does not match; with no key id, the signature fails.
        let (_, other_public, _) = keygen(&dir.path().join("other")).unwrap();
        let other = PublicKey::read(&other_public).unwrap();
        let err = envelope.verify(&other).unwrap_err();
        assert!(
            matches!(err, SignatureProblem::KeyIdMismatch { .. }),
            "{err}"
        );
        let mut anonymous = envelope.clone();
        anonymous.signatures[0].keyid.clear();
        assert!(matches!(
            anonymous.verify(&other),
            Err(SignatureProblem::Invalid { .. })
        ));
        anonymous.verify(&key).unwrap();

        let err = keygen(&prefix).unwrap_err().to_string();
        assert!(
            err.contains("ci.key") && err.contains("never overwrites"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&private).unwrap(), private_text);
    }

    #[test]
    fn key_files_that_are_not_what_was_asked_for_say_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public, _) = keygen(&dir.path().join("k")).unwrap();

        let err = Signer::read(&public).unwrap_err().to_string();
        assert!(
            err.contains("k.pub") && err.contains("this is a public key"),
            "{err}"
        );
        let err = PublicKey::read(&private).unwrap_err().to_string();
        assert!(
            err.contains("k.key") && err.contains("this is a private key"),
            "{err}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let err = Signer::read(&garbage).unwrap_err().to_string();
        assert!(
            err.contains("garbage.pem") && err.contains("no PEM block"),
            "{err}"
        );

        // A key of another algorithm in the same armour (here X25519) is not Ed25519.
        let x25519 = dir.path().join("x25519.pem");
        std::fs::write(
            &x25519,
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VuBCIEIA==\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = Signer::read(&x25519).unwrap_err().to_string();
        assert!(
            err.contains("x25519.pem") && err.contains("not an Ed25519 key"),
            "{err}"
        );

        let ssh = dir.path().join("id_ed25519");
        std::fs::write(
            &ssh,
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = Signer::read(&ssh).unwrap_err().to_string();
        assert!(err.contains("OPENSSH PRIVATE KEY"), "{err}");

        let missing = dir.path().join("missing.key");
        let err = Signer::read(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.key"), "{err}");
    }
}
