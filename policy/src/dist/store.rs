//! c10d's `TCPStore` (through `csrc/dist.cpp`): rank 0 hosts it on MASTER_ADDR:MASTER_PORT,
//! every rank connects, and the ranks exchange bytes and counters through it.
use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use super::{DistEnv, DistError};

extern "C" {
    fn ember_store_connect(
        host: *const c_char,
        port: u16,
        is_server: bool,
        world_size: i64,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn ember_store_free(store: *mut c_void);
    fn ember_store_set(
        store: *mut c_void,
        key: *const c_char,
        data: *const u8,
        len: usize,
    ) -> *mut c_char;
    fn ember_store_get(
        store: *mut c_void,
        key: *const c_char,
        data: *mut *mut u8,
        len: *mut usize,
    ) -> *mut c_char;
    fn ember_store_add(
        store: *mut c_void,
        key: *const c_char,
        delta: i64,
        out: *mut i64,
    ) -> *mut c_char;
}

/// c10d's TCPStore: the job's key-value store. Rank 0 hosts it; [`Store::connect`] returns once
/// every rank has joined (or fails after the timeout).
pub struct Store {
    ptr: *mut c_void,
    addr: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("addr", &self.addr).finish()
    }
}

// SAFETY: c10d's TCPStore client serialises its requests internally (one lock per client), so
// it may be used from several threads; the handle is only freed on drop.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Joins the store of `env`'s job (hosting it on rank 0, unless torchrun's agent hosts it);
    /// every wait ends after `timeout`.
    pub fn connect(env: &DistEnv, timeout: Duration) -> Result<Self, DistError> {
        let addr = env.addr();
        let host = CString::new(env.master_addr.clone()).map_err(|_| DistError::Invalid {
            var: "MASTER_ADDR",
            value: env.master_addr.clone(),
            why: "contains a NUL byte".into(),
        })?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: a NUL-terminated host and an out pointer that receives a new handle.
        let status = unsafe {
            ember_store_connect(
                host.as_ptr(),
                env.master_port,
                env.rank == 0 && !env.agent_store,
                env.world_size,
                timeout.as_millis().min(i64::MAX as u128) as i64,
                &mut ptr,
            )
        };
        check(status, &addr)?;
        Ok(Self { ptr, addr })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        let key = self.key(key)?;
        // SAFETY: a live handle, a NUL-terminated key and `value` borrowed for the call.
        check(
            unsafe { ember_store_set(self.ptr, key.as_ptr(), value.as_ptr(), value.len()) },
            &self.addr,
        )
    }

    /// The value of `key`, waiting for another rank to set it (up to the timeout).
    pub fn get(&self, key: &str) -> Result<Vec<u8>, DistError> {
        let key = self.key(key)?;
        let (mut data, mut len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: a live handle and out pointers; on success `data` holds `len` bytes the shim
        // malloc'd, copied and freed here.
        check(
            unsafe { ember_store_get(self.ptr, key.as_ptr(), &mut data, &mut len) },
            &self.addr,
        )?;
        let value = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        unsafe { crate::ext::free(data) };
        Ok(value)
    }

    /// Adds `delta` to the counter at `key` (0 when absent); returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, DistError> {
        let key = self.key(key)?;
        let mut out = 0;
        // SAFETY: a live handle, a NUL-terminated key and an out pointer.
        check(
            unsafe { ember_store_add(self.ptr, key.as_ptr(), delta, &mut out) },
            &self.addr,
        )?;
        Ok(out)
    }

    /// The store's address, MASTER_ADDR:MASTER_PORT.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(super) fn handle(&self) -> *mut c_void {
        self.ptr
    }

    fn key(&self, key: &str) -> Result<CString, DistError> {
        CString::new(key).map_err(|_| DistError::Store {
            addr: self.addr.clone(),
            message: format!("key {key:?} contains a NUL byte"),
        })
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle came from ember_store_connect and is freed once.
        unsafe { ember_store_free(self.ptr) }
    }
}

pub(super) fn check(message: *mut c_char, addr: &str) -> Result<(), DistError> {
    match crate::ext::take_message(message) {
        None => Ok(()),
        // c10d's messages carry a C++ stack trace after the first line.
        Some(text) => Err(DistError::Store {
            addr: addr.to_string(),
            message: text.lines().next().unwrap_or_default().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{env, free_port};
    use super::*;

    #[test]
    fn two_ranks_meet_at_the_store_and_exchange_bytes_and_counts() {
        let port = free_port();
        let timeout = Duration::from_secs(20);
        let server = std::thread::spawn(move || {
            let s = Store::connect(&env(0, 2, port), timeout).unwrap();
            s.set("from0", b"hello").unwrap();
            let got = s.get("from1").unwrap();
            let n = s.add("joined", 1).unwrap();
            (got, n, s)
        });
        let client = Store::connect(&env(1, 2, port), timeout).unwrap();
        client.set("from1", &[0, 1, 2, 255]).unwrap();
        assert_eq!(client.get("from0").unwrap(), b"hello");
        let n1 = client.add("joined", 1).unwrap();
        let (got, n0, _server_store) = server.join().unwrap();
        assert_eq!(got, vec![0, 1, 2, 255]);
        let mut counts = [n0, n1];
        counts.sort();
        assert_eq!(counts, [1, 2], "each add sees the other's");
        // A key nobody sets: an error after the timeout, not a hang.
        let short = Store::connect(
            &DistEnv {
                world_size: 1,
                rank: 0,
                ..env(0, 2, free_port())
            },
            Duration::from_millis(300),
        )
        .unwrap();
        let start = std::time::Instant::now();
        let err = short.get("never").unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(10), "{err}");
        assert!(err.starts_with("the store at 127.0.0.1:"), "{err}");
        assert!(err.contains("timeout") && err.contains("never"), "{err}");
    }

    #[test]
    fn a_rank_that_never_comes_ends_in_an_error_not_a_hang() {
        let start = std::time::Instant::now();
        let err = Store::connect(&env(0, 2, free_port()), Duration::from_millis(500))
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() < Duration::from_secs(10), "{err}");
        assert!(err.starts_with("the store at 127.0.0.1:"), "{err}");
    }

    #[test]
    fn a_port_in_use_is_named() {
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let single = DistEnv {
            world_size: 1,
            ..env(0, 2, port)
        };
        let err = Store::connect(&single, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("the store at 127.0.0.1:{port}: ")),
            "{err}"
        );
        assert!(err.contains("address already in use"), "{err}");
    }
}
