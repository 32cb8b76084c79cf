//! Data-path workers: each is a thread running its own single-threaded tokio runtime, as
//! nginx's and Envoy's workers are. A connection stays on the worker that accepted it, and its
//! upstream connections come from that worker's own pool, so a request never wakes another
//! thread and no task is stolen across threads.
//!
//! With one worker the caller's runtime is the worker: no extra thread at all.

use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The running workers. Dropping it stops them: their runtimes end, and with them any
/// connection still open.
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Workers {
    /// The current runtime as the only worker. Must be called within a runtime.
    fn current() -> Self {
        Workers {
            handles: vec![Handle::current()],
            threads: Vec::new(),
        }
    }

    /// `n` worker threads (`sluice-worker-0` ...), or the current runtime when `n` is 1.
    pub fn start(n: usize) -> std::io::Result<Self> {
        if n <= 1 {
            return Ok(Self::current());
        }
        let mut workers = Workers {
            handles: Vec::with_capacity(n),
            threads: Vec::with_capacity(n),
        };
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(rt.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{i}"))
                .spawn(move || {
                    // A current-thread runtime runs its tasks only while something blocks on it.
                    let _ = rt.block_on(stopped);
                })?;
            workers.threads.push((stop, thread));
        }
        Ok(workers)
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

/// Accepts on `listener` from every worker: each gets its own copy of the socket, registered
/// with its own reactor, and runs `accept(worker index, socket)` as a task of its own. The
/// copies share the one listening socket, so whichever worker is free first takes the next
/// connection. (Separate SO_REUSEPORT sockets would also let another process join the port
/// without an error.)
pub fn accept_on<F, Fut>(
    workers: &[Handle],
    listener: std::net::TcpListener,
    accept: F,
) -> std::io::Result<()>
where
    F: Fn(usize, tokio::net::TcpListener) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut sockets = Vec::with_capacity(workers.len());
    for _ in 1..workers.len() {
        sockets.push(listener.try_clone()?);
    }
    sockets.push(listener);
    for (i, (worker, socket)) in workers.iter().zip(sockets).enumerate() {
        let accept = accept.clone();
        worker.spawn(async move {
            // Within the worker, so that the socket joins the worker's reactor.
            match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => accept(i, l).await,
                Err(e) => tracing::warn!(error = %e, worker = i, "cannot accept on this worker"),
            }
        });
    }
    Ok(())
}

impl Drop for Workers {
    fn drop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_its_tasks_on_its_own_thread() {
        let workers = Workers::start(3).expect("workers start");
        let mut names = Vec::new();
        for h in workers.handles() {
            let (tx, rx) = std::sync::mpsc::channel();
            h.spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_string));
            });
            names.push(rx.recv().expect("the task ran").unwrap_or_default());
        }
        assert_eq!(
            names,
            ["sluice-worker-0", "sluice-worker-1", "sluice-worker-2"]
        );
    }

    #[test]
    fn every_worker_accepts_from_the_shared_socket() {
        let workers = Workers::start(2).expect("workers start");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        accept_on(workers.handles(), listener, move |i, l| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((i, std::thread::current().name().map(str::to_string)));
                while let Ok((mut s, _)) = l.accept().await {
                    use tokio::io::AsyncWriteExt;
                    let _ = s.write_all(&[i as u8]).await;
                }
            }
        })
        .expect("sockets are duplicated");
        let mut started: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
        started.sort();
        assert_eq!(
            started,
            [
                (0, Some("sluice-worker-0".to_string())),
                (1, Some("sluice-worker-1".to_string()))
            ]
        );
        // Each connection is answered by one of the workers, whichever took it.
        for _ in 0..10 {
            use std::io::Read;
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).unwrap();
            assert!(b[0] < 2);
        }
    }

    #[tokio::test]
    async fn one_worker_is_the_current_runtime() {
        let workers = Workers::start(1).expect("workers start");
        assert_eq!(workers.handles().len(), 1);
        let here = std::thread::current().id();
        let there = workers.handles()[0]
            .spawn(async { std::thread::current().id() })
            .await
            .expect("the task ran");
        assert_eq!(here, there);
    }
}
