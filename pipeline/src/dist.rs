//! Running as one rank of several: [`join`] makes the process a member of the job its
//! environment describes (torchrun's and Slurm wrappers' `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`), for the commands that shard their work, and `ember launch` starts such a job
//! of N local ranks.
//!
//! What runs on several ranks: `ember sft` and `ember reward train` (data-parallel: each rank
//! trains on an equal shard of every global batch; gradients are averaged); `ember finetune`
//! (the ranks share each round's sampling and scoring, and train data-parallel); `ember sample`,
//! `ember logprob`, `ember rank` and `ember reward score` (the ranks share the sampling and
//! scoring batches and gather the results); `ember refine` and `ember compare` (the ranks share
//! the prompts); `ember run` (the stages that share their work run on every rank, the others on
//! rank 0 alone). Rank 0 writes the output, metrics and checkpoints. Any other command refuses to
//! run as one rank of several rather than run N copies that race for the same output.
use std::process::{Child, Command as Process, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::cli::Command;
use crate::error::usage;

/// How long a rank waits for the others (rendezvous, each collective) unless
/// `EMBER_DIST_TIMEOUT` (seconds) says otherwise: torch.distributed's default for Gloo.
const DEFAULT_TIMEOUT_S: u64 = 1800;

/// Joins the job of the environment when there is one. `command` must be one that shards its
/// work: any other, started as one rank of several, is a usage error naming `WORLD_SIZE`.
/// `ember run` joins later, once its config's `[distributed]` is read ([`join_run`]).
pub fn join(command: &Command) -> Result<()> {
    let Some(env) = policy::dist::DistEnv::from_env()? else {
        return Ok(());
    };
    if env.world_size == 1 || matches!(command, Command::Run(_)) {
        return Ok(());
    }
    if !shards(command) {
        return Err(usage(format!(
            "WORLD_SIZE={}: this command runs as one process; `ember run`, `sft`, `reward train`, `finetune`, `sample`, `logprob`, `rank`, `refine`, `compare` and `reward score` run on several",
            env.world_size
        )));
    }
    join_env()
}

/// Joins the job the environment describes (it has several ranks).
fn join_env() -> Result<()> {
    let timeout = timeout()?;
    policy::dist::init_from_env(&build_id()?, timeout)?;
    if !policy::dist::is_writer() {
        quiet_stdout();
    }
    Ok(())
}

/// Whether the environment makes this process a rank other than 0 of a job (`RANK` ≠ 0,
/// `WORLD_SIZE` > 1). Such a rank logs warnings and errors only: its results are rank 0's.
/// Malformed values count as not; [`join`] names them.
pub fn secondary_rank() -> bool {
    let var = |name| std::env::var(name).ok()?.trim().parse::<i64>().ok();
    matches!((var("RANK"), var("WORLD_SIZE")), (Some(r), Some(w)) if r != 0 && w > 1)
}

/// `ember run` with `[distributed] world_size = n`: `Some(exit code)` once this process has
/// run the job's `n` local ranks of itself (it was not a rank), `None` when it runs the pipeline
/// itself: alone (`n` = 1), or as one rank of the job the environment describes (joined here),
/// whose `WORLD_SIZE` must then be `n` (or any, for `n` = 1).
pub fn join_run(n: u32) -> Result<Option<ExitCode>> {
    if n == 0 {
        return Err(usage(
            "invalid config value distributed.world_size: must be at least 1",
        ));
    }
    match policy::dist::DistEnv::from_env()? {
        Some(env) if n > 1 && env.world_size != i64::from(n) => Err(usage(format!(
            "distributed.world_size = {n}, but this rank's job has WORLD_SIZE={}: set them equal, or world_size = 1 to take the job's",
            env.world_size
        ))),
        Some(env) if env.world_size > 1 => join_env().map(|()| None),
        Some(_) => Ok(None),
        None if n == 1 => Ok(None),
        None => {
            let command = std::env::args_os()
                .skip(1)
                .map(|a| a.into_string())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|a| usage(format!("{a:?}: an argument that is not UTF-8")))?;
            let args = LaunchArgs {
                nproc: n,
                nnodes: 1,
                node_rank: 0,
                master_addr: "127.0.0.1".into(),
                master_port: None,
                command,
            };
            launch(args).map(Some)
        }
    }
}

/// Sends this process's stdout to /dev/null: the ranks other than 0 print no results (their
/// output directory is scratch); their warnings and errors still reach stderr.
fn quiet_stdout() {
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 with a descriptor this process owns for the call.
        unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

fn shards(command: &Command) -> bool {
    use crate::stages::reward::Command as Reward;
    matches!(
        command,
        Command::Sft(_)
            | Command::Finetune(_)
            | Command::Reward(Reward::Train(_) | Reward::Score(_))
            | Command::Sample(_)
            | Command::Rank(_)
            | Command::Refine(_)
            | Command::Compare(_)
            | Command::Logprob(_)
    )
}

fn timeout() -> Result<Duration> {
    match std::env::var("EMBER_DIST_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(DEFAULT_TIMEOUT_S)),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s > 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
            _ => Err(usage(format!(
                "EMBER_DIST_TIMEOUT={v}: must be a positive number of seconds"
            ))),
        },
    }
}

/// What identifies this binary across ranks: the version and the sha256 of the executable, so
/// ranks started from different builds (an old binary on one node) are refused at init.
fn build_id() -> Result<String> {
    let exe = std::env::current_exe().context("locating the ember executable")?;
    let hash = crate::stage::sha256_file(&exe)?;
    Ok(format!(
        "{} (executable sha256 {})",
        crate::stage::VERSION,
        &hash[..16]
    ))
}

/// `ember launch`: N local ranks of one ember command, on this node of one or several.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    ember launch -n 2 -- reward train --data data/synth --out rm --batch 16\n  \
    ember launch -n 4 --master-port 29600 -- sft --data data/synth --tokenizer tok --out sft\n  \
    # two nodes, 4 ranks each: run on each node with its --node-rank\n  \
    ember launch -n 4 --nnodes 2 --node-rank 0 --master-addr node0 -- sft --data /shared/d --out sft\n\n\
    Each rank gets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT, \
    as torchrun sets them (torchrun and srun can start the ranks instead).")]
pub struct LaunchArgs {
    /// Ranks to start on this machine.
    #[arg(short = 'n', long = "nproc", value_name = "N")]
    pub nproc: u32,
    /// Nodes of the job; each runs `ember launch` with the same -n and its own --node-rank.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub nnodes: u32,
    /// This node's place among the nodes (0 hosts rank 0 and its store).
    #[arg(long, value_name = "R", default_value_t = 0)]
    pub node_rank: u32,
    /// The address of node 0, which every rank reaches rank 0's store at.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub master_addr: String,
    /// The port rank 0's store listens on (default: a free one on one node; 29500, as torchrun,
    /// on several).
    #[arg(long, value_name = "PORT")]
    pub master_port: Option<u16>,
    /// The ember command every rank runs (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Starts the ranks and waits for them. When one fails (an error, a signal), the launcher says
/// which, stops the others (SIGTERM: they checkpoint and exit; SIGKILL after a grace period)
/// and exits with that rank's code. SIGINT or SIGTERM to the launcher reaches every rank.
pub fn launch(args: LaunchArgs) -> Result<ExitCode> {
    check_launch(&args)?;
    let port = match args.master_port {
        Some(p) => p,
        None if args.nnodes > 1 => 29500,
        None => std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for the store")?
            .port(),
    };
    let exe = std::env::current_exe().context("locating the ember executable")?;
    // The ranks share this machine's cores (torchrun sets 1 thread each; the cores divided among
    // the ranks keep small jobs fast too), unless the user chose.
    let threads = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / args.nproc as usize).max(1).to_string()
    });
    let mut ranks: Vec<(usize, Child)> = Vec::new();
    for local in 0..args.nproc {
        let rank = args.node_rank * args.nproc + local;
        let child = Process::new(&exe)
            .env("OMP_NUM_THREADS", &threads)
            .args(&args.command)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("WORLD_SIZE", (args.nnodes * args.nproc).to_string())
            .env("LOCAL_WORLD_SIZE", args.nproc.to_string())
            .env("GROUP_RANK", args.node_rank.to_string())
            .env("MASTER_ADDR", &args.master_addr)
            .env("MASTER_PORT", port.to_string())
            .stdin(Stdio::null())
            .spawn();
        match child {
            Ok(c) => {
                eprintln!("ember launch: rank {rank} is pid {}", c.id());
                ranks.push((rank as usize, c));
            }
            Err(e) => {
                stop(&mut ranks);
                return Err(e).with_context(|| format!("starting rank {rank}"));
            }
        }
    }
    supervise(ranks)
}

/// The launch's flags agree: ranks to start, this node among the nodes, an address the other
/// nodes can reach, and an ember command to run.
fn check_launch(args: &LaunchArgs) -> Result<()> {
    if args.nproc == 0 {
        return Err(usage("--nproc must be at least 1"));
    }
    if args.nnodes == 0 || args.node_rank >= args.nnodes {
        return Err(usage(format!(
            "--node-rank {} --nnodes {}: the node rank must be in 0..{}",
            args.node_rank,
            args.nnodes,
            args.nnodes.max(1)
        )));
    }
    let loopback = args.master_addr == "localhost"
        || (args.master_addr.parse::<std::net::IpAddr>()).is_ok_and(|ip| ip.is_loopback());
    if args.nnodes > 1 && loopback {
        return Err(usage(format!(
            "--master-addr {} with --nnodes {}: the other nodes cannot reach a loopback address; give node 0's address",
            args.master_addr, args.nnodes
        )));
    }
    if args.command.first().is_some_and(|c| c == "launch") {
        return Err(usage(
            "ember launch -- launch: the ranks run another ember command",
        ));
    }
    Ok(())
}

/// Waits for every rank; the first failure stops the rest.
fn supervise(mut running: Vec<(usize, Child)>) -> Result<ExitCode> {
    let mut forwarded = false;
    while !running.is_empty() {
        if !forwarded && policy::interrupt::requested().is_some() {
            forwarded = true;
            signal_all(&running, libc::SIGTERM);
        }
        let mut i = 0;
        while i < running.len() {
            let (rank, child) = &mut running[i];
            let Some(status) = child.try_wait().context("waiting for the ranks")? else {
                i += 1;
                continue;
            };
            if !status.success() {
                eprintln!(
                    "ember launch: rank {rank} (pid {}) {}; stopping the other ranks",
                    child.id(),
                    describe(status)
                );
                running.swap_remove(i);
                stop(&mut running);
                return Ok(ExitCode::from(exit_code(status)));
            }
            running.swap_remove(i);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(ExitCode::SUCCESS)
}

fn signal_all(ranks: &[(usize, Child)], signal: i32) {
    for (_, child) in ranks {
        // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
    }
}

/// SIGTERM to every rank still running (ember checkpoints and exits on it); SIGKILL to those
/// still running after 30 s.
fn stop(ranks: &mut [(usize, Child)]) {
    signal_all(ranks, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    for (_, child) in ranks.iter_mut() {
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".into(),
    }
}

/// A failed rank's exit code, or 128 + its signal, as a shell reports it.
fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code.clamp(1, 255) as u8,
        (None, Some(sig)) => (128 + sig).clamp(1, 255) as u8,
        _ => 1,
    }
}
