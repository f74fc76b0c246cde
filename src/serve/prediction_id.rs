//! Prediction ids: the join key between a prediction and the truth that
//! arrives later, made self-describing so that any replica can do the join
//! without a shared store (docs/quality.md, "The prediction id").
//!
//! An id is 46 bytes, base64url without padding (62 characters): format,
//! model version, issue time, the prediction (value or class index), a
//! nonce, and the first 128 bits of an HMAC-SHA256 over all of that, keyed
//! with the fleet's shared `--feedback-key-file`. HMAC (RFC 2104) is written
//! out over `sha2` with the keyed inner and outer states computed once, so
//! an id costs two SHA-256 blocks beyond the message; the RFC 4231 vectors
//! pin it in the tests.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Bytes of a decoded id, and characters of an encoded one.
pub const ID_BYTES: usize = 46;
pub const ID_CHARS: usize = 62;
/// The bytes the MAC covers; the MAC follows them.
const SIGNED_BYTES: usize = 30;
const FORMAT: u8 = 1;
/// The shortest key accepted: 256 bits, the hash's own size.
pub const MIN_KEY_BYTES: usize = 32;

/// What the model predicted, as the id carries it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Predicted {
    Value(f64),
    Class(usize),
}

/// A verified id.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionId {
    /// The artifact's model version (12 hex digits) as 6 bytes.
    pub version: [u8; 6],
    pub issued_ms: u64,
    pub predicted: Predicted,
    /// The MAC, unique per id: what the duplicate window remembers.
    pub mac: [u8; 16],
}

/// Why an id is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forged {
    /// Not 62 base64url characters.
    Encoding,
    /// Unknown format byte or prediction kind.
    Layout,
    /// The MAC does not match: forged, altered, or another key.
    Signature,
}

impl Forged {
    pub fn detail(self) -> &'static str {
        match self {
            Forged::Encoding => "not a prediction id (62 base64url characters)",
            Forged::Layout => "not a prediction id this service issues (unknown format)",
            Forged::Signature => {
                "the id's signature does not match: altered, forged, or issued with another key"
            }
        }
    }
}

/// The HMAC-SHA256 key with its inner and outer states precomputed.
#[derive(Clone)]
pub struct Key {
    inner: Sha256,
    outer: Sha256,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn new(secret: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        let pad = |byte: u8| {
            let mut padded = block;
            padded.iter_mut().for_each(|b| *b ^= byte);
            Sha256::new_with_prefix(padded)
        };
        Self {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// HMAC-SHA256 of `message`.
    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        let inner = self.inner.clone().chain_update(message).finalize();
        self.outer.clone().chain_update(inner).finalize().into()
    }

    /// Reads the key file: its bytes without trailing whitespace. Refused
    /// when it cannot be read, holds fewer than [`MIN_KEY_BYTES`], or is
    /// readable by group or others (a secret must not be; see
    /// [`private_enough`] for the one group-readable layout accepted).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let shown = path.display();
        let metadata = std::fs::metadata(path)
            .with_context(|| format!("cannot read the feedback key file {shown}"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let mode = metadata.permissions().mode() & 0o777;
            anyhow::ensure!(
                private_enough(mode, metadata.uid()),
                "the feedback key file {shown} is readable by group or others (mode {mode:04o}); it is a secret: chmod 600 {shown} (or, owned by root, at most 0640)"
            );
        }
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the feedback key file {shown}"))?;
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        anyhow::ensure!(
            end >= MIN_KEY_BYTES,
            "the feedback key file {shown} holds {end} bytes; at least {MIN_KEY_BYTES} are needed (e.g. head -c 32 /dev/urandom | base64 > {shown})"
        );
        Ok(Self::new(&bytes[..end]))
    }
}

/// Whether a key file's permission bits keep it secret: no access for
/// others, and none for the group either, unless root owns the file and
/// the group may only read it (mode 0640 or less). That second layout is
/// PostgreSQL's rule for its TLS key, and it is what a Kubernetes Secret
/// volume gives a non-root container: files owned by root, group `fsGroup`
/// (the service's own group), `defaultMode: 0440`; such a file cannot be
/// made the service user's own without an extra copying step.
fn private_enough(mode: u32, owner_uid: u32) -> bool {
    let others = mode & 0o007;
    let group = mode & 0o070;
    others == 0 && (group == 0 || (owner_uid == 0 && group == 0o040))
}

/// Issues ids: the key, and a nonce that never repeats within a process
/// (a random prefix per process, then a counter).
#[derive(Debug)]
pub struct Issuer {
    key: Key,
    prefix: [u8; 4],
    counter: AtomicU32,
}

impl Issuer {
    pub fn new(key: Key) -> Self {
        Self {
            key,
            prefix: rand::random(),
            counter: AtomicU32::new(0),
        }
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// One id, appended to `out` (62 characters).
    pub fn issue_into(
        &self,
        version: [u8; 6],
        issued_ms: u64,
        predicted: Predicted,
        out: &mut String,
    ) {
        let mut bytes = [0u8; ID_BYTES];
        bytes[0] = FORMAT;
        bytes[1..7].copy_from_slice(&version);
        bytes[7..13].copy_from_slice(&issued_ms.to_be_bytes()[2..]);
        let (kind, number) = match predicted {
            Predicted::Value(v) => (0, v),
            Predicted::Class(c) => (1, c as f64),
        };
        bytes[13] = kind;
        bytes[14..22].copy_from_slice(&number.to_be_bytes());
        bytes[22..26].copy_from_slice(&self.prefix);
        let count = self.counter.fetch_add(1, Ordering::Relaxed);
        bytes[26..30].copy_from_slice(&count.to_be_bytes());
        let mac = self.key.mac(&bytes[..SIGNED_BYTES]);
        bytes[SIGNED_BYTES..].copy_from_slice(&mac[..16]);
        URL_SAFE_NO_PAD.encode_string(bytes, out);
    }

    pub fn issue(&self, version: [u8; 6], issued_ms: u64, predicted: Predicted) -> String {
        let mut out = String::with_capacity(ID_CHARS);
        self.issue_into(version, issued_ms, predicted, &mut out);
        out
    }
}

/// Checks an id against `key` and reads it. The work is bounded whatever
/// the input: anything but 62 characters is refused before decoding.
pub fn verify(key: &Key, text: &str) -> Result<PredictionId, Forged> {
    if text.len() != ID_CHARS {
        return Err(Forged::Encoding);
    }
    let mut bytes = [0u8; ID_BYTES];
    match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
        Ok(ID_BYTES) => {}
        _ => return Err(Forged::Encoding),
    }
    let mac = key.mac(&bytes[..SIGNED_BYTES]);
    // Constant time: how much of a guess matches must not show in timing.
    let difference = mac[..16]
        .iter()
        .zip(&bytes[SIGNED_BYTES..])
        .fold(0u8, |d, (a, b)| d | (a ^ b));
    if difference != 0 {
        return Err(Forged::Signature);
    }
    if bytes[0] != FORMAT {
        return Err(Forged::Layout);
    }
    let mut version = [0u8; 6];
    version.copy_from_slice(&bytes[1..7]);
    let mut time = [0u8; 8];
    time[2..].copy_from_slice(&bytes[7..13]);
    let mut number = [0u8; 8];
    number.copy_from_slice(&bytes[14..22]);
    let number = f64::from_be_bytes(number);
    let predicted = match bytes[13] {
        0 if number.is_finite() => Predicted::Value(number),
        1 if number >= 0.0 && number.fract() == 0.0 && number < 65536.0 => {
            Predicted::Class(number as usize)
        }
        _ => return Err(Forged::Layout),
    };
    let mut tag = [0u8; 16];
    tag.copy_from_slice(&bytes[SIGNED_BYTES..]);
    Ok(PredictionId {
        version,
        issued_ms: u64::from_be_bytes(time),
        predicted,
        mac: tag,
    })
}

/// A model version (12 hex digits) as the id's 6 bytes; `None` for any
/// other string (an artifact's version is always 12 hex digits).
pub fn version_bytes(version: &str) -> Option<[u8; 6]> {
    if version.len() != 12 {
        return None;
    }
    let mut bytes = [0u8; 6];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(version.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1: 20-byte key.
        assert_eq!(
            hex(&Key::new(&[0x0b; 20]).mac(b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2: short key.
        assert_eq!(
            hex(&Key::new(b"Jefe").mac(b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&Key::new(&[0xaa; 131])
                .mac(b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    fn issuer() -> Issuer {
        Issuer::new(Key::new(&[7u8; 32]))
    }

    #[test]
    fn an_issued_id_verifies_and_carries_what_was_predicted() {
        let issuer = issuer();
        let version = version_bytes("490e9c76ff2c").unwrap();
        for predicted in [
            Predicted::Value(-152.25),
            Predicted::Value(1e300),
            Predicted::Class(0),
            Predicted::Class(5),
        ] {
            let id = issuer.issue(version, 1_767_225_600_123, predicted);
            assert_eq!(id.len(), ID_CHARS);
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let read = verify(issuer.key(), &id).unwrap();
            assert_eq!(
                (read.version, read.issued_ms, read.predicted),
                (version, 1_767_225_600_123, predicted)
            );
        }
    }

    #[test]
    fn two_rows_never_share_an_id() {
        let issuer = issuer();
        let a = issuer.issue([0; 6], 1, Predicted::Value(1.0));
        let b = issuer.issue([0; 6], 1, Predicted::Value(1.0));
        assert_ne!(a, b);
        assert_ne!(
            verify(issuer.key(), &a).unwrap().mac,
            verify(issuer.key(), &b).unwrap().mac
        );
    }

    #[test]
    fn an_altered_id_or_another_key_is_refused() {
        let issuer = issuer();
        let id = issuer.issue([1; 6], 99, Predicted::Value(3.5));
        for position in 0..ID_CHARS {
            let mut altered = id.clone().into_bytes();
            altered[position] = if altered[position] == b'A' {
                b'B'
            } else {
                b'A'
            };
            let altered = String::from_utf8(altered).unwrap();
            // The last character carries 2 padding bits: some edits there
            // decode to the same bytes and stay valid, which is fine.
            if let Ok(read) = verify(issuer.key(), &altered) {
                assert_eq!(position, ID_CHARS - 1, "{altered}");
                assert_eq!(read.predicted, Predicted::Value(3.5));
            }
        }
        let other = Key::new(&[8u8; 32]);
        assert_eq!(verify(&other, &id), Err(Forged::Signature));
    }

    #[test]
    fn garbage_is_refused_without_decoding_it() {
        let key = Key::new(&[7u8; 32]);
        for text in ["", "abc", &"A".repeat(61), &"A".repeat(63), &"é".repeat(31)] {
            assert_eq!(verify(&key, text), Err(Forged::Encoding), "{text}");
        }
        assert_eq!(verify(&key, &"!".repeat(62)), Err(Forged::Encoding));
        assert_eq!(verify(&key, &"A".repeat(62)), Err(Forged::Signature));
    }

    #[test]
    fn model_versions_round_trip_as_six_bytes() {
        assert_eq!(
            version_bytes("490e9c76ff2c"),
            Some([0x49, 0x0e, 0x9c, 0x76, 0xff, 0x2c])
        );
        for bad in ["", "none", "490e9c76ff2", "490e9c76ff2g", "490e9c76ff2cc"] {
            assert_eq!(version_bytes(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_root_owned_key_files_may_be_group_readable() {
        for mode in [0o600, 0o400, 0o700] {
            assert!(private_enough(mode, 1000), "{mode:o}, own file");
            assert!(private_enough(mode, 0), "{mode:o}, root's");
        }
        for mode in [0o640, 0o440] {
            assert!(
                private_enough(mode, 0),
                "{mode:o}, root's (a Secret volume)"
            );
            assert!(!private_enough(mode, 1000), "{mode:o}, own file: chmod 600");
        }
        for mode in [0o644, 0o604, 0o660, 0o620, 0o650, 0o666] {
            assert!(!private_enough(mode, 0), "{mode:o}, root's");
            assert!(!private_enough(mode, 1000), "{mode:o}, own file");
        }
    }

    #[test]
    fn a_key_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", "k".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = Key::load(&path).unwrap();
        assert_eq!(
            key.mac(b"x"),
            Key::new("k".repeat(32).as_bytes()).mac(b"x"),
            "the trailing newline is not part of the key"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = Key::load(&path).unwrap_err().to_string();
        assert!(error.contains("readable by group or others"), "{error}");
        std::fs::write(&path, "short\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let error = Key::load(&path).unwrap_err().to_string();
        assert!(error.contains("holds 5 bytes"), "{error}");
        let error = Key::load(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cannot read the feedback key file"),
            "{error}"
        );
    }
}
