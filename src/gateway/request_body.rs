//! A request's body as the gateway's handler reads it: nothing, the bytes of an HTTP/1.1
//! connection of the gateway's own server (`super::h1_server`), or an HTTP/2 stream's (hyper's).

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::io::poll_read_buf;

use super::{
    h1::{Decoded, Decoder},
    invoke::BoxError,
};

/// How much a read asks for at least.
const READ_CHUNK: usize = 8 * 1024;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("bad request body: {0}")]
    Malformed(String),
    #[error("the client closed the connection before the end of the body")]
    Incomplete,
    #[error("reading the request body failed: {0}")]
    Io(#[from] io::Error),
}

/// A request's body.
pub enum RequestBody {
    /// The request has no body (no Content-Length or zero, no Transfer-Encoding).
    Empty,
    Http1(Http1Body),
    Http2(Incoming),
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Http1(body) => body.poll_next(cx).map_err(Into::into),
            Self::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Http1(body) => body.decoder.is_end(),
            Self::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Http1(body) => body.decoder.size_hint(),
            Self::Http2(body) => body.size_hint(),
        }
    }
}

/// The reading side of a connection and what was read from it but not yet consumed.
pub(super) struct Reader {
    pub half: OwnedReadHalf,
    pub buf: BytesMut,
}

/// Where a body hands the connection's reading side back: with `true` once it was read to its
/// end (what follows in the buffer is the next request), `false` when it was dropped before.
pub(super) type ReadBack = Arc<Mutex<Option<(Reader, bool)>>>;

/// The body of a request on one of the gateway's HTTP/1.1 connections. It holds the
/// connection's reading side while it is read and hands it back at its end, so a body read to
/// the end leaves the connection fit for the next request; one that is not leaves it to be
/// closed.
pub struct Http1Body {
    /// `None` once handed back.
    reader: Option<Reader>,
    decoder: Decoder,
    read_back: ReadBack,
    failed: bool,
}

impl Http1Body {
    pub(super) fn new(reader: Reader, decoder: Decoder, read_back: ReadBack) -> Self {
        Self {
            reader: Some(reader),
            decoder,
            read_back,
            failed: false,
        }
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let result = ready!(self.poll_data(cx));
        if result.as_ref().is_some_and(Result::is_err) {
            self.failed = true;
        }
        Poll::Ready(result.map(|r| r.map(Frame::data)))
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, RequestBodyError>>> {
        let Some(reader) = &mut self.reader else {
            return Poll::Ready(None);
        };
        loop {
            match self.decoder.decode(&mut reader.buf) {
                Ok(Decoded::Data(data)) => {
                    if self.decoder.is_end() {
                        self.give_back(true);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(Decoded::End) => {
                    self.give_back(true);
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    return Poll::Ready(Some(Err(RequestBodyError::Malformed(e.to_string()))));
                }
            }
            if reader.buf.capacity() - reader.buf.len() < READ_CHUNK / 8 {
                reader.buf.reserve(READ_CHUNK);
            }
            match ready!(poll_read_buf(
                Pin::new(&mut reader.half),
                cx,
                &mut reader.buf
            )) {
                Ok(0) => return Poll::Ready(Some(Err(RequestBodyError::Incomplete))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    /// Hands the reading side back to the connection.
    fn give_back(&mut self, finished: bool) {
        if let Some(reader) = self.reader.take()
            && let Ok(mut slot) = self.read_back.lock()
        {
            *slot = Some((reader, finished));
        }
    }
}

impl Drop for Http1Body {
    fn drop(&mut self) {
        self.give_back(false);
    }
}
