//! Rendezvous for several processes, as torch.distributed does it: [`DistEnv`] reads the
//! variables `torchrun` and Slurm wrappers set (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`), and [`Store`] is c10d's `TCPStore` (through
//! `csrc/dist.cpp`): rank 0 hosts it on MASTER_ADDR:MASTER_PORT, every rank connects, and the
//! ranks exchange bytes and counters through it. [`ProcessGroup`] is c10d's Gloo process group
//! over it: the collectives of data-parallel training. Every wait ends after a timeout with an
//! error; nothing hangs.
//!
//! As in torch.distributed, a process joins one job: [`init_from_env`] makes the default group
//! that [`group`] returns to the training loops, which then shard each global batch
//! ([`shard`]), average gradients and let rank 0 alone write.
use std::sync::OnceLock;
use std::time::Duration;

mod group;
mod reducer;
mod store;

pub use group::ProcessGroup;
pub use reducer::Reducer;
pub use store::Store;

/// A bad distributed setup, naming the variable and value, or what the store refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DistError {
    #[error(
        "{var} is not set (set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, as torchrun does)"
    )]
    Missing { var: &'static str },
    #[error("{var}={value}: {why}")]
    Invalid {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("the store at {addr}: {message}")]
    Store { addr: String, message: String },
    #[error("rank {other} runs another ember build ({theirs}) than rank {rank} ({mine}): launch the same binary on every rank")]
    Mismatch {
        rank: i64,
        mine: String,
        other: i64,
        theirs: String,
    },
    #[error("{op} failed: {message}")]
    Collective { op: &'static str, message: String },
}

static GROUP: OnceLock<ProcessGroup> = OnceLock::new();

/// Joins the job the environment describes ([`DistEnv::from_env`]) as this process's default
/// group, once; `None` for a single process (no `WORLD_SIZE`). `build` identifies the binary
/// (ranks on different builds are refused); every wait and collective ends after `timeout`.
pub fn init_from_env(
    build: &str,
    timeout: Duration,
) -> Result<Option<&'static ProcessGroup>, DistError> {
    let Some(env) = DistEnv::from_env()? else {
        return Ok(None);
    };
    if let Some(g) = GROUP.get() {
        return Ok(Some(g));
    }
    let g = ProcessGroup::init(&env, build, timeout)?;
    Ok(Some(GROUP.get_or_init(|| g)))
}

/// The default group of a process launched as one rank of several (after [`init_from_env`]);
/// `None` when it runs alone or the job has one rank.
pub fn group() -> Option<&'static ProcessGroup> {
    if LOCAL.with(std::cell::Cell::get) {
        return None;
    }
    GROUP.get().filter(|g| g.world_size() > 1)
}

thread_local! {
    /// Set while this thread runs one rank's share of [`map_chunks`]: the work inside is this
    /// rank's alone, so anything it calls that would share work among the ranks (sampling,
    /// scoring) runs locally instead of starting collectives the other ranks do not match.
    static LOCAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with [`group`] returning `None` on this thread (restored after, even on panic):
/// work that one rank does alone (a share of [`map_chunks`], a step only rank 0 runs), so that
/// what it calls does not start collectives the other ranks do not match.
pub fn locally<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LOCAL.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LOCAL.with(|l| l.replace(true)));
    f()
}

/// `x` summed over the ranks of the default group (itself alone): counts such as tokens
/// trained on, for the job's throughput.
pub fn sum_over_ranks(x: i64) -> Result<i64, DistError> {
    let Some(g) = group() else {
        return Ok(x);
    };
    let t = tch::Tensor::from_slice(&[x]);
    g.all_reduce_sum(&t)?;
    Ok(t.int64_value(&[0]))
}

/// Whether data-parallel training averages gradients during the backward pass ([`Reducer`]):
/// yes unless `EMBER_DIST_OVERLAP=0`, which averages after it (for comparing the two).
pub fn overlap() -> bool {
    std::env::var("EMBER_DIST_OVERLAP").map_or(true, |v| v.trim() != "0")
}

/// Whether this process writes the job's files: rank 0, or a process that runs alone.
pub fn is_writer() -> bool {
    group().is_none_or(|g| g.rank() == 0)
}

/// The rows `start..end` of a global batch of `batch` rows that `rank` of `world_size` trains
/// on: equal contiguous shards, so averaging the ranks' gradients is the gradient of the whole
/// batch. A batch the world size does not divide is an error naming both.
pub fn shard(
    batch: usize,
    world_size: i64,
    rank: i64,
) -> Result<std::ops::Range<usize>, DistError> {
    let world = world_size as usize;
    if !batch.is_multiple_of(world) {
        return Err(DistError::Invalid {
            var: "WORLD_SIZE",
            value: world_size.to_string(),
            why: format!(
                "must divide the global batch of {batch} rows (each rank trains on an equal shard)"
            ),
        });
    }
    Ok(split(batch, world_size, rank))
}

/// The rows of `0..n` that `rank` of `world_size` takes when `n` varies from step to step (the
/// answers a fine-tuning round kept): contiguous, as even as can be, the first `n mod world`
/// ranks taking one more; a rank may get none. A loss over such a shard must divide by the
/// global count ([`crate::train::global_counts`]) for the averaged gradients to be the batch's.
pub fn split(n: usize, world_size: i64, rank: i64) -> std::ops::Range<usize> {
    let (world, rank) = (world_size.max(1) as usize, rank as usize);
    let (each, extra) = (n / world, n % world);
    let start = rank * each + rank.min(extra);
    start..start + each + usize::from(rank < extra)
}

/// Rank 0's result of `f`, on every rank of `group`: only rank 0 runs `f` (alone, it just
/// runs). For what rank 0 alone can know (its checkpoint, its cached files) and every rank
/// must agree on. An error on rank 0 comes back there with its own type, and to the other
/// ranks as its message in a [`DistError::Collective`] naming `op`; no rank waits.
pub fn from_root<T, E>(
    group: Option<&ProcessGroup>,
    op: &'static str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    E: From<DistError> + std::fmt::Display,
{
    let Some(g) = group else {
        return f();
    };
    let mut local = None;
    let sent: Result<T, String> = if g.rank() == 0 {
        f().map_err(|e| {
            let message = e.to_string();
            local = Some(e);
            message
        })
    } else {
        Err(String::new())
    };
    let bytes = if g.rank() == 0 {
        rmp_serde::to_vec(&sent).map_err(|e| DistError::Collective {
            op,
            message: format!("rank 0's result does not serialise: {e}"),
        })?
    } else {
        Vec::new()
    };
    let parts = g.all_gather_bytes(&bytes)?;
    if let Some(e) = local {
        return Err(e);
    }
    let root: Result<T, String> =
        rmp_serde::from_slice(&parts[0]).map_err(|e| DistError::Collective {
            op,
            message: format!("rank 0 sent a result that does not parse: {e}"),
        })?;
    root.map_err(|message| {
        DistError::Collective {
            op,
            message: format!("on rank 0: {message}"),
        }
        .into()
    })
}

/// The results of `work(0..n)`, in order, on every rank. Alone (`group` is `None`), `work` runs
/// on every index; in a group, rank r runs the indices i with i mod world_size = r and the
/// results travel to every rank (as MessagePack, which gives back every float exactly, NaN and
/// infinities included; every rank runs the same build, so the layouts agree). A unit
/// of work is a whole batch as one process would form it, so the results are the same bytes
/// as one process's, however many ranks share them. Inside `work`, [`group`] is `None`: what
/// it calls runs on this rank alone (a collective there would meet no partner).
pub fn map_chunks<T: serde::Serialize + serde::de::DeserializeOwned>(
    group: Option<&ProcessGroup>,
    n: usize,
    mut work: impl FnMut(usize) -> T,
) -> Result<Vec<T>, DistError> {
    let Some(g) = group else {
        return Ok((0..n).map(work).collect());
    };
    let (rank, world) = (g.rank() as usize, g.world_size() as usize);
    let mine: Vec<(usize, T)> = (rank..n)
        .step_by(world)
        .map(|i| (i, locally(|| work(i))))
        .collect();
    let bytes = rmp_serde::to_vec(&mine).map_err(|e| DistError::Collective {
        op: "map_chunks",
        message: format!("rank {rank}'s results do not serialise: {e}"),
    })?;
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (from, part) in g.all_gather_bytes(&bytes)?.iter().enumerate() {
        let part: Vec<(usize, T)> =
            rmp_serde::from_slice(part).map_err(|e| DistError::Collective {
                op: "map_chunks",
                message: format!("rank {from} sent results that do not parse: {e}"),
            })?;
        for (i, t) in part {
            out[i] = Some(t);
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.ok_or_else(|| DistError::Collective {
                op: "map_chunks",
                message: format!("no rank returned chunk {i} of {n}"),
            })
        })
        .collect()
}

/// [`map_chunks`] of fallible work. An error on this rank comes back with its own type (the
/// first one); an error on another rank arrives as its message, in a [`DistError::Collective`]
/// naming `op` and the chunk. Every rank still takes part in the exchange, so none waits.
pub fn try_map_chunks<T, E>(
    group: Option<&ProcessGroup>,
    n: usize,
    op: &'static str,
    mut work: impl FnMut(usize) -> Result<T, E>,
) -> Result<Vec<T>, E>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
    E: From<DistError> + std::fmt::Display,
{
    let mut local = None;
    let results = map_chunks(group, n, |i| {
        work(i).map_err(|e| {
            let message = e.to_string();
            local.get_or_insert(e);
            message
        })
    })?;
    if let Some(e) = local {
        return Err(e);
    }
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.map_err(|message| {
                DistError::Collective {
                    op,
                    message: format!("chunk {i} of {n}: {message}"),
                }
                .into()
            })
        })
        .collect()
}

/// Where this process sits in a job of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: i64,
    pub world_size: i64,
    /// The rank on this node (the device index on a GPU node); RANK when unset.
    pub local_rank: i64,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already hosts the store on MASTER_ADDR:MASTER_PORT
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank, rank 0 included, connects to it.
    pub agent_store: bool,
}

impl DistEnv {
    /// From the process environment; `None` when `WORLD_SIZE` is unset (a single process).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From `get` (a variable's value, if set): the rules of [`DistEnv::from_env`].
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        // `value` of `var` as an integer that `ok` accepts, else an error saying `why`.
        let checked =
            |var: &'static str, value: String, ok: &dyn Fn(i64) -> bool, why: String| match value
                .trim()
                .parse::<i64>()
            {
                Ok(n) if ok(n) => Ok(n),
                Ok(_) => Err(DistError::Invalid { var, value, why }),
                Err(_) => Err(DistError::Invalid {
                    var,
                    value,
                    why: "not an integer".into(),
                }),
            };
        let world_size = checked(
            "WORLD_SIZE",
            world,
            &|n| n >= 1,
            "must be at least 1".into(),
        )?;
        let required = |var: &'static str| get(var).ok_or(DistError::Missing { var });
        let is_rank = |n: i64| (0..world_size).contains(&n);
        let rank = checked(
            "RANK",
            required("RANK")?,
            &is_rank,
            format!("must be in 0..{world_size} (WORLD_SIZE={world_size})"),
        )?;
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => checked(
                "LOCAL_RANK",
                v,
                &is_rank,
                format!("must be in 0..{world_size}"),
            )?,
            None => rank,
        };
        let master_addr = required("MASTER_ADDR")?;
        if master_addr.trim().is_empty() {
            return Err(DistError::Invalid {
                var: "MASTER_ADDR",
                value: master_addr,
                why: "empty".into(),
            });
        }
        let port_text = required("MASTER_PORT")?;
        let master_port = match port_text.trim().parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                return Err(DistError::Invalid {
                    var: "MASTER_PORT",
                    value: port_text,
                    why: "must be a port number in 1..=65535".into(),
                })
            }
        };
        Ok(Some(Self {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            agent_store: get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True"),
        }))
    }

    fn addr(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const GOOD: [(&str, &str); 4] = [
        ("WORLD_SIZE", "2"),
        ("RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ];

    fn with(change: (&'static str, &'static str)) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = GOOD
            .iter()
            .copied()
            .filter(|(k, _)| *k != change.0)
            .collect();
        if !change.1.is_empty() {
            v.push(change);
        }
        v
    }

    #[test]
    fn results_travel_exactly() {
        type R = Vec<(usize, Result<(f32, f64, Vec<i64>, Option<f32>), String>)>;
        let x: R = vec![
            (0, Ok((f32::NAN, f64::INFINITY, vec![1, -2], None))),
            (3, Ok((0.1, -0.0, vec![], Some(f32::MIN_POSITIVE)))),
            (5, Err("bad".into())),
        ];
        let bytes = rmp_serde::to_vec(&x).unwrap();
        let y: R = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(format!("{x:?}"), format!("{y:?}"));
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        struct Row {
            a: String,
            b: f32,
            c: Option<f32>,
            d: usize,
            e: Vec<i64>,
            f: bool,
        }
        type S = Vec<(usize, Result<(Row, Vec<Row>), String>)>;
        let row = || Row {
            a: "x".into(),
            b: 1.0,
            c: None,
            d: 3,
            e: vec![1],
            f: true,
        };
        let x: S = vec![(0, Ok((row(), vec![row(), row()])))];
        let y: S = rmp_serde::from_slice(&rmp_serde::to_vec(&x).unwrap()).unwrap();
        assert_eq!(format!("{x:?}"), format!("{y:?}"));
    }

    #[test]
    fn uneven_splits_cover_every_row_once() {
        for (n, world) in [(0, 2), (1, 2), (5, 2), (7, 3), (8, 4), (2, 5)] {
            let parts: Vec<_> = (0..world).map(|r| split(n, world, r)).collect();
            let rows: Vec<usize> = parts.iter().cloned().flatten().collect();
            assert_eq!(rows, (0..n).collect::<Vec<_>>(), "{n} rows, {world} ranks");
            let (min, max) = parts.iter().fold((usize::MAX, 0), |(a, b), p| {
                (a.min(p.len()), b.max(p.len()))
            });
            assert!(max - min <= 1, "{parts:?}");
        }
        assert_eq!(split(5, 2, 0), 0..3);
        assert_eq!(split(5, 2, 1), 3..5);
    }

    #[test]
    fn shards_are_equal_and_contiguous_and_must_divide_the_batch() {
        assert_eq!(shard(8, 2, 0).unwrap(), 0..4);
        assert_eq!(shard(8, 2, 1).unwrap(), 4..8);
        assert_eq!(shard(8, 1, 0).unwrap(), 0..8);
        assert_eq!(
            shard(6, 4, 0).unwrap_err().to_string(),
            "WORLD_SIZE=4: must divide the global batch of 6 rows (each rank trains on an equal shard)"
        );
    }

    #[test]
    fn the_environment_is_read_and_bad_values_are_named() {
        assert_eq!(
            DistEnv::from_vars(vars(&[])).unwrap(),
            None,
            "no WORLD_SIZE: one process"
        );
        let env = DistEnv::from_vars(vars(&GOOD)).unwrap().unwrap();
        assert_eq!((env.rank, env.world_size, env.local_rank), (1, 2, 1));
        assert!(!env.agent_store);
        let mut torchrun = GOOD.to_vec();
        torchrun.push(("TORCHELASTIC_USE_AGENT_STORE", "True"));
        assert!(
            DistEnv::from_vars(vars(&torchrun))
                .unwrap()
                .unwrap()
                .agent_store
        );
        assert_eq!(env.addr(), "127.0.0.1:29500");
        let err = |change| {
            DistEnv::from_vars(vars(&with(change)))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(("RANK", "")),
            "RANK is not set (set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT, as torchrun does)"
        );
        assert_eq!(err(("RANK", "2")), "RANK=2: must be in 0..2 (WORLD_SIZE=2)");
        assert_eq!(err(("RANK", "one")), "RANK=one: not an integer");
        assert_eq!(err(("WORLD_SIZE", "0")), "WORLD_SIZE=0: must be at least 1");
        assert_eq!(
            err(("MASTER_PORT", "70000")),
            "MASTER_PORT=70000: must be a port number in 1..=65535"
        );
        assert!(err(("MASTER_ADDR", "")).starts_with("MASTER_ADDR is not set"));
        assert_eq!(err(("LOCAL_RANK", "5")), "LOCAL_RANK=5: must be in 0..2");
    }
}

#[cfg(test)]
mod testing {
    use super::DistEnv;

    /// A port free right now on the loopback interface, never the same twice in this process
    /// (tests run in parallel, and two jobs on one port would meet at one store).
    pub fn free_port() -> u16 {
        static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
        let mut given = GIVEN.lock().unwrap();
        loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if !given.contains(&port) {
                given.push(port);
                return port;
            }
        }
    }

    pub fn env(rank: i64, world_size: i64, port: u16) -> DistEnv {
        DistEnv {
            rank,
            world_size,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
        }
    }
}
