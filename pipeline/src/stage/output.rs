//! What a command may write over. Every writer resolves its `--out` first ([`Target::claim`]):
//! it never replaces the working directory, a directory above it, or anything that holds one of
//! its inputs; it replaces an existing directory only when that directory is empty or holds an
//! earlier output of the same stage (its `manifest.json` says so), unless `--force`; and it
//! holds an exclusive lock (`OUT.lock`, beside the output) for as long as it writes, so two
//! commands never write one output.
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};

use super::manifest::read_manifest;
use super::staging::is_ours;
use crate::error::UsageError;

/// `--out` and `--force`, shared by every command that writes a stage directory.
#[derive(Debug, Clone, clap::Args)]
pub struct OutArg {
    /// Output directory, written as OUT.partial and renamed into place when complete (an
    /// interrupted training command resumes from it). `sample`, `logprob` and `tokenizer train`
    /// also take a file ending in .parquet / .json. An existing OUT is replaced only when it is
    /// empty or holds an earlier output of the same command.
    #[arg(long = "out", value_name = "OUT")]
    pub path: PathBuf,
    /// Replace OUT even when it is not an earlier output of this command. Never the working
    /// directory, a directory above it, or one that holds an input.
    #[arg(long)]
    pub force: bool,
}

impl OutArg {
    /// What this command may replace at `--out`.
    pub fn replace(&self) -> Replace {
        if self.force {
            Replace::Anything
        } else {
            Replace::SameStage
        }
    }
}

/// What an existing output may be replaced by a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// An empty directory, or an earlier output of the same stage.
    SameStage,
    /// An empty directory, or any stage's output: the stage directories of a run.
    AnyStage,
    /// Whatever is there (`--force`), still never the working directory or an input.
    Anything,
}

/// An output path, checked and locked: what a stage writes into.
#[derive(Debug)]
pub struct Target {
    /// As the user gave it (for messages and manifests).
    pub path: PathBuf,
    _lock: Lock,
}

impl Target {
    /// Checks that stage `stage` may write `out`, reading `inputs`, and takes its lock.
    /// Refusals are usage errors (exit 2) naming the path and what to do instead.
    pub fn claim(out: &Path, stage: &str, inputs: &[PathBuf], replace: Replace) -> Result<Self> {
        let resolved = resolve(out)?;
        guard_inputs(out, &resolved, inputs)?;
        if out.exists() || out.is_symlink() {
            check_replaceable(out, stage, replace)?;
        }
        let staging = sibling(out, "partial");
        if staging.exists() && !is_ours(&staging) && replace != Replace::Anything {
            return Err(UsageError::with_hint(
                format!(
                    "{} exists and was not left by an ember command; refusing to replace it",
                    staging.display()
                ),
                "move it away, or pass --force",
            )
            .into());
        }
        Self::lock(out, &resolved)
    }

    /// Checks that a one-file output may be written ([`check_file_out`]) and takes its lock.
    pub fn claim_file(out: &Path, inputs: &[PathBuf]) -> Result<Self> {
        let inputs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        check_file_out(out, &inputs)?;
        Self::lock(out, &resolve(out)?)
    }

    /// Takes `OUT.lock` beside the resolved output.
    fn lock(out: &Path, resolved: &Path) -> Result<Self> {
        let lock = Lock::acquire(&sibling(resolved, "lock"), |pid| {
            format!(
                "{} is being written by another ember process (pid {pid}); refusing to write it concurrently",
                out.display()
            )
        })?;
        Ok(Self {
            path: out.to_path_buf(),
            _lock: lock,
        })
    }
}

/// Checks a one-file output (`reward score --out`, `reward eval --out`): never an input, a file
/// inside an input directory (a model or data directory), or a directory. An existing file is
/// replaced, as `cp` and `curl -o` do.
pub fn check_file_out(out: &Path, inputs: &[&Path]) -> Result<()> {
    let resolved = resolve(out)?;
    let inputs: Vec<PathBuf> = inputs.iter().map(|p| p.to_path_buf()).collect();
    guard_inputs(out, &resolved, &inputs)?;
    if out.is_dir() {
        return Err(UsageError::with_hint(
            format!("--out {} is a directory", out.display()),
            "give a file path (its extension picks the format)",
        )
        .into());
    }
    Ok(())
}

/// `OUT.<ext>` beside `OUT`: the staging directory (`partial`) and the lock (`lock`).
pub fn sibling(out: &Path, ext: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{name}.{ext}"))
}

/// The absolute path `out` names: symlinks resolved as far as the path exists, and `..` taken
/// after them, as the kernel does.
fn resolve(out: &Path) -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let mut path = PathBuf::new();
    for c in cwd.join(out).components() {
        match c {
            Component::CurDir => {}
            // `path` is canonical wherever it exists, so its lexical parent is the real one.
            Component::ParentDir => {
                path.pop();
            }
            Component::Normal(name) => {
                path.push(name);
                if let Ok(real) = path.canonicalize() {
                    path = real;
                }
            }
            root => path.push(root),
        }
    }
    Ok(path)
}

/// Refuses an output that is, or holds, the working directory or an input, or that lies inside
/// an input directory (writing there would change, or replace a file of, what the command reads).
fn guard_inputs(out: &Path, resolved: &Path, inputs: &[PathBuf]) -> Result<()> {
    let cwd = std::env::current_dir()
        .and_then(|c| c.canonicalize())
        .context("reading the working directory")?;
    if cwd.starts_with(resolved) {
        let what = if cwd == resolved {
            "the working directory"
        } else {
            "a directory above the working directory"
        };
        return Err(UsageError::with_hint(
            format!("--out {} is {what}; refusing to replace it", out.display()),
            "give a new directory, e.g. --out out/NAME",
        )
        .into());
    }
    for input in inputs {
        let Ok(input_abs) = input.canonicalize() else {
            continue;
        };
        if input_abs.starts_with(resolved) {
            let what = if input_abs == resolved { "is" } else { "holds" };
            return Err(UsageError::with_hint(
                format!(
                    "--out {} {what} an input of this command ({}); refusing to replace it",
                    out.display(),
                    input.display()
                ),
                "write the output somewhere else",
            )
            .into());
        }
    }
    let within = inputs
        .iter()
        .filter(|p| p.is_dir())
        .find(|p| p.canonicalize().is_ok_and(|dir| resolved.starts_with(dir)));
    if let Some(dir) = within {
        return Err(UsageError::with_hint(
            format!(
                "--out {} is inside {}, an input directory of this command; refusing to write into it",
                out.display(),
                dir.display()
            ),
            "write the output somewhere else",
        )
        .into());
    }
    Ok(())
}

/// Refuses to replace an existing `out` that `replace` does not allow.
fn check_replaceable(out: &Path, stage: &str, replace: Replace) -> Result<()> {
    if replace == Replace::Anything {
        return Ok(());
    }
    let hint = "choose another --out, or pass --force to replace it";
    if !out.is_dir() {
        return Err(UsageError::with_hint(
            format!("--out {} exists and is not a directory", out.display()),
            hint,
        )
        .into());
    }
    let empty = fs::read_dir(out)
        .with_context(|| format!("listing {}", out.display()))?
        .next()
        .is_none();
    if empty {
        return Ok(());
    }
    let manifest = read_manifest(out).ok().flatten();
    let what = match manifest {
        Some(m) if m.stage == stage || replace == Replace::AnyStage => return Ok(()),
        Some(m) => format!("an `ember {}` output, not `ember {stage}`", m.stage),
        None => "not an Ember output (no manifest.json)".to_string(),
    };
    Err(UsageError::with_hint(
        format!(
            "--out {} already exists and is {what}; refusing to replace it",
            out.display()
        ),
        hint,
    )
    .into())
}

/// An exclusive `flock` on a lock file, removed when dropped. The kernel releases the lock when
/// the process dies (even on `kill -9`); a lock file left then is taken over by the next writer.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path`, or fails at once (exit 1) with `busy(holder's pid)`.
    pub fn acquire(path: &Path, busy: impl Fn(&str) -> String) -> Result<Self> {
        loop {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(path)
                .with_context(|| format!("cannot create lock file {}", path.display()))?;
            // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let holder = fs::read_to_string(path).unwrap_or_default();
                let holder = holder.trim();
                let holder = if holder.is_empty() { "unknown" } else { holder };
                return Err(anyhow!(busy(holder)));
            }
            // The previous holder may have removed the file between our open and our flock:
            // then we hold a lock on a deleted file, and must take the new one.
            let same = match (file.metadata(), fs::metadata(path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0)?;
            write!(file, "{}", std::process::id())?;
            return Ok(Self {
                _file: file,
                path: path.to_path_buf(),
            });
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so no one takes a lock on a file about to go.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::exit_code;

    fn stage_output(dir: &Path, stage: &str) {
        fs::create_dir_all(dir).unwrap();
        let m = serde_json::json!({
            "stage": stage, "version": "0", "fingerprint": "f", "config": {}, "inputs": [],
            "artifacts": {}, "metrics": {}, "started_at_unix": 0, "duration_s": 0.0
        });
        fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
    }

    fn refused(r: Result<Target>, words: &str) {
        let err = r.unwrap_err();
        assert_eq!(exit_code(&err), 2, "{err:#}");
        assert!(format!("{err:#}").contains(words), "{err:#}");
    }

    #[test]
    fn only_empty_dirs_and_outputs_of_the_same_stage_are_replaced_without_force() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        drop(Target::claim(&out, "sft", &[], Replace::SameStage).unwrap());
        fs::create_dir_all(&out).unwrap();
        drop(Target::claim(&out, "sft", &[], Replace::SameStage).unwrap());
        stage_output(&out, "sft");
        drop(Target::claim(&out, "sft", &[], Replace::SameStage).unwrap());
        refused(
            Target::claim(&out, "rank", &[], Replace::SameStage),
            "an `ember sft` output, not `ember rank`",
        );
        drop(Target::claim(&out, "rank", &[], Replace::AnyStage).unwrap());
        let mine = tmp.path().join("mine");
        fs::create_dir_all(&mine).unwrap();
        fs::write(mine.join("notes.txt"), "precious").unwrap();
        refused(
            Target::claim(&mine, "sft", &[], Replace::SameStage),
            "not an Ember output",
        );
        refused(
            Target::claim(&mine, "sft", &[], Replace::AnyStage),
            "not an Ember output",
        );
        drop(Target::claim(&mine, "sft", &[], Replace::Anything).unwrap());
        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        refused(
            Target::claim(&file, "sft", &[], Replace::SameStage),
            "is not a directory",
        );
    }

    #[test]
    fn inputs_and_the_working_directory_are_never_replaced_even_with_force() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("d");
        fs::create_dir_all(&data).unwrap();
        let input = data.join("data.jsonl");
        fs::write(&input, "{}").unwrap();
        let inputs = [input.clone()];
        refused(
            Target::claim(&data, "ingest", &inputs, Replace::Anything),
            "holds an input of this command",
        );
        refused(
            Target::claim(&input, "ingest", &inputs, Replace::Anything),
            "is an input",
        );
        refused(
            Target::claim(tmp.path(), "ingest", &inputs, Replace::Anything),
            "holds an input",
        );
        let cwd = std::env::current_dir().unwrap();
        refused(
            Target::claim(Path::new("."), "synth", &[], Replace::Anything),
            "is the working directory",
        );
        refused(
            Target::claim(Path::new(".."), "synth", &[], Replace::Anything),
            "above the working directory",
        );
        refused(
            Target::claim(&cwd.join("x/../.."), "synth", &[], Replace::Anything),
            "above the working directory",
        );
        assert!(check_file_out(&input, &[&input]).is_err());
        assert!(check_file_out(&data.join("scored.jsonl"), &[&input]).is_ok());
        let err = check_file_out(&data.join("scored.jsonl"), &[&data]).unwrap_err();
        assert!(format!("{err:#}").contains("is inside"), "{err:#}");
    }

    #[test]
    fn a_second_writer_is_refused_and_the_lock_file_goes_with_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let first = Target::claim(&out, "sft", &[], Replace::SameStage).unwrap();
        let err = Target::claim(&out, "sft", &[], Replace::SameStage).unwrap_err();
        assert!(format!("{err:#}").contains("being written by another ember process"));
        assert!(sibling(&out, "lock").exists());
        drop(first);
        assert!(!sibling(&out, "lock").exists());
        drop(Target::claim(&out, "sft", &[], Replace::SameStage).unwrap());
    }
}
