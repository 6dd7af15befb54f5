//! Verified layer streams: one thread reads, hashes and decompresses a layer blob while the
//! calling thread applies the tar stream it produces.
//!
//! The blob is checked against its descriptor's size and digest, and the uncompressed stream
//! against the layer's `diff_id`, both over the whole stream (read to its end). The caller
//! commits what it applied only after [`stream_layer`] returns `Ok`.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use sha2::{Digest as _, Sha256};

use super::source::{BlobReader, Image, Layer};
use super::{Compression, Digest, ImageError, UnpackLimits};

const CHUNK: usize = 256 << 10;
/// Chunks in flight between the two threads (a few MiB).
const QUEUE: usize = 16;

/// Streams `layer` of `image` through `apply` (on this thread), verifying it on the way.
///
/// # Errors
/// A blob of the wrong size or digest, whatever else failed on the way; otherwise the first
/// failure: a compression that contradicts the media type, a limit, a read or decompression
/// error, whatever `apply` returned, or a diff_id mismatch.
pub(crate) fn stream_layer(
    image: &Image,
    layer: &Layer,
    limits: &UnpackLimits,
    apply: impl FnOnce(&mut dyn Read) -> Result<(), ImageError>,
) -> Result<(), ImageError> {
    let reader = image.open_layer(layer)?;
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(reader, layer, limits.max_bytes, tx));
        let mut stream = ChannelReader { rx: Some(rx), chunk: Vec::new(), pos: 0 };
        let applied = apply(&mut stream);
        // Let a producer blocked on a full queue see that nobody reads any more.
        stream.rx = None;
        let produced = producer.join().unwrap_or_else(|_| {
            Err(ImageError::format(format!("layer {}", layer.diff_id), "the decompressing thread panicked"))
        });
        match (produced, applied) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(None), Ok(())) => {
                Err(ImageError::format(format!("layer {}", layer.diff_id), "stream ended early"))
            }
            (Ok(Some(actual)), Ok(())) if actual != layer.diff_id => Err(ImageError::Mismatch {
                what: format!("layer {} (diff_id)", layer.diff_id),
                expected: layer.diff_id.clone(),
                actual,
            }),
            (Ok(Some(_)), Ok(())) => Ok(()),
        }
    })
}

/// Reads, verifies and decompresses the blob; returns the uncompressed stream's digest, or
/// `None` if the consumer stopped reading first.
///
/// Whatever stops the stream early (a decompression error, or the applier refusing what it
/// got), the rest of the blob is still read and hashed: a flipped byte trips the decompressor
/// or the tar reader long before the end, and the fault to report is then that the blob is not
/// the one its descriptor names (its size or digest), not the garbage it decodes to.
fn produce(
    reader: BlobReader,
    layer: &Layer,
    max_bytes: u64,
    tx: SyncSender<Vec<u8>>,
) -> Result<Option<Digest>, ImageError> {
    let what = layer.blob_name();
    // Reading stops one byte past the declared size: enough to tell that there is more.
    let cap = layer.size.map_or(u64::MAX, |s| s.saturating_add(1));
    let mut hashed = Hashing { inner: reader.take(cap), hasher: Sha256::new(), count: 0 };
    let mut buf = BufReader::with_capacity(CHUNK, &mut hashed);
    let mut sink = Sink { tx, hasher: Sha256::new(), total: 0, max: max_bytes, what: &what };
    let delivered = decompress(&mut buf, layer, &mut sink);
    // Trailing bytes after the compressed stream count towards the blob's size and digest.
    let drained = io::copy(&mut buf, &mut io::sink());
    drop(buf);
    // A blob of the wrong length cuts the compressed stream short, or adds to it.
    if let Some(size) = layer.size
        && hashed.count != size
        && (delivered.is_err() || drained.is_ok())
    {
        return Err(ImageError::Size { what, expected: size, actual: hashed.count });
    }
    if drained.is_ok()
        && let Some(digest) = &layer.digest
    {
        let actual = Digest::from_hasher(hashed.hasher);
        if &actual != digest {
            return Err(ImageError::Mismatch { what, expected: digest.clone(), actual });
        }
    }
    if !delivered? {
        return Ok(None); // the applier stopped (and has its own error)
    }
    drained.map_err(|e| read_error(&what, e))?;
    Ok(Some(Digest::from_hasher(sink.hasher)))
}

/// Checks the compression against the media type and moves the uncompressed stream to `sink`;
/// `false` if the applier stopped reading.
fn decompress(buf: &mut impl BufRead, layer: &Layer, sink: &mut Sink<'_>) -> Result<bool, ImageError> {
    let head = buf.fill_buf().map_err(|e| read_error(sink.what, e))?;
    let found = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    if let Some(declared) = layer.compression
        && declared != found
    {
        return Err(ImageError::MediaType {
            what: sink.what.to_owned(),
            media_type: layer.media_type.clone(),
            reason: format!("the content is {found:?}-compressed, the media type says {declared:?}"),
        });
    }
    match found {
        Compression::Gzip => sink.pump(&mut flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => sink
            .pump(&mut zstd::stream::read::Decoder::with_buffer(buf).map_err(|e| read_error(sink.what, e))?),
        Compression::None => sink.pump(buf),
    }
}

fn read_error(what: &str, e: io::Error) -> ImageError {
    ImageError::format(what, format!("cannot read or decompress: {e}"))
}

/// Hashes and counts what passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The uncompressed side: hashes, counts against the limit, and hands chunks to the applier.
struct Sink<'a> {
    tx: SyncSender<Vec<u8>>,
    hasher: Sha256,
    total: u64,
    max: u64,
    what: &'a str,
}

impl Sink<'_> {
    /// Moves everything from `r` to the applier; `false` if the applier stopped reading.
    fn pump(&mut self, r: &mut dyn Read) -> Result<bool, ImageError> {
        loop {
            let mut chunk = vec![0; CHUNK];
            let n = loop {
                match r.read(&mut chunk) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
            .map_err(|e| read_error(self.what, e))?;
            if n == 0 {
                return Ok(true);
            }
            self.total += n as u64;
            if self.total > self.max {
                return Err(ImageError::Limit {
                    what: format!("uncompressed bytes of {}", self.what),
                    limit: self.max,
                });
            }
            self.hasher.update(&chunk[..n]);
            chunk.truncate(n);
            if self.tx.send(chunk).is_err() {
                return Ok(false);
            }
        }
    }
}

/// The applier's side of the queue, as a `Read`.
struct ChannelReader {
    rx: Option<Receiver<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.as_ref().and_then(|rx| rx.recv().ok()) {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
