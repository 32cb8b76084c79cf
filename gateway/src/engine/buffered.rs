//! A downstream connection that collects small writes until pingora flushes them.
//!
//! pingora's own listeners give every accepted stream a write buffer of one MSS, so a response
//! header and a small body leave in one `sendto` (and, over TLS, in one record). Streams made
//! from a `TcpStream` outside those listeners, as our accept loops make them, have none, and
//! pingora's buffer setter is crate-private: without this wrapper every response costs one more
//! system call. pingora flushes where the data must go out (after a final body chunk, after
//! 1xx headers, for streamed bodies), which is what makes a buffer safe here.
//!
//! It also lets the accept loop wait for a keep-alive connection's next request without a
//! pingora session (see `listeners::serve_http1`): `try_peek` reads the first bytes, over TLS
//! too, and keeps them for the next read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::l4::stream::DEFAULT_L4_WRITE_BUFFER_SIZE;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// What a stream needs to be handed to pingora, as a bound (pingora's `IO` is that set).
pub trait Downstream:
    AsyncRead
    + AsyncWrite
    + Shutdown
    + UniqueID
    + Ssl
    + GetTimingDigest
    + GetProxyDigest
    + GetSocketDigest
    + Peek
    + Unpin
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
}

impl<T> Downstream for T where
    T: AsyncRead
        + AsyncWrite
        + Shutdown
        + UniqueID
        + Ssl
        + GetTimingDigest
        + GetProxyDigest
        + GetSocketDigest
        + Peek
        + Unpin
        + Send
        + Sync
        + std::fmt::Debug
        + 'static
{
}

/// `S` with a write buffer of pingora's default size, and the bytes `try_peek` read.
#[derive(Debug)]
pub struct Buffered<S: Downstream> {
    stream: BufWriter<S>,
    peeked: Vec<u8>,
}

impl<S: Downstream> Buffered<S> {
    pub fn new(stream: S) -> Self {
        Buffered {
            stream: BufWriter::with_capacity(DEFAULT_L4_WRITE_BUFFER_SIZE, stream),
            peeked: Vec::new(),
        }
    }
}

impl<S: Downstream> AsyncRead for Buffered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.peeked.is_empty() {
            let n = self.peeked.len().min(buf.remaining());
            buf.put_slice(&self.peeked[..n]);
            self.peeked.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(self.stream.get_mut()).poll_read(cx, buf)
    }
}

impl<S: Downstream> AsyncWrite for Buffered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: Downstream> Shutdown for Buffered<S> {
    async fn shutdown(&mut self) {
        // What is still buffered goes out before the connection closes.
        let _ = self.stream.flush().await;
        Shutdown::shutdown(self.stream.get_mut()).await
    }
}

impl<S: Downstream> UniqueID for Buffered<S> {
    fn id(&self) -> UniqueIDType {
        self.stream.get_ref().id()
    }
}

impl<S: Downstream> Ssl for Buffered<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.stream.get_ref().get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.stream.get_ref().get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.stream.get_ref().selected_alpn_proto()
    }
}

impl<S: Downstream> GetTimingDigest for Buffered<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.stream.get_ref().get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.stream.get_ref().get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.stream.get_ref().get_write_pending_time()
    }
}

impl<S: Downstream> GetProxyDigest for Buffered<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.stream.get_ref().get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.stream.get_mut().set_proxy_digest(digest)
    }
}

impl<S: Downstream> GetSocketDigest for Buffered<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.stream.get_ref().get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.stream.get_mut().set_socket_digest(digest)
    }
}

#[async_trait]
impl<S: Downstream> Peek for Buffered<S> {
    /// Waits for `buf.len()` bytes (decrypted, over TLS) and keeps them for the next read.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.peeked.len() < buf.len() {
            let have = self.peeked.len();
            self.peeked.resize(buf.len(), 0);
            if let Err(e) = self
                .stream
                .get_mut()
                .read_exact(&mut self.peeked[have..])
                .await
            {
                self.peeked.truncate(have);
                return Err(e);
            }
        }
        buf.copy_from_slice(&self.peeked[..buf.len()]);
        Ok(true)
    }
}
