//! Data-parallel training end to end: `ember launch -n 2` runs two Gloo ranks on the loopback
//! interface, and what they train must equal one process on the combined batch; a killed rank
//! stops the job with its name, and a re-launch resumes; bad setups are named.
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{assert_exit_2, ember, ok, text, EMBER, TINY};

/// Synthetic addition data and a character-level tokenizer in `dir` (`data/`, `tok/`), and
/// `tmp/`, the temporary directory of the test's ranks: ranks remove the scratch directories of
/// dead ranks in theirs, and the kill test must see its own orphan, not another test's ranks.
fn setup(dir: &Path) {
    fs::create_dir(dir.join("tmp")).unwrap();
    ok(&ember(
        &[
            "synth", "--task", "add", "--out", "data", "--pairs", "300", "--demos", "64",
        ],
        dir,
    ));
    ok(&ember(
        &["tokenizer", "train", "--data", "data", "--out", "tok"],
        dir,
    ));
}

/// `reward train` args with negatives mined by refinement every other step.
fn mining(mut reward_args: Vec<String>) -> Vec<String> {
    let flags = words("--negatives refine --mine-every 2 --mine-steps", "2");
    reward_args.splice(2..2, flags);
    reward_args
}

/// A port free on the loopback interface now.
fn free_port() -> String {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port().to_string()
}

/// A temporary directory with [`setup`]'s data and tokenizer, an energy model `rm1` and a
/// policy `sft1`, each trained by one process.
fn with_models() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    run(dir, &reward_args("rm1", "20"));
    run(dir, &sft_args(dir, "sft1"));
    tmp
}

fn reward_args(out: &str, steps: &str) -> Vec<String> {
    let flags = format!(
        "reward train --data data --tokenizer tok --steps {steps} --batch 8 --lr 2e-3 \
         --d-model 32 --n-layer 1 --n-head 2 --eval-every 10 --checkpoint-every 5 --out"
    );
    words(&flags, out)
}

/// `words` split at spaces, then `last`.
fn words(words: &str, last: &str) -> Vec<String> {
    words
        .split_whitespace()
        .chain([last])
        .map(String::from)
        .collect()
}

fn launched(n: &str, args: &[String]) -> Vec<String> {
    let mut v = vec!["launch".to_string(), "-n".into(), n.into(), "--".into()];
    v.extend(args.iter().cloned());
    v
}

fn run(dir: &Path, args: &[String]) -> String {
    // One thread per process, for one process and for every rank: libtorch's reductions round
    // differently with another number of threads, and these comparisons go to the last bit.
    let o = Command::new(EMBER)
        .args(args)
        .current_dir(dir)
        .env("OMP_NUM_THREADS", "1")
        .env("TMPDIR", dir.join("tmp"))
        .output()
        .unwrap();
    ok(&o)
}

/// The largest |a − b| over every tensor of two safetensors files (same names and shapes).
fn max_abs_diff(a: &Path, b: &Path) -> f64 {
    let a = tch::Tensor::read_safetensors(a).unwrap();
    let b: std::collections::HashMap<_, _> = tch::Tensor::read_safetensors(b)
        .unwrap()
        .into_iter()
        .collect();
    assert!(!a.is_empty());
    a.iter()
        .map(|(name, t)| (t - &b[name]).abs().max().double_value(&[]))
        .fold(0.0, f64::max)
}

/// `sft` of a 1-block GPT-2 (written to `dir/small.json`): micro-batches of 8 rows, 2
/// accumulated per step, so the global token count of each micro-batch normalises the loss.
fn sft_args(dir: &Path, out: &str) -> Vec<String> {
    let vocab = policy::Tokenizer::load(dir.join("tok/tokenizer.json"))
        .unwrap()
        .vocab_size();
    fs::write(
        dir.join("small.json"),
        format!(
            r#"{{"architecture": "gpt2", "vocab_size": {vocab}, "n_ctx": 64, "d_model": 32, "n_layer": 1, "n_head": 2}}"#
        ),
    )
    .unwrap();
    words(
        "sft --data data --tokenizer tok --model-config small.json --steps 20 --batch 8 \
         --grad-accum 2 --eval-every 10 --out",
        out,
    )
}

#[test]
fn two_ranks_train_what_one_process_trains_on_the_combined_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    // Reward training: 20 steps of a global batch of 8, as 2 ranks × 4 and as 1 × 8.
    let weights = "model.safetensors";
    let (d, out) = one_vs_two(dir, "rm", weights, |out| reward_args(out, "20"));
    assert!(out.contains("rank 1 is pid"), "{out}");
    assert!(d <= 1e-5, "reward: max |Δw| = {d}");
    assert!(!dir.join("rm2.partial").exists());
    // Only rank 0 printed the result.
    assert_eq!(out.matches("val accuracy").count(), 1, "{out}");
    // With negatives mined by refinement every other step: every rank mines the whole batch as
    // one process does (the same replay buffer) and trains on its shard's negatives.
    let (d, _) = one_vs_two(dir, "mine", weights, |out| mining(reward_args(out, "20")));
    assert!(d <= 1e-5, "reward with mined negatives: max |Δw| = {d}");
    // With relaxed negatives: each pair's noise has its own stream, whichever rank holds it
    // (rank 1 drawing rank 0's streams moved the weights by 1.5e-2). The bound is looser: the
    // shards' shorter padding rounds the descent's normalised steps differently, and AdamW turns
    // the rounding of near-zero embedding gradients into steps of ~lr (measured: 9.4e-6, in
    // `wte` only).
    let relaxed = |out: &str| {
        let mut args = reward_args(out, "20");
        args.splice(2..2, words("--negatives relaxed --mine-steps", "2"));
        args
    };
    let (d, _) = one_vs_two(dir, "relaxed", weights, relaxed);
    assert!(d <= 5e-5, "reward with relaxed negatives: max |Δw| = {d}");
    let mined = |out: &str| {
        let m = fs::read_to_string(dir.join(out).join("manifest.json")).unwrap();
        let mut m: serde_json::Value = serde_json::from_str(&m).unwrap();
        let mut mined = m["metrics"]["mined"].take();
        mined.as_object_mut().unwrap().remove("seconds");
        mined
    };
    assert_eq!(mined("mine1"), mined("mine2"));
    // SFT with gradient accumulation (sft_args).
    let (d, _) = one_vs_two(dir, "sft", weights, |out| sft_args(dir, out));
    assert!(d <= 1e-5, "sft: max |Δw| = {d}");
}

/// Runs `args(NAME1)` as one process and `args(NAME2)` on two ranks: the largest |Δw| between
/// their `model` files, and what the two ranks printed.
fn one_vs_two(
    dir: &Path,
    name: &str,
    model: &str,
    args: impl Fn(&str) -> Vec<String>,
) -> (f64, String) {
    let (one, two) = (format!("{name}1"), format!("{name}2"));
    run(dir, &args(&one));
    let out = run(dir, &launched("2", &args(&two)));
    let d = max_abs_diff(&dir.join(one).join(model), &dir.join(two).join(model));
    (d, out)
}

#[test]
fn ranks_sample_score_and_search_what_one_process_does() {
    let tmp = with_models();
    let dir = tmp.path();
    // Rank-and-select: the ranks share the sampling and scoring batches, and rank 0 writes the
    // bytes one process writes, for 2 ranks and for 3 (which share the batches unevenly).
    let rank = |out: &str| {
        words("rank --policy sft1 --reward rm1 --prompts data/eval_prompts.parquet -n 4 --batch 4 --score-batch 4 --max-new-tokens 8 --out", out)
    };
    run(dir, &rank("rank1"));
    run(dir, &launched("2", &rank("rank2")));
    run(dir, &launched("3", &rank("rank3")));
    // `sample`, `reward score` and `logprob` with a file as --out: rank 0 writes the same file.
    let sample = |out: &str| {
        words("sample --policy sft1 --prompts data/eval_prompts.parquet -n 3 --batch 4 --max-new-tokens 8 --out", out)
    };
    let score = |out: &str| {
        words(
            "reward score --model rm1 --input s1.parquet --batch 4 --out",
            out,
        )
    };
    run(dir, &sample("s1.parquet"));
    run(dir, &launched("2", &sample("s2.parquet")));
    run(dir, &score("e1.jsonl"));
    run(dir, &launched("2", &score("e2.jsonl")));
    let logprob = |out: &str| {
        words(
            "logprob --policy sft1 --input s1.parquet --batch 4 --out",
            out,
        )
    };
    run(dir, &logprob("l1.parquet"));
    run(dir, &launched("2", &logprob("l2.parquet")));
    for (one, many) in [
        ("s1.parquet", "s2.parquet"),
        ("e1.jsonl", "e2.jsonl"),
        ("l1.parquet", "l2.parquet"),
    ] {
        assert!(
            fs::read(dir.join(one)).unwrap() == fs::read(dir.join(many)).unwrap(),
            "{many} differs from {one}"
        );
    }
    // `refine` and `compare`: the ranks share the prompts; every row (and step trace) equals one
    // process's but for the wall-clock seconds.
    let refine = |out: &str| {
        words(
            "refine --policy sft1 --reward rm1 --prompts data/eval_prompts.parquet \
             --max-new-tokens 8 --max-prompts 5 --steps 4 --lr 1.0 --out",
            out,
        )
    };
    let compare = |out: &str| {
        words(
            "compare --policy sft1 --reward rm1 --prompts data/eval_prompts.parquet \
             --budgets 1,2,4 --max-new-tokens 8 --max-prompts 5 --resamples 20 --out",
            out,
        )
    };
    run(dir, &refine("refine1"));
    run(dir, &launched("2", &refine("refine2")));
    run(dir, &compare("compare1"));
    run(dir, &launched("2", &compare("compare2")));
    for (one, many, file) in [
        ("refine1", "refine2", "refined.parquet"),
        ("refine1", "refine2", "traces.parquet"),
        ("compare1", "compare2", "compare.parquet"),
    ] {
        let rows = |d: &str| {
            let mut rows = datasets::table::read_parquet_rows(&dir.join(d).join(file)).unwrap();
            for r in &mut rows {
                r.as_object_mut().unwrap().remove("wall_s");
            }
            rows
        };
        assert_eq!(rows(one), rows(many), "{many}/{file}");
    }
    for file in ["candidates.parquet", "selected.parquet"] {
        let one = fs::read(dir.join("rank1").join(file)).unwrap();
        for many in ["rank2", "rank3"] {
            assert!(
                one == fs::read(dir.join(many).join(file)).unwrap(),
                "{many}/{file} differs from one process's"
            );
        }
    }
}

/// Starts `ember launch` with `args`, kills rank 1 (SIGKILL) once `ready` exists, and waits
/// for the launcher, which must fail naming the killed rank: (rank 1's pid, its stderr).
fn kill_rank_1_once(dir: &Path, args: &[String], ready: &Path) -> (i32, String) {
    let log = dir.join("launch.log");
    let mut launcher = Command::new(EMBER)
        .args(args)
        .current_dir(dir)
        .env("OMP_NUM_THREADS", "1")
        .env("TMPDIR", dir.join("tmp"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let clock = Instant::now();
    let pid = loop {
        assert!(clock.elapsed() < Duration::from_secs(120), "no checkpoint");
        assert!(
            launcher.try_wait().unwrap().is_none(),
            "the job ended first"
        );
        let log = fs::read_to_string(&log).unwrap();
        let pid = log
            .lines()
            .find_map(|l| l.strip_prefix("ember launch: rank 1 is pid "))
            .map(|p| p.trim().parse::<i32>().unwrap());
        if let (Some(pid), true) = (pid, ready.exists()) {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // SAFETY: SIGKILL to rank 1, a child of the launcher this test started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed = Instant::now();
    let status = launcher.wait().unwrap();
    assert!(killed.elapsed() < Duration::from_secs(60));
    let log = fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{log}");
    let named = format!("rank 1 (pid {pid}) was killed by signal 9");
    assert!(log.contains(&named), "{log}");
    (pid, log)
}

#[test]
fn a_killed_rank_stops_the_job_by_name_and_a_relaunch_resumes_where_it_left() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    // Mining negatives: the replay buffer, like the weights, must reach rank 1 on resume.
    let args = launched("2", &mining(reward_args("rm", "150")));
    let ckpt = dir.join("rm.partial/ckpt");
    let (pid, log) = kill_rank_1_once(dir, &args, &ckpt);
    // Rank 0 named the rank it lost, unless the launcher's SIGTERM stopped it first.
    assert!(
        log.contains("rank 1 is gone: no heartbeat") || log.contains("interrupted"),
        "{log}"
    );
    assert!(ckpt.exists(), "rank 0 kept its checkpoint: {log}");
    let orphan = dir.join(format!("tmp/ember-reward-rank1-{pid}"));
    assert!(
        orphan.is_dir(),
        "a killed rank cannot remove its scratch directory"
    );
    let resumed = run(dir, &args);
    assert!(resumed.contains("resuming from checkpoint"), "{resumed}");
    assert!(
        !orphan.exists(),
        "the relaunch removed the killed rank's scratch directory"
    );
    // The resumed job ends where an uninterrupted one does.
    run(dir, &launched("2", &mining(reward_args("whole", "150"))));
    let d = max_abs_diff(
        &dir.join("rm/model.safetensors"),
        &dir.join("whole/model.safetensors"),
    );
    assert_eq!(d, 0.0, "resumed vs uninterrupted");
}

/// `finetune` of the `sft1` policy against `rm1` on 12 prompts a round: `rs` trains on batches
/// of 5 of the 12 kept answers (2 ranks share them 3 + 2), `rloo` on 9 samples a step (5 + 4).
fn finetune_args(algo: &str, rounds: &str, out: &str) -> Vec<String> {
    let flags = format!(
        "finetune --policy sft1 --reward rm1 --prompts data/eval_prompts.parquet --algo {algo} \
         --rounds {rounds} -n 3 --prompts-per-round 12 --steps 4 --batch 5 --rloo-prompts 3 \
         --eval-n 4 --eval-samples 2 --max-new-tokens 8 --sample-batch 8 --score-batch 8 \
         --bootstrap 20 --checkpoint-every 2 --out"
    );
    words(&flags, out)
}

#[test]
fn ranks_finetune_what_one_process_finetunes_and_resume_after_a_kill() {
    let tmp = with_models();
    let dir = tmp.path();
    // The ranks share each round's sampling and scoring and train on shares of each step's
    // rows (uneven ones here): the policy ends where one process's does, and every row of
    // rounds.jsonl agrees.
    for (algo, rounds) in [("rs", "2"), ("rloo", "1")] {
        let weights = "policy/model.safetensors";
        let (d, _) = one_vs_two(dir, algo, weights, |out| finetune_args(algo, rounds, out));
        assert!(d <= 1e-5, "{algo}: max |Δw| = {d}");
        let (one, many) = (format!("{algo}1"), format!("{algo}2"));
        let rows = |d: &str| -> Vec<serde_json::Value> {
            let text = fs::read_to_string(dir.join(d).join("rounds.jsonl")).unwrap();
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        let (a, b) = (rows(&one), rows(&many));
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(&b) {
            for (key, x) in a.as_object().unwrap() {
                let y = &b[key];
                match (x.as_f64(), y.as_f64()) {
                    _ if key.ends_with("_seconds") => {}
                    (Some(x), Some(y)) => {
                        assert!((x - y).abs() <= 1e-4, "{algo} {key}: {x} vs {y}")
                    }
                    _ => assert_eq!(x, y, "{algo} {key}"),
                }
            }
        }
    }
    // Killed after round 1 began, the job resumes from rank 0's checkpoint (its state,
    // weights, moments and the round's kept answers reach rank 1) and ends exactly where an
    // uninterrupted job does.
    let args = launched("2", &finetune_args("rs", "4", "killed"));
    let ready = dir.join("killed.partial/round-1/kept.parquet");
    kill_rank_1_once(dir, &args, &ready);
    let resumed = run(dir, &args);
    assert!(resumed.contains("resuming from checkpoint"), "{resumed}");
    assert_eq!(
        resumed.matches("resuming from checkpoint").count(),
        1,
        "rank 0 alone logs: {resumed}"
    );
    run(dir, &launched("2", &finetune_args("rs", "4", "whole")));
    let d = max_abs_diff(
        &dir.join("killed/policy/model.safetensors"),
        &dir.join("whole/policy/model.safetensors"),
    );
    assert_eq!(d, 0.0, "resumed vs uninterrupted");
}

#[test]
fn ember_run_on_two_ranks_ends_where_one_process_does_and_skips_what_is_done() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir(dir.join("tmp")).unwrap();
    fs::write(dir.join("one.toml"), TINY).unwrap();
    let two = format!("{TINY}\n[distributed]\nworld_size = 2\n");
    fs::write(dir.join("two.toml"), two).unwrap();
    run(dir, &words("run one.toml --run-dir", "r1"));
    // `[distributed] world_size = 2` starts two ranks of `ember run`: the training stages run
    // data-parallel, the sampling ones share their batches, the others run on rank 0 alone.
    let out = run(dir, &words("run two.toml --run-dir", "r2"));
    assert!(out.contains("rank 1 is pid"), "{out}");
    for model in [
        "03-sft/model.safetensors",
        "04-reward/model.safetensors",
        "06-finetune/policy/model.safetensors",
    ] {
        let d = max_abs_diff(&dir.join("r1").join(model), &dir.join("r2").join(model));
        assert!(d <= 1e-5, "{model}: max |Δw| = {d}");
    }
    // Rank 0 alone logged the run's events, and the ranks agree (rank 0's view) that every
    // stage is done.
    let events = fs::read_to_string(dir.join("r2/events.jsonl")).unwrap();
    assert_eq!(events.matches(r#""event":"done""#).count(), 10, "{events}");
    let again = run(dir, &words("run two.toml --run-dir", "r2"));
    assert_eq!(again.matches("up to date, skipped").count(), 10, "{again}");
    assert!(dir.join("r2/10-report/report.md").is_file());
    // Under a job of another size, the config's world size is a usage error naming both.
    let o = Command::new(EMBER)
        .args(words("run two.toml --run-dir", "r3"))
        .current_dir(dir)
        .envs([
            ("RANK", "0"),
            ("WORLD_SIZE", "3"),
            ("MASTER_ADDR", "127.0.0.1"),
        ])
        .env("MASTER_PORT", "1")
        .output()
        .unwrap();
    assert_exit_2(
        &o,
        "distributed.world_size = 2, but this rank's job has WORLD_SIZE=3",
    );
}

/// Two network namespaces joined by a veth pair (10.77.R.1/24 and 10.77.R.2/24): two hosts on
/// one machine. Removed on drop.
struct TwoHosts {
    names: [String; 2],
    addrs: [String; 2],
}

impl TwoHosts {
    fn new() -> Self {
        let id = std::process::id();
        let names = [format!("ember-a-{id}"), format!("ember-b-{id}")];
        let subnet = id % 250 + 1;
        let addrs = [format!("10.77.{subnet}.1"), format!("10.77.{subnet}.2")];
        let ip = |args: &str| {
            let o = Command::new("ip").args(args.split(' ')).output().unwrap();
            assert!(o.status.success(), "ip {args}: {}", text(&o));
        };
        let (a, b) = (&names[0], &names[1]);
        let (va, vb) = (format!("va{}", id % 100_000), format!("vb{}", id % 100_000));
        ip(&format!("netns add {a}"));
        ip(&format!("netns add {b}"));
        let hosts = Self {
            names: names.clone(),
            addrs,
        };
        ip(&format!("link add {va} type veth peer name {vb}"));
        for (ns, dev, addr) in [(a, &va, &hosts.addrs[0]), (b, &vb, &hosts.addrs[1])] {
            ip(&format!("link set {dev} netns {ns}"));
            ip(&format!("-n {ns} addr add {addr}/24 dev {dev}"));
            ip(&format!("-n {ns} link set {dev} up"));
            ip(&format!("-n {ns} link set lo up"));
        }
        hosts
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Ranks on two hosts, each started by `ember launch --nnodes 2` on its host, without
/// `GLOO_SOCKET_IFNAME`: each host's name resolves to loopback inside its namespace, where
/// torch.distributed's default Gloo device would listen, so the ranks bind to the address that
/// routes to MASTER_ADDR instead.
#[test]
#[ignore = "needs root and iproute2 (network namespaces); run with --ignored"]
fn ranks_on_two_hosts_train_what_one_process_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let hosts = TwoHosts::new();
    let port = free_port();
    let node = |r: usize| {
        let flags = format!(
            "launch -n 1 --nnodes 2 --node-rank {r} --master-addr {} --master-port {port} --",
            hosts.addrs[0]
        );
        Command::new("ip")
            .args(["netns", "exec", &hosts.names[r], EMBER])
            .args(flags.split(' '))
            .args(reward_args("two-hosts", "20"))
            .current_dir(dir)
            .env_remove("GLOO_SOCKET_IFNAME")
            .env("OMP_NUM_THREADS", "1")
            .env("EMBER_DIST_TIMEOUT", "60")
            .env("TMPDIR", dir.join("tmp"))
            .spawn()
            .unwrap()
    };
    let (mut r0, mut r1) = (node(0), node(1));
    assert!(r1.wait().unwrap().success() && r0.wait().unwrap().success());
    run(dir, &reward_args("one", "20"));
    let d = max_abs_diff(
        &dir.join("one/model.safetensors"),
        &dir.join("two-hosts/model.safetensors"),
    );
    assert!(d <= 1e-5, "max |Δw| = {d}");
}

#[test]
fn bad_distributed_setups_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let with_env = |vars: &[(&str, &str)], args: &[String]| {
        Command::new(EMBER)
            .args(args)
            .current_dir(dir)
            .envs(vars.iter().copied())
            .output()
            .unwrap()
    };
    let train = reward_args("rm", "4");
    let o = with_env(&[("WORLD_SIZE", "2")], &train);
    assert_exit_2(&o, "RANK is not set");
    let o = with_env(
        &[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "0"),
        ],
        &train,
    );
    assert_exit_2(&o, "MASTER_PORT=0: must be a port number");
    let o = with_env(
        &[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "1"),
        ],
        &["status".into(), ".".into()],
    );
    assert_exit_2(&o, "WORLD_SIZE=2: this command runs as one process");
    let o = with_env(&[("EMBER_DIST_TIMEOUT", "soon")], &launched("2", &train));
    assert_exit_2(
        &o,
        "EMBER_DIST_TIMEOUT=soon: must be a positive number of seconds",
    );
    // Nodes: a node rank outside the job, and a loopback address the other nodes cannot reach.
    let nodes = |flags: &str| {
        let mut args = words(&format!("launch -n 1 {flags} --"), "reward");
        args.extend(train.iter().skip(1).cloned());
        args
    };
    let o = with_env(
        &[],
        &nodes("--nnodes 2 --node-rank 2 --master-addr 10.0.0.1"),
    );
    assert_exit_2(
        &o,
        "--node-rank 2 --nnodes 2: the node rank must be in 0..2",
    );
    let o = with_env(&[], &nodes("--nnodes 2 --node-rank 1"));
    assert_exit_2(
        &o,
        "--master-addr 127.0.0.1 with --nnodes 2: the other nodes cannot reach",
    );
    // Three ranks cannot split a global batch of 8.
    let o = ember(
        &launched("3", &train)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        dir,
    );
    assert_exit_2(&o, "WORLD_SIZE=3: must divide the global batch of 8 rows");
    assert!(
        !dir.join("rm").exists() && !dir.join("rm.partial").exists(),
        "{}",
        text(&o)
    );
}

#[test]
fn ranks_on_different_builds_are_refused_on_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    setup(dir);
    let train = reward_args("rm", "4");
    // Rank 1 runs a copy of the binary with one byte more.
    let other = dir.join("ember-other");
    fs::copy(EMBER, &other).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(&other)
        .unwrap()
        .write_all_at_end();
    let port = free_port();
    let rank = |exe: &Path, r: &str| {
        Command::new(exe)
            .args(&train)
            .current_dir(dir)
            .envs([
                ("WORLD_SIZE", "2"),
                ("RANK", r),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", port.as_str()),
                ("EMBER_DIST_TIMEOUT", "60"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let r0 = rank(Path::new(EMBER), "0");
    let r1 = rank(&other, "1");
    for o in [
        r0.wait_with_output().unwrap(),
        r1.wait_with_output().unwrap(),
    ] {
        assert_exit_2(&o, "runs another ember build");
    }
}

/// Appends one byte, so the copy's sha256 differs from the original's.
trait AppendByte {
    fn write_all_at_end(self);
}

impl AppendByte for fs::File {
    fn write_all_at_end(mut self) {
        use std::io::Write;
        self.write_all(b"\0").unwrap();
    }
}
