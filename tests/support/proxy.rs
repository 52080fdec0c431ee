//! A TCP proxy between tally and a broker that a test can cut: every open
//! connection is closed and new ones are refused until it is restored. This
//! is how a broker "dropping the connection" is simulated without losing the
//! broker's in-memory data.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct CuttableProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl CuttableProxy {
    /// Listen on `listen` (e.g. "127.0.0.1:0") and forward to `upstream`.
    pub fn start(listen: &str, upstream: SocketAddr) -> CuttableProxy {
        let listener = TcpListener::bind(listen).expect("proxy bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("proxy addr");
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, s, c) = (Arc::clone(&down), Arc::clone(&stop), Arc::clone(&conns));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        if d.load(Ordering::Relaxed) {
                            drop(client); // refused while cut
                            continue;
                        }
                        let _ = client.set_nonblocking(false);
                        let Ok(server) =
                            TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                        else {
                            continue;
                        };
                        let mut list = c.lock().unwrap();
                        for s in [&client, &server] {
                            if let Ok(clone) = s.try_clone() {
                                list.push(clone);
                            }
                        }
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CuttableProxy {
            addr,
            down,
            stop,
            conns,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close every connection and refuse new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::Relaxed);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::Relaxed);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
