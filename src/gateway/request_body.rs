//! A request's body as the gateway's handler reads it: nothing, the bytes of an HTTP/1.1
//! connection of the gateway's own server (`super::h1_server`), or an HTTP/2 stream's (hyper's).

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::io::poll_read_buf;

use super::{
    h1::{Decoded, Decoder},
    invoke::BoxError,
    outbox::Outbox,
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
    #[error("the client sent nothing of the body for {0:?}")]
    Stalled(Duration),
}

/// A request's body.
pub enum RequestBody {
    /// The request has no body (no Content-Length or zero, no Transfer-Encoding).
    Empty,
    /// Boxed: a body is the less common case, and every request's futures hold this type.
    Http1(Box<Http1Body>),
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

/// What a client is told before it sends a body it asked to send with `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// A body read must make progress within this: a client that stops sending holds its
/// connection and its request, not the server.
const BODY_STALL: Duration = Duration::from_secs(30);

/// The body of a request on one of the gateway's HTTP/1.1 connections. It holds the
/// connection's reading side while it is read and hands it back at its end, so a body read to
/// the end leaves the connection fit for the next request; one that is not leaves it to be
/// closed.
pub struct Http1Body {
    /// `None` once handed back.
    reader: Option<Reader>,
    decoder: Decoder,
    read_back: ReadBack,
    /// Where `100 Continue` goes, until it has gone: only when the body is first read, so a
    /// request answered without its body (no route, refused, too large) is not sent.
    expecting: Option<Outbox>,
    /// Armed while a read waits.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    failed: bool,
}

impl Http1Body {
    pub(super) fn new(
        reader: Reader,
        decoder: Decoder,
        read_back: ReadBack,
        expecting: Option<Outbox>,
    ) -> Self {
        Self {
            reader: Some(reader),
            decoder,
            read_back,
            expecting,
            stall: None,
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
            // The client waits for this before it sends the body; it goes out after any answer
            // still waiting to be written on the connection, before the read below waits.
            if let Some(outbox) = self.expecting.take()
                && let Err(e) = outbox.send_slice(CONTINUE)
            {
                return Poll::Ready(Some(Err(e.into())));
            }
            if reader.buf.capacity() - reader.buf.len() < READ_CHUNK / 8 {
                reader.buf.reserve(READ_CHUNK);
            }
            match poll_read_buf(Pin::new(&mut reader.half), cx, &mut reader.buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Some(Err(RequestBodyError::Incomplete))),
                Poll::Ready(Ok(_)) => self.stall = None,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Pending => {
                    let stall = self
                        .stall
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(BODY_STALL)));
                    ready!(stall.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(RequestBodyError::Stalled(BODY_STALL))));
                }
            }
        }
    }

    /// Hands the reading side back to the connection.
    fn give_back(&mut self, finished: bool) {
        self.expecting = None;
        if let Some(reader) = self.reader.take()
            && let Ok(mut slot) = self.read_back.lock()
        {
            *slot = Some((reader, finished));
        }
    }
}

impl Drop for Http1Body {
    /// A body left unread may still be whole in the buffer (a small one sent with its head):
    /// then the connection can go on, as it would had the body been read.
    fn drop(&mut self) {
        let mut finished = false;
        if let Some(reader) = &mut self.reader {
            while let Ok(Decoded::Data(_)) = self.decoder.decode(&mut reader.buf) {}
            finished = self.decoder.is_end();
        }
        self.give_back(finished);
    }
}
