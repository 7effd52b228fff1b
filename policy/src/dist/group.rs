//! A c10d process group over the job's [`Store`]: `ProcessGroupGloo`, the engine
//! torch.distributed uses between CPUs (through `csrc/dist.cpp`), with the collectives
//! data-parallel training needs: all-reduce, broadcast, all-gather of byte buffers, barrier.
//!
//! A rank that dies (kill -9, out of memory) breaks its peers' connections, and their next
//! collective fails. To say *which* rank is gone, every rank bumps a heartbeat counter in the
//! store while the group lives; a failed collective reads the counters twice and names the ranks
//! whose count stood still (or rank 0, when the store it hosts is unreachable).
use std::ffi::{c_char, c_void, CString};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tch::{Kind, Tensor};
use torch_sys::C_tensor;

use super::store::check;
use super::{DistEnv, DistError, Store};

extern "C" {
    fn ember_pg_gloo(
        store: *mut c_void,
        prefix: *const c_char,
        rank: i32,
        size: i32,
        timeout_ms: i64,
        address: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn ember_pg_free(group: *mut c_void);
    fn ember_pg_allreduce_sum(group: *mut c_void, tensor: *const C_tensor) -> *mut c_char;
    fn ember_pg_broadcast(group: *mut c_void, tensor: *const C_tensor, root: i32) -> *mut c_char;
    fn ember_pg_allgather(
        group: *mut c_void,
        input: *const C_tensor,
        outputs: *const *const C_tensor,
        n: usize,
    ) -> *mut c_char;
    fn ember_pg_barrier(group: *mut c_void) -> *mut c_char;
}

/// How often each rank bumps its heartbeat, and how long a failed collective watches them.
const BEAT: Duration = Duration::from_millis(500);
const WATCH: Duration = Duration::from_millis(2500);
/// Gradients travel in flat buckets of at most this many bytes (DDP's default).
pub(super) const BUCKET_BYTES: i64 = 25 << 20;

/// This process's membership in a job of `world_size` ranks.
pub struct ProcessGroup {
    ptr: *mut c_void,
    rank: i64,
    world_size: i64,
    store: Arc<Store>,
    heartbeat: Option<Heartbeat>,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("store", &self.store)
            .finish()
    }
}

// SAFETY: c10d's Gloo backend queues collectives from any thread under its own lock; the
// handle is only freed on drop.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

/// The local address Gloo binds to on a job that spans hosts, unless `GLOO_SOCKET_IFNAME`
/// names the interface (`ifname_set`): the address this host reaches `MASTER_ADDR` from, as the
/// kernel routes it (a UDP socket connected to it; no packet is sent). torch.distributed binds
/// to the address of the host's name instead, which many hosts and containers resolve to
/// loopback, and ranks on the other hosts then cannot connect. `None` (that default) when
/// `MASTER_ADDR` is a loopback address (one host) or the route cannot be found.
pub(crate) fn gloo_address(env: &DistEnv, ifname_set: bool) -> Option<String> {
    use std::net::{ToSocketAddrs, UdpSocket};
    if ifname_set {
        return None;
    }
    let master = (env.master_addr.as_str(), env.master_port)
        .to_socket_addrs()
        .ok()?
        .next()?;
    if master.ip().is_loopback() {
        return None;
    }
    let any = match master {
        std::net::SocketAddr::V4(_) => "0.0.0.0:0",
        std::net::SocketAddr::V6(_) => "[::]:0",
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(master).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

impl ProcessGroup {
    /// Joins the job `env` describes: the store (hosted by rank 0), a check that every rank runs
    /// the same `build` (a different binary on one rank is an error naming both), and the Gloo
    /// group. Returns once every rank is connected to every other; every wait and collective
    /// ends after `timeout` with an error.
    pub fn init(env: &DistEnv, build: &str, timeout: Duration) -> Result<Self, DistError> {
        let store = Arc::new(Store::connect(env, timeout)?);
        same_build(&store, env, build, timeout)?;
        let prefix = CString::new("ember/gloo/").expect("no NUL");
        let address = gloo_address(env, std::env::var_os("GLOO_SOCKET_IFNAME").is_some());
        let address = CString::new(address.unwrap_or_default()).expect("an IP has no NUL");
        let mut ptr = std::ptr::null_mut();
        // SAFETY: a live store handle, NUL-terminated prefix and address, and an out pointer
        // that receives a new group handle.
        check(
            unsafe {
                ember_pg_gloo(
                    store.handle(),
                    prefix.as_ptr(),
                    env.rank as i32,
                    env.world_size as i32,
                    millis(timeout),
                    address.as_ptr(),
                    &mut ptr,
                )
            },
            store.addr(),
        )?;
        let heartbeat = Heartbeat::start(Arc::clone(&store), env.rank);
        Ok(Self {
            ptr,
            rank: env.rank,
            world_size: env.world_size,
            store,
            heartbeat: Some(heartbeat),
        })
    }

    /// The C++ group, for the shim's calls.
    pub(super) fn handle(&self) -> *mut c_void {
        self.ptr
    }

    pub fn rank(&self) -> i64 {
        self.rank
    }

    pub fn world_size(&self) -> i64 {
        self.world_size
    }

    /// Sums `tensor` (contiguous) over the ranks, in place.
    pub fn all_reduce_sum(&self, tensor: &Tensor) -> Result<(), DistError> {
        // SAFETY: a live group and tensor handle for the duration of the call.
        self.done("all_reduce", unsafe {
            ember_pg_allreduce_sum(self.ptr, tensor.as_ptr())
        })
    }

    /// Copies rank `root`'s `tensor` (contiguous) into every rank's, in place.
    pub fn broadcast(&self, tensor: &Tensor, root: i64) -> Result<(), DistError> {
        // SAFETY: as for all_reduce_sum.
        self.done("broadcast", unsafe {
            ember_pg_broadcast(self.ptr, tensor.as_ptr(), root as i32)
        })
    }

    /// Every rank's `bytes`, in rank order (lengths may differ between ranks).
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, DistError> {
        let len = Tensor::from_slice(&[bytes.len() as i64]);
        let lens = self.all_gather(&len)?;
        let lens: Vec<i64> = lens.iter().map(|t| t.int64_value(&[0])).collect();
        let longest = lens.iter().copied().max().unwrap_or(0);
        let padded = Tensor::zeros([longest.max(1)], (Kind::Uint8, tch::Device::Cpu));
        if !bytes.is_empty() {
            padded
                .narrow(0, 0, bytes.len() as i64)
                .copy_(&Tensor::from_slice(bytes));
        }
        let gathered = self.all_gather(&padded)?;
        Ok(gathered
            .iter()
            .zip(&lens)
            .map(|(t, &n)| Vec::<u8>::try_from(t.narrow(0, 0, n)).expect("a uint8 tensor"))
            .collect())
    }

    /// Every rank's `tensor` (same shape and kind everywhere), in rank order.
    pub fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>, DistError> {
        let input = tensor.contiguous();
        let outputs: Vec<Tensor> = (0..self.world_size).map(|_| input.empty_like()).collect();
        let handles: Vec<*const C_tensor> = outputs.iter().map(Tensor::as_ptr).collect();
        // SAFETY: live handles; `outputs` holds one tensor per rank, as Gloo requires.
        self.done("all_gather", unsafe {
            ember_pg_allgather(self.ptr, input.as_ptr(), handles.as_ptr(), handles.len())
        })?;
        Ok(outputs)
    }

    /// Returns when every rank has reached it.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: a live group handle.
        self.done("barrier", unsafe { ember_pg_barrier(self.ptr) })
    }

    /// Replaces every rank's gradients of `params` by their mean over the ranks, as DDP does
    /// after the backward pass: the gradients travel in flat buckets of at most 25 MB. Every
    /// trainable parameter must have a gradient (every rank must use every one).
    pub fn average_gradients(&self, params: &[Tensor]) -> Result<(), DistError> {
        let mut grads = Vec::new();
        for (i, p) in params.iter().enumerate().filter(|(_, p)| p.requires_grad()) {
            let g = p.grad();
            if !g.defined() {
                return Err(DistError::Collective {
                    op: "average_gradients",
                    message: format!(
                        "parameter {i} has no gradient on rank {}: every rank must use every trainable parameter",
                        self.rank
                    ),
                });
            }
            grads.push(g);
        }
        let world = self.world_size as f64;
        self.bucketed(&grads, |flat| {
            self.all_reduce_sum(flat)?;
            let _ = flat.shallow_clone().g_div_scalar_(world);
            Ok(())
        })
    }

    /// Makes every rank's `params` rank 0's (DDP does this once, before the first step).
    pub fn broadcast_parameters(&self, params: &[Tensor]) -> Result<(), DistError> {
        self.bucketed(params, |flat| self.broadcast(flat, 0))
    }

    /// Runs `op` on flat copies of `tensors` (buckets of one kind and device, at most
    /// BUCKET_BYTES each, in order) and copies the results back.
    fn bucketed(
        &self,
        tensors: &[Tensor],
        op: impl Fn(&Tensor) -> Result<(), DistError>,
    ) -> Result<(), DistError> {
        let _guard = tch::no_grad_guard();
        let mut start = 0;
        while start < tensors.len() {
            let first = &tensors[start];
            let (kind, device) = (first.kind(), first.device());
            let mut end = start;
            let mut bytes = 0;
            while end < tensors.len()
                && tensors[end].kind() == kind
                && tensors[end].device() == device
                && (end == start || bytes + nbytes(&tensors[end]) <= BUCKET_BYTES)
            {
                bytes += nbytes(&tensors[end]);
                end += 1;
            }
            let bucket = &tensors[start..end];
            let flat = Tensor::cat(
                &bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(),
                0,
            );
            op(&flat)?;
            let mut offset = 0;
            for t in bucket {
                let n = t.numel() as i64;
                t.shallow_clone()
                    .copy_(&flat.narrow(0, offset, n).view_as(t));
                offset += n;
            }
            start = end;
        }
        Ok(())
    }

    /// `Ok` for a null status; else the collective's error, naming the ranks that are gone.
    pub(super) fn done(&self, op: &'static str, status: *mut c_char) -> Result<(), DistError> {
        match crate::ext::take_message(status) {
            None => Ok(()),
            Some(text) => {
                let first = text.lines().next().unwrap_or_default().to_string();
                Err(DistError::Collective {
                    op,
                    message: match self.gone() {
                        Some(gone) => format!("{gone} ({first})"),
                        None => first,
                    },
                })
            }
        }
    }

    /// Which ranks stopped beating, as a sentence; `None` when every other rank still beats.
    fn gone(&self) -> Option<String> {
        let beats = || -> Result<Vec<i64>, DistError> {
            (0..self.world_size)
                .map(|r| self.store.add(&beat_key(r), 0))
                .collect()
        };
        let twice = beats().and_then(|before| {
            std::thread::sleep(WATCH);
            Ok((before, beats()?))
        });
        let Ok((before, after)) = twice else {
            return Some(format!(
                "rank 0 is gone: the store it hosts at {} is unreachable",
                self.store.addr()
            ));
        };
        let gone: Vec<String> = (0..self.world_size)
            .filter(|&r| r != self.rank && after[r as usize] == before[r as usize])
            .map(|r| r.to_string())
            .collect();
        match gone.len() {
            0 => None,
            1 => Some(format!(
                "rank {} is gone: no heartbeat for {:.1} s",
                gone[0],
                WATCH.as_secs_f64()
            )),
            _ => Some(format!(
                "ranks {} are gone: no heartbeat for {:.1} s",
                gone.join(", "),
                WATCH.as_secs_f64()
            )),
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        drop(self.heartbeat.take());
        // SAFETY: the handle came from ember_pg_gloo and is freed once.
        unsafe { ember_pg_free(self.ptr) }
    }
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

pub(super) fn nbytes(t: &Tensor) -> i64 {
    t.numel() as i64 * t.kind().elt_size_in_bytes() as i64
}

fn beat_key(rank: i64) -> String {
    format!("ember/beat/{rank}")
}

/// Every rank publishes `build`; all must be equal. Every rank reads all the others' before any
/// leaves (rank 0's store must outlive the reads), so both sides of a mismatch report it.
fn same_build(
    store: &Store,
    env: &DistEnv,
    build: &str,
    timeout: Duration,
) -> Result<(), DistError> {
    let rank = env.rank;
    store.set(&format!("ember/build/{rank}"), build.as_bytes())?;
    let mut mismatch = Ok(());
    for other in (0..env.world_size).filter(|&r| r != rank) {
        let theirs =
            String::from_utf8_lossy(&store.get(&format!("ember/build/{other}"))?).into_owned();
        if theirs != build && mismatch.is_ok() {
            mismatch = Err(DistError::Mismatch {
                rank,
                mine: build.to_string(),
                other,
                theirs,
            });
        }
    }
    let key = "ember/builds_read";
    store.add(key, 1)?;
    let deadline = std::time::Instant::now() + timeout;
    // An unreachable store means rank 0 saw every read done and left: stop waiting too.
    while matches!(store.add(key, 0), Ok(n) if n < env.world_size)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    mismatch
}

/// A thread that bumps this rank's heartbeat counter in the store every BEAT until dropped.
struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(store: Arc<Store>, rank: i64) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let key = beat_key(rank);
        let thread = std::thread::spawn(move || loop {
            // A failed beat means the store (rank 0) is gone; the next collective says so.
            let _ = store.add(&key, 1);
            if stopped.recv_timeout(BEAT) != Err(mpsc::RecvTimeoutError::Timeout) {
                break;
            }
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{env, free_port};
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// Runs `f(rank, group)` on `world` ranks (threads of this process, each with its own
    /// group, as separate processes would have) and returns their results in rank order.
    fn ranks<T: Send + 'static>(
        world: i64,
        f: impl Fn(i64, ProcessGroup) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let port = free_port();
        let f = Arc::new(f);
        let threads: Vec<_> = (0..world)
            .map(|r| {
                let f = Arc::clone(&f);
                std::thread::spawn(move || {
                    let pg = ProcessGroup::init(&env(r, world, port), "test", TIMEOUT).unwrap();
                    f(r, pg)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    }

    #[test]
    fn two_gloo_ranks_reduce_broadcast_and_gather() {
        let out = ranks(2, |r, pg| {
            assert_eq!((pg.rank(), pg.world_size()), (r, 2));
            let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (r + 1) as f64;
            pg.all_reduce_sum(&t).unwrap();
            let b = Tensor::from_slice(&[r * 10 + 7]);
            pg.broadcast(&b, 1).unwrap();
            let bytes = vec![r as u8; (r * 3) as usize];
            let gathered = pg.all_gather_bytes(&bytes).unwrap();
            pg.barrier().unwrap();
            (
                Vec::<f32>::try_from(t).unwrap(),
                b.int64_value(&[0]),
                gathered,
            )
        });
        for (sum, root, gathered) in out {
            assert_eq!(sum, vec![3.0, 6.0, 9.0]);
            assert_eq!(root, 17, "rank 1's value");
            assert_eq!(gathered, vec![vec![], vec![1u8, 1, 1]]);
        }
    }

    #[test]
    fn gradients_are_averaged_in_buckets_and_parameters_broadcast() {
        let out = ranks(2, |r, pg| {
            // Two kinds and a tensor larger than a bucket, so several buckets travel.
            let big = Tensor::full(
                [BUCKET_BYTES / 4 + 5],
                r as f64,
                (Kind::Float, tch::Device::Cpu),
            )
            .set_requires_grad(true);
            let small = Tensor::from_slice(&[r as f64, 2.0 * r as f64]).set_requires_grad(true);
            let frozen = Tensor::from_slice(&[r as f32]);
            let loss = (&big * (r + 1) as f64).sum(None) + (&small * (r + 1) as f64).sum(None);
            loss.backward();
            let params = [
                big.shallow_clone(),
                small.shallow_clone(),
                frozen.shallow_clone(),
            ];
            pg.average_gradients(&params).unwrap();
            pg.broadcast_parameters(&params).unwrap();
            (
                (
                    big.grad().min().double_value(&[]),
                    big.grad().max().double_value(&[]),
                ),
                Vec::<f64>::try_from(small.grad()).unwrap(),
                big.max().double_value(&[]),
                Vec::<f64>::try_from(&small).unwrap(),
                frozen.double_value(&[0]),
            )
        });
        for (big_grad, small_grad, big, small, frozen) in out {
            assert_eq!(big_grad, (1.5, 1.5), "mean of 1 and 2");
            assert_eq!(small_grad, vec![1.5, 1.5]);
            assert_eq!(
                (big, small, frozen),
                (0.0, vec![0.0, 0.0], 0.0),
                "rank 0's values"
            );
        }
    }

    #[test]
    fn the_reducer_averages_during_backward_what_average_gradients_averages_after() {
        let out = ranks(2, |r, pg| {
            // Four 10 MB tensors (three buckets of at most 25 MB), a float64 one (a bucket of
            // its own kind) and a frozen one.
            let f32s = (0..4).map(|i| {
                let v = (10 * r + i) as f64;
                Tensor::full([(10 << 20) / 4], v, (Kind::Float, tch::Device::Cpu))
            });
            let mut params: Vec<Tensor> = f32s.map(|t| t.set_requires_grad(true)).collect();
            params.push(Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true));
            params.push(Tensor::from_slice(&[r as f32]));
            let loss = |k: f64| {
                let terms = params.iter().take(5).enumerate();
                terms
                    .map(|(i, p)| (p * p).sum(Kind::Double) * (k + i as f64))
                    .fold(Tensor::from(0.0f64), |a, b| a + b)
            };
            // Two micro-batches; only the second backward pass is armed.
            let reducer = crate::dist::Reducer::new(&pg, &params).unwrap();
            loss(1.0 + r as f64).backward();
            reducer.arm();
            loss(2.0).backward();
            reducer.finish().unwrap();
            let during: Vec<Tensor> = params.iter().take(5).map(|p| p.grad().copy()).collect();
            for p in params.iter().take(5) {
                let _ = p.grad().zero_();
            }
            loss(1.0 + r as f64).backward();
            loss(2.0).backward();
            pg.average_gradients(&params).unwrap();
            let after = params.iter().take(5).map(|p| p.grad());
            during.iter().zip(after).all(|(a, b)| a.equal(&b))
        });
        assert_eq!(out, vec![true, true], "bit for bit, on every rank");
    }

    #[test]
    fn chunks_are_shared_round_robin_and_gathered_in_order() {
        let out = ranks(2, |r, pg| {
            let mut ran = Vec::new();
            let got = crate::dist::map_chunks(Some(&pg), 5, |i| {
                ran.push(i);
                (i as f32 * 0.1, format!("chunk {i}"))
            })
            .unwrap();
            (r, ran, got)
        });
        let alone = crate::dist::map_chunks(None, 5, |i| (i as f32 * 0.1, format!("chunk {i}")));
        for (r, ran, got) in out {
            assert_eq!(ran, if r == 0 { vec![0, 2, 4] } else { vec![1, 3] });
            assert_eq!(
                got,
                alone.clone().unwrap(),
                "every rank gets every result, bit for bit"
            );
        }
    }

    #[test]
    fn gloo_binds_to_the_route_to_a_remote_master_only() {
        let at = |addr: &str| DistEnv {
            master_addr: addr.into(),
            ..env(1, 2, 29500)
        };
        assert_eq!(gloo_address(&at("127.0.0.1"), false), None, "one host");
        assert_eq!(gloo_address(&at("localhost"), false), None, "one host");
        assert_eq!(
            gloo_address(&at("10.1.2.3"), true),
            None,
            "GLOO_SOCKET_IFNAME wins"
        );
        // Where this machine has a route to it, the address it leaves from, never loopback.
        if let Some(ip) = gloo_address(&at("10.1.2.3"), false) {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
        }
    }

    #[test]
    fn rank_0_s_result_or_its_error_reaches_every_rank() {
        let out = ranks(2, |r, pg| {
            let ok = crate::dist::from_root(Some(&pg), "test", || {
                assert_eq!(r, 0, "only rank 0 runs f");
                Ok::<_, DistError>((vec![1.5f32, f32::NAN], "kept".to_string()))
            });
            let err = crate::dist::from_root(Some(&pg), "reading kept.parquet", || {
                Err::<u8, _>(DistError::Missing { var: "RANK" })
            });
            (ok.unwrap(), err.unwrap_err().to_string())
        });
        for (r, ((v, s), err)) in out.into_iter().enumerate() {
            assert_eq!((v[0], v[1].is_nan(), s.as_str()), (1.5, true, "kept"));
            let missing = DistError::Missing { var: "RANK" }.to_string();
            if r == 0 {
                assert_eq!(err, missing, "rank 0 keeps its own error");
            } else {
                assert!(
                    err.contains("reading kept.parquet") && err.contains(&missing),
                    "{err}"
                );
            }
        }
        let alone = crate::dist::from_root(None, "test", || Ok::<_, DistError>(7));
        assert_eq!(alone.unwrap(), 7);
    }

    #[test]
    fn ranks_on_different_builds_are_named() {
        let port = free_port();
        let other = std::thread::spawn(move || {
            ProcessGroup::init(&env(1, 2, port), "0.1.0+bbb", TIMEOUT).map(|_| ())
        });
        let err = ProcessGroup::init(&env(0, 2, port), "0.1.0+aaa", TIMEOUT)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "rank 1 runs another ember build (0.1.0+bbb) than rank 0 (0.1.0+aaa): launch the same binary on every rank"
        );
        let err = other.join().unwrap().unwrap_err().to_string();
        assert!(
            err.starts_with("rank 0 runs another ember build (0.1.0+aaa)"),
            "{err}"
        );
    }

    #[test]
    fn a_rank_that_leaves_is_named_by_the_next_collective() {
        let port = free_port();
        let leaver = std::thread::spawn(move || {
            let pg = ProcessGroup::init(&env(1, 2, port), "test", TIMEOUT).unwrap();
            pg.barrier().unwrap();
            drop(pg); // its connections close and its heartbeat stops, as a killed process's would
        });
        let pg = ProcessGroup::init(&env(0, 2, port), "test", TIMEOUT).unwrap();
        pg.barrier().unwrap();
        leaver.join().unwrap();
        let start = std::time::Instant::now();
        let err = pg
            .all_reduce_sum(&Tensor::from_slice(&[1.0f32]))
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() < TIMEOUT, "{err}");
        assert!(
            err.starts_with("all_reduce failed: rank 1 is gone: no heartbeat for 2.5 s ("),
            "{err}"
        );
    }
}
