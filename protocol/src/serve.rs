//! Serving bundle parts for the pull protocol (sans-IO): given a bundle file and a chunk
//! request, which frames to send. The bridge wraps this with caching and rate limits;
//! tests use it directly as a minimal bundle server.

use crate::Digest;
use crate::bundle::{BundleError, parse_head};
use crate::limits::{HEAD_PIECE_SIZE, Limits};
use crate::manifest::Manifest;
use crate::wire::{ChunkFrame, ChunkRequest, PartKind};

/// A bundle file indexed for serving.
#[derive(Debug, Clone)]
pub struct ServedBundle {
    bytes: Vec<u8>,
    digest: Digest,
    head_len: usize,
    chunk_size: usize,
    chunks: u32,
}

impl ServedBundle {
    /// Indexes a bundle file the server itself produced (structure and manifest are parsed;
    /// the signature is the device's business).
    pub fn new(bytes: Vec<u8>) -> Result<Self, BundleError> {
        let (head, head_len) = parse_head(&bytes, &Limits::default())?;
        let manifest: Manifest = serde_json::from_slice(head.manifest)
            .map_err(|e| BundleError::ManifestJson(e.to_string()))?;
        let digest = Digest::of(head.manifest);
        Ok(Self {
            digest,
            head_len,
            chunk_size: manifest.payload.chunk_size.max(1) as usize,
            chunks: manifest.payload.chunks.len() as u32,
            bytes,
        })
    }

    /// Bundle digest.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Head length.
    pub fn head_len(&self) -> usize {
        self.head_len
    }

    /// Number of head pieces.
    pub fn head_pieces(&self) -> u32 {
        self.head_len.div_ceil(HEAD_PIECE_SIZE as usize) as u32
    }

    /// Number of payload chunks.
    pub fn chunk_count(&self) -> u32 {
        self.chunks
    }

    /// Whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// One part's bytes, if it exists.
    pub fn part(&self, kind: PartKind, index: u32) -> Option<&[u8]> {
        let (start, end) = match kind {
            PartKind::Head => {
                let s = index as usize * HEAD_PIECE_SIZE as usize;
                (s, (s + HEAD_PIECE_SIZE as usize).min(self.head_len))
            }
            PartKind::Chunk => {
                let s = self.head_len + index as usize * self.chunk_size;
                (s, (s + self.chunk_size).min(self.bytes.len()))
            }
            PartKind::Error => return None,
        };
        let limit = if kind == PartKind::Head {
            self.head_len
        } else {
            self.bytes.len()
        };
        (start < end && end <= limit).then(|| &self.bytes[start..end])
    }

    /// The frames answering `req` (an error frame for each part that does not exist).
    pub fn respond(&self, req: &ChunkRequest) -> Vec<ChunkFrame> {
        let parts = req
            .head
            .iter()
            .map(|&i| (PartKind::Head, i))
            .chain(req.chunks.iter().map(|&i| (PartKind::Chunk, i)));
        parts
            .map(|(kind, index)| match self.part(kind, index) {
                Some(d) => ChunkFrame {
                    bundle: self.digest,
                    kind,
                    index,
                    data: d.to_vec(),
                },
                None => error_frame(self.digest, index, &format!("no {kind:?} part {index}")),
            })
            .collect()
    }
}

/// An error frame for `bundle` (e.g. unknown bundle, rate limited).
pub fn error_frame(bundle: Digest, index: u32, reason: &str) -> ChunkFrame {
    ChunkFrame {
        bundle,
        kind: PartKind::Error,
        index,
        data: reason.as_bytes().to_vec(),
    }
}

/// Start of an error frame's reason that says the part will *never* be served as asked
/// (e.g. it does not fit the broker's packet limit): the device gives up on the bundle
/// with the reason instead of asking again. Other error frames mean "not now".
pub const FATAL_PREFIX: &str = "fatal: ";

/// An error frame the device must not retry (see [`FATAL_PREFIX`]).
pub fn fatal_frame(bundle: Digest, index: u32, reason: &str) -> ChunkFrame {
    error_frame(bundle, index, &format!("{FATAL_PREFIX}{reason}"))
}
