//! Response bodies for blobs: a [`BlobBody`] (stored or being filled; see `cache::body`) handed
//! to actix as it reads, sized when its length is known.

use std::ops::Range;
use std::sync::Arc;

use actix_web::body::{BodyStream, BoxBody, MessageBody, SizedStream};
use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};

use crate::cache::BlobBody;
use crate::metrics::{self, Metrics};

/// The whole blob; sized when its length is known.
pub fn whole(blob: BlobBody, served: &Arc<Metrics>) -> BoxBody {
    let size = blob.size();
    let chunks = counted(blob.read_all(), served);
    match size {
        Some(size) => SizedStream::new(size, chunks).boxed(),
        None => BodyStream::new(chunks).boxed(),
    }
}

/// Bytes `range` of the blob, which the caller checked against its length.
pub fn part(blob: BlobBody, range: Range<u64>, served: &Arc<Metrics>) -> BoxBody {
    let size = range.end - range.start;
    SizedStream::new(size, counted(blob.read(range), served)).boxed()
}

/// Counts what goes out in `berth_blob_bytes_served_total`.
fn counted(
    chunks: impl Stream<Item = Result<Bytes, std::io::Error>> + 'static,
    served: &Arc<Metrics>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + 'static {
    let served = Arc::clone(served);
    chunks.inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            metrics::add(&served.blob_bytes_served, chunk.len() as u64);
        }
    })
}

/// An empty body that still declares `size` bytes, for HEAD answers.
pub fn head_only(size: u64) -> BoxBody {
    SizedStream::new(size, empty()).boxed()
}

fn empty() -> impl Stream<Item = Result<Bytes, std::io::Error>> {
    stream::empty()
}
