//! Response bodies for blobs.
//!
//! A stored blob is one memory map; the body hands actix 1 MiB `Bytes` slices of it, which
//! share the mapping instead of copying through a read buffer. Measured here on a 300 MiB
//! cache hit: 0.117 s, against nginx's sendfile 0.125 s and Distribution's 0.289 s
//! (`bench/blob.sh`).

use std::sync::Arc;

use actix_web::body::{BodyStream, BoxBody, MessageBody, SizedStream};
use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};

use crate::cache::evict::ServingGuard;
use crate::cache::fill::FillReader;
use crate::metrics::{self, Metrics};

const SLICE: usize = 1024 * 1024;

/// `mapped[start..=end]` as a stream of slices of the same mapping; `guard` lives as long as
/// the body does.
pub fn mapped(
    mapped: Bytes,
    start: u64,
    end: u64,
    guard: ServingGuard,
    served: &Arc<Metrics>,
) -> BoxBody {
    let (start, end) = (start as usize, end as usize + 1);
    let size = (end - start) as u64;
    let slices = (start..end).step_by(SLICE).map(move |offset| {
        let _serving = &guard;
        Ok::<_, std::io::Error>(mapped.slice(offset..(offset + SLICE).min(end)))
    });
    SizedStream::new(size, counted(stream::iter(slices), served)).boxed()
}

/// The bytes of a fill as they arrive; sized when the length is known.
pub fn filling(reader: FillReader, size: Option<u64>, served: &Arc<Metrics>) -> BoxBody {
    let chunks = counted(reader.into_stream(), served);
    match size {
        Some(size) => SizedStream::new(size, chunks).boxed(),
        None => BodyStream::new(chunks).boxed(),
    }
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
