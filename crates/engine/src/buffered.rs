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
//! pingora session (see `listeners::serve_http1` and [`AwaitData`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;

use super::tcp::Tcp;
use pingora::protocols::l4::stream::DEFAULT_L4_WRITE_BUFFER_SIZE;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef, TlsStream};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use std::task::ready;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Writes shorter than this are collected; pingora's own listeners use the same size.
const CAPACITY: usize = DEFAULT_L4_WRITE_BUFFER_SIZE;

/// `S` with a write buffer, and the bytes `try_peek` read. The buffer is allocated on the first
/// small write and released while the connection waits for its next request, so an idle
/// keep-alive connection does not hold it.
#[derive(Debug)]
pub struct Buffered<S: IO + 'static> {
    stream: S,
    out: Vec<u8>,
    peeked: Vec<u8>,
}

impl<S: IO + 'static> Buffered<S> {
    pub fn new(stream: S) -> Self {
        Buffered {
            stream,
            out: Vec::new(),
            peeked: Vec::new(),
        }
    }

    /// Writes out everything buffered.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0;
        let result = loop {
            if written == self.out.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.stream).poll_write(cx, &self.out[written..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.out.drain(..written);
        result
    }
}

impl<S: IO + 'static> AsyncRead for Buffered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.peeked.is_empty() {
            let n = this.peeked.len().min(buf.remaining());
            buf.put_slice(&this.peeked[..n]);
            this.peeked.drain(..n);
            if this.peeked.is_empty() {
                this.peeked = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: IO + 'static> AsyncWrite for Buffered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() + buf.len() > CAPACITY {
            ready!(this.poll_write_out(cx))?;
        }
        if buf.len() >= CAPACITY {
            return Pin::new(&mut this.stream).poll_write(cx, buf);
        }
        if this.out.capacity() == 0 {
            this.out.reserve_exact(CAPACITY);
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[async_trait]
impl<S: IO + 'static> Shutdown for Buffered<S> {
    async fn shutdown(&mut self) {
        // What is still buffered goes out before the connection closes.
        let _ = self.flush().await;
        Shutdown::shutdown(&mut self.stream).await
    }
}

impl<S: IO + 'static> UniqueID for Buffered<S> {
    fn id(&self) -> UniqueIDType {
        self.stream.id()
    }
}

impl<S: IO + 'static> Ssl for Buffered<S> {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.stream.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.stream.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.stream.selected_alpn_proto()
    }
}

impl<S: IO + 'static> GetTimingDigest for Buffered<S> {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.stream.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.stream.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.stream.get_write_pending_time()
    }
}

impl<S: IO + 'static> GetProxyDigest for Buffered<S> {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.stream.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.stream.set_proxy_digest(digest)
    }
}

impl<S: IO + 'static> GetSocketDigest for Buffered<S> {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.stream.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.stream.set_socket_digest(digest)
    }
}

#[async_trait]
impl<S: IO + 'static> Peek for Buffered<S> {
    /// Fills `buf` with the next bytes, which stay to be read: waits until `buf.len()` bytes
    /// have arrived (pingora calls it only for the HTTP/2 preface, once the listener has seen
    /// that the connection starts with it).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        while self.peeked.len() < buf.len() {
            self.peeked.reserve(buf.len() - self.peeked.len());
            if self.stream.read_buf(&mut self.peeked).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        buf.copy_from_slice(&self.peeked[..buf.len()]);
        Ok(true)
    }
}

/// The connection preface of HTTP/2 (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<S: IO + 'static> Buffered<S> {
    /// Whether the connection starts with the HTTP/2 preface (cleartext HTTP/2 with prior
    /// knowledge). Reads only until the bytes differ from the preface; what it reads stays to
    /// be read. An HTTP/1 request differs at its first byte, so it costs HTTP/1 one read, the
    /// one pingora would have made.
    pub async fn starts_with_h2_preface(&mut self) -> io::Result<bool> {
        loop {
            let n = self.peeked.len().min(H2_PREFACE.len());
            if self.peeked[..n] != H2_PREFACE[..n] {
                return Ok(false);
            }
            if n == H2_PREFACE.len() {
                return Ok(true);
            }
            // Into the heap: a buffer on the stack would stay in every connection's task.
            self.peeked.reserve(4096);
            if self.stream.read_buf(&mut self.peeked).await? == 0 {
                return Ok(false);
            }
        }
    }
}

/// How a connection waits for the first bytes of its next request.
#[async_trait]
pub trait AwaitData {
    /// Returns once there is something to read (or the peer closed). Bytes it had to read to
    /// know are appended to `stash`, to be read again.
    async fn await_data(&mut self, stash: &mut Vec<u8>) -> io::Result<()>;
}

#[async_trait]
impl AwaitData for Tcp {
    /// Readiness, not a read: the bytes stay in the kernel for pingora's first read, so the wait
    /// costs no system call. (Readiness left over from earlier traffic would only mean that
    /// pingora's session waits instead, holding more memory; tokio clears it on short reads.)
    async fn await_data(&mut self, _stash: &mut Vec<u8>) -> io::Result<()> {
        self.readable().await
    }
}

#[async_trait]
impl AwaitData for TlsStream<Tcp> {
    /// A read: socket readiness would miss plaintext rustls already holds. It costs no extra
    /// system call, since rustls reads the whole record and keeps what is left of it.
    async fn await_data(&mut self, stash: &mut Vec<u8>) -> io::Result<()> {
        read_one(self, stash).await
    }
}

/// Reads one byte into `stash` (nothing at end of stream).
async fn read_one<R: AsyncRead + Unpin>(r: &mut R, stash: &mut Vec<u8>) -> io::Result<()> {
    let mut b = [0u8; 1];
    if r.read(&mut b).await? == 1 {
        stash.push(b[0]);
    }
    Ok(())
}

impl<S: IO + AwaitData + 'static> Buffered<S> {
    /// Waits for the next request on a keep-alive connection. The write buffer is empty then
    /// (pingora flushed the response), so it is released for as long as the connection idles.
    pub async fn next_request(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        if self.peeked.is_empty() {
            self.stream.await_data(&mut self.peeked).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes waiting on the other end of the pipe, without blocking.
    async fn pending(peer: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(20), peer.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[tokio::test]
    async fn small_writes_leave_together_on_flush() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let mut s = Buffered::new(ours);
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            .await
            .unwrap();
        s.write_all(b"hello").await.unwrap();
        assert!(pending(&mut peer).await.is_empty(), "sent before the flush");
        s.flush().await.unwrap();
        assert_eq!(
            pending(&mut peer).await,
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        );
    }

    #[tokio::test]
    async fn large_writes_go_straight_through_in_order() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let mut s = Buffered::new(ours);
        let big = vec![b'x'; CAPACITY * 3];
        s.write_all(b"head").await.unwrap();
        s.write_all(&big).await.unwrap();
        let got = pending(&mut peer).await;
        assert_eq!(got.len(), 4 + big.len(), "a large write waited for a flush");
        assert!(got.starts_with(b"headxxx"));
    }

    #[async_trait]
    impl AwaitData for tokio::io::DuplexStream {
        async fn await_data(&mut self, stash: &mut Vec<u8>) -> io::Result<()> {
            read_one(self, stash).await
        }
    }

    #[tokio::test]
    async fn bytes_read_while_waiting_are_read_again_and_the_idle_buffer_is_released() {
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let mut s = Buffered::new(ours);
        s.write_all(b"response").await.unwrap();
        s.flush().await.unwrap();
        assert!(s.out.capacity() > 0);
        peer.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        s.next_request().await.unwrap();
        assert_eq!(
            s.out.capacity(),
            0,
            "an idle connection keeps its write buffer"
        );
        let mut line = [0u8; 16];
        s.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"GET / HTTP/1.1\r\n");
    }
}
