//! An accepted TCP connection as pingora sees it (its `IO` traits), in place of pingora's own
//! `l4::Stream`. Two reasons: the accept loop must wait for a keep-alive connection's next
//! request without reading it (`l4::Stream` only offers a read, which costs one more receive
//! per request), and `l4::Stream` reads the clock on every poll to account read and write
//! times, which the gateway does not report.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

#[derive(Debug)]
pub struct Tcp {
    stream: TcpStream,
    digest: Arc<SocketDigest>,
    established: SystemTime,
}

impl Tcp {
    /// `digest` carries the addresses known from `accept()`, so no request asks the kernel.
    pub fn new(stream: TcpStream, digest: SocketDigest) -> Self {
        Tcp {
            stream,
            digest: Arc::new(digest),
            established: SystemTime::now(),
        }
    }

    /// Waits until the peer has sent something, without reading it.
    pub async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }
}

impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Tcp {
    async fn shutdown(&mut self) {
        // The peer may be gone already; there is nothing left to do about it.
        let _ = AsyncWriteExt::shutdown(&mut self.stream).await;
    }
}

impl UniqueID for Tcp {
    fn id(&self) -> UniqueIDType {
        self.stream.as_raw_fd() as UniqueIDType
    }
}

impl Ssl for Tcp {}

impl GetTimingDigest for Tcp {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            ..TimingDigest::default()
        })]
    }
}

impl GetProxyDigest for Tcp {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Tcp {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(self.digest.clone())
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.digest = Arc::new(digest);
    }
}

/// No peeking: pingora peeks only to detect cleartext HTTP/2, which the gateway does not offer.
#[async_trait]
impl Peek for Tcp {}
