//! The verifier: the only source of [`VerifiedManifest`] and [`VerifiedBundle`].

use crate::Digest;
use crate::keys::{KeyId, TrustStore};
use crate::limits::Limits;
use crate::manifest::{FileEntry, Manifest};

use super::BundleError;
use super::format::{BUNDLE_DOMAIN, parse_head};

/// Checks bundles against a trust store and size limits.
#[derive(Debug, Clone)]
pub struct Verifier<'a> {
    trust: &'a TrustStore,
    limits: Limits,
}

/// A head whose signature verified and whose manifest passed validation. Chunks can be
/// checked against it one by one as they arrive (the resumable download path).
#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    manifest: Manifest,
    digest: Digest,
    key_id: KeyId,
    head: Vec<u8>,
    limits: Limits,
}

/// A file of a verified bundle.
#[derive(Debug, Clone)]
pub struct VerifiedFile {
    /// Its manifest entry.
    pub entry: FileEntry,
    /// Its content (digest checked).
    pub bytes: Vec<u8>,
}

/// A bundle that passed every check. No public constructor: only the verifier makes one,
/// so code that takes a `VerifiedBundle` (the installer) can't be handed unverified bytes.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    manifest: Manifest,
    digest: Digest,
    key_id: KeyId,
    head: Vec<u8>,
    payload: Vec<u8>,
    files: Vec<VerifiedFile>,
}

impl<'a> Verifier<'a> {
    /// A verifier with default limits.
    pub fn new(trust: &'a TrustStore) -> Self {
        Self::with_limits(trust, Limits::default())
    }

    /// A verifier with explicit limits.
    pub fn with_limits(trust: &'a TrustStore, limits: Limits) -> Self {
        Self { trust, limits }
    }

    /// Verifies a complete head (`head_len` bytes, nothing more).
    pub fn verify_head(&self, head: &[u8]) -> Result<VerifiedManifest, BundleError> {
        let (raw, len) = parse_head(head, &self.limits)?;
        if len != head.len() {
            return Err(BundleError::TrailingBytes {
                extra: (head.len() - len) as u64,
            });
        }
        let key = self
            .trust
            .get(&raw.key_id)
            .ok_or_else(|| BundleError::UnknownKey(raw.key_id.clone()))?;
        if !key.verify(BUNDLE_DOMAIN, raw.manifest, raw.signature) {
            return Err(BundleError::BadSignature(raw.key_id));
        }
        let manifest: Manifest = serde_json::from_slice(raw.manifest)
            .map_err(|e| BundleError::ManifestJson(e.to_string()))?;
        manifest.validate(&self.limits)?;
        Ok(VerifiedManifest {
            digest: Digest::of(raw.manifest),
            key_id: raw.key_id,
            manifest,
            head: head.to_vec(),
            limits: self.limits.clone(),
        })
    }

    /// Verifies a whole bundle file.
    pub fn verify_bundle(&self, bytes: &[u8]) -> Result<VerifiedBundle, BundleError> {
        let (_, len) = parse_head(bytes, &self.limits)?;
        let vm = self.verify_head(&bytes[..len])?;
        let payload = &bytes[len..];
        let declared = vm.manifest.payload.compressed_size;
        let got = payload.len() as u64;
        if got < declared {
            return Err(BundleError::Truncated {
                what: "payload",
                needed: declared,
                available: got,
            });
        }
        if got > declared {
            return Err(BundleError::TrailingBytes {
                extra: got - declared,
            });
        }
        let cs = vm.manifest.payload.chunk_size as usize;
        vm.assemble(payload.chunks(cs))
    }
}

impl VerifiedManifest {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle digest (SHA-256 of the manifest bytes).
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The key that signed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The head bytes exactly as verified.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Refuses the bundle unless it is the one a directive asked for.
    pub fn expect_digest(self, expected: Digest) -> Result<Self, BundleError> {
        if self.digest == expected {
            Ok(self)
        } else {
            Err(BundleError::DigestMismatch {
                expected,
                actual: self.digest,
            })
        }
    }

    /// Number of payload chunks.
    pub fn chunk_count(&self) -> u32 {
        self.manifest.payload.chunks.len() as u32
    }

    /// Checks one chunk's length and digest.
    pub fn check_chunk(&self, index: u32, bytes: &[u8]) -> Result<(), BundleError> {
        let range = self
            .manifest
            .chunk_range(index)
            .ok_or(BundleError::NoSuchChunk {
                index,
                count: self.manifest.payload.chunks.len(),
            })?;
        let expected = range.end - range.start;
        if bytes.len() as u64 != expected {
            return Err(BundleError::ChunkSize {
                index,
                expected,
                got: bytes.len() as u64,
            });
        }
        if Digest::of(bytes) != self.manifest.payload.chunks[index as usize] {
            return Err(BundleError::ChunkDigest { index });
        }
        Ok(())
    }

    /// Checks every chunk (in order), inflates with the cap, checks every file.
    pub fn assemble<'c>(
        self,
        chunks: impl IntoIterator<Item = &'c [u8]>,
    ) -> Result<VerifiedBundle, BundleError> {
        let p = &self.manifest.payload;
        let mut payload = Vec::with_capacity(p.compressed_size.min(64 << 20) as usize);
        let mut n = 0u32;
        for c in chunks {
            if n as usize >= p.chunks.len() {
                return Err(BundleError::TrailingBytes {
                    extra: c.len() as u64,
                });
            }
            self.check_chunk(n, c)?;
            payload.extend_from_slice(c);
            n += 1;
        }
        if (n as usize) < p.chunks.len() {
            return Err(BundleError::Truncated {
                what: "payload",
                needed: p.compressed_size,
                available: payload.len() as u64,
            });
        }
        let raw =
            crate::capped::decompress(&payload, p.uncompressed_size, self.limits.max_payload)?;
        let mut files = Vec::with_capacity(self.manifest.files.len());
        let mut off = 0usize;
        for entry in &self.manifest.files {
            // Sizes sum to uncompressed_size (validated) and raw has exactly that length.
            let bytes = raw[off..off + entry.size as usize].to_vec();
            off += entry.size as usize;
            if Digest::of(&bytes) != entry.sha256 {
                return Err(BundleError::FileDigest {
                    name: entry.name.clone(),
                });
            }
            files.push(VerifiedFile {
                entry: entry.clone(),
                bytes,
            });
        }
        Ok(VerifiedBundle {
            manifest: self.manifest,
            digest: self.digest,
            key_id: self.key_id,
            head: self.head,
            payload,
            files,
        })
    }
}

impl VerifiedBundle {
    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The bundle digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The key that signed it.
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// All files, in manifest order.
    pub fn files(&self) -> &[VerifiedFile] {
        &self.files
    }

    /// A file by name.
    pub fn file(&self, name: &str) -> Option<&VerifiedFile> {
        self.files.iter().find(|f| f.entry.name == name)
    }

    /// The ONNX model bytes.
    pub fn model_bytes(&self) -> &[u8] {
        self.files
            .iter()
            .find(|f| f.entry.role == crate::manifest::FileRole::Model)
            .map(|f| f.bytes.as_slice())
            .unwrap_or_default()
    }

    /// The baseline profile bytes, if the bundle has one.
    pub fn baseline_bytes(&self) -> Option<&[u8]> {
        let b = self.manifest.baseline.as_ref()?;
        self.file(&b.file).map(|f| f.bytes.as_slice())
    }

    /// The self-test samples, parsed and checked against the contract (empty when the
    /// bundle has none). The file is digest-verified; its size is bounded by the payload
    /// cap.
    pub fn self_tests(&self) -> Result<Vec<crate::manifest::SelfTestSample>, BundleError> {
        let Some(r) = self.manifest.self_test.as_ref() else {
            return Ok(Vec::new());
        };
        let bytes = self
            .file(&r.file)
            .map(|f| f.bytes.as_slice())
            .unwrap_or_default();
        let t: crate::manifest::SelfTests = serde_json::from_slice(bytes).map_err(|e| {
            BundleError::Manifest(crate::manifest::ManifestError::SelfTest {
                index: 0,
                reason: format!("self-test file is not valid JSON: {e}"),
            })
        })?;
        t.validate(&self.manifest.contract)?;
        Ok(t.samples)
    }

    /// The canonical bundle file (head + payload), e.g. to keep in an install slot and
    /// re-verify at start-up.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.head.len() + self.payload.len());
        v.extend_from_slice(&self.head);
        v.extend_from_slice(&self.payload);
        v
    }

    /// Total bundle file size.
    pub fn size(&self) -> u64 {
        (self.head.len() + self.payload.len()) as u64
    }

    /// Head length.
    pub fn head_len(&self) -> usize {
        self.head.len()
    }
}
