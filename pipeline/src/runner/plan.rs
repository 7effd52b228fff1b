//! The table of a run: which stage runs in which directory, on what it reads. Each row is one
//! line; [`Planned::new`] asks the stage itself (its [`Stage`] impl) for its fingerprint, its
//! config problems and how to run it, so nothing about a stage is written here twice.
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::Result;

use crate::config::{DataConfig, Invalid, RunConfig};
use crate::stage::{self, Common, Manifest, Stage};
use crate::stages::{self, OnPolicy};

use super::stage_dir;

type Exec = Box<dyn Fn(&Path) -> Result<Manifest>>;
type Fingerprint = Box<dyn Fn() -> Result<String>>;

/// One wired stage of a run.
pub struct Planned {
    /// Pipeline name (`data`, `sft`, …), the section of the run config.
    pub name: &'static str,
    /// `RUN/NN-name`.
    pub dir: PathBuf,
    /// What it reads, in the order it hashes them.
    pub inputs: Vec<PathBuf>,
    /// What is wrong with its config section, keys relative to the section.
    pub invalid: Vec<Invalid>,
    /// [`Stage::SHARDS`]: every rank of a job runs it (else rank 0 alone).
    pub shards: bool,
    fingerprint: Fingerprint,
    exec: Exec,
}

impl Planned {
    /// The stage `cfg` as the pipeline's `name`, reading `inputs`.
    pub fn new<S>(
        name: &'static str,
        run: &Path,
        cfg: &S,
        common: &Common,
        inputs: S::Inputs,
    ) -> Self
    where
        S: Stage + Clone + 'static,
        S::Inputs: 'static,
    {
        let wired = Rc::new((cfg.clone(), common.clone(), inputs));
        let paths = S::input_paths(&wired.2);
        let (f, e) = (Rc::clone(&wired), wired);
        Self {
            name,
            dir: stage_dir(run, name),
            inputs: paths,
            invalid: cfg.check(),
            shards: S::SHARDS,
            fingerprint: Box::new(move || stage::fingerprint(&f.0, &f.1, &f.2)),
            exec: Box::new(move |out| stage::run(&e.0, &e.1, &e.2, out, stage::Replace::AnyStage)),
        }
    }

    /// The fingerprint the stage would get if it ran now.
    pub fn expected_fingerprint(&self) -> Result<String> {
        (self.fingerprint)()
    }

    /// Runs the stage into its directory.
    pub fn execute(&self) -> Result<Manifest> {
        (self.exec)(&self.dir)
    }

    /// `Ok(manifest)` when the stage is done and current; `Err(reason)` otherwise.
    pub fn check(&self) -> Result<std::result::Result<Manifest, String>> {
        let Some(m) = stage::read_manifest(&self.dir).ok().flatten() else {
            return Ok(Err("not run yet".into()));
        };
        if let Some(missing) = self.inputs.iter().find(|p| !p.exists()) {
            return Ok(Err(format!("input {} is missing", missing.display())));
        }
        if m.fingerprint != self.expected_fingerprint()? {
            return Ok(Err("config or inputs changed".into()));
        }
        if let Some(reason) = stage::verify(&self.dir, &m)? {
            return Ok(Err(reason));
        }
        Ok(Ok(m))
    }
}

/// The wired stages of a run config, in order, with their directories inside `run`: one row
/// per stage (its name, its config section, what it reads).
#[rustfmt::skip]
pub fn plan(cfg: &RunConfig, run: &Path) -> Vec<Planned> {
    use stages::{eval, report, reward, sft};
    let (t, dir) = (Table { run, common: cfg.common() }, |name| stage_dir(run, name));
    let on_sft = on_sft(cfg, run);
    let base = cfg.base.as_deref().map(expand_home);
    let sft_inputs = sft::Inputs { init: base.clone(), ..sft::Inputs::fresh(dir("data"), dir("tokenizer")) };
    let mut sft_row = t.row("sft", &cfg.sft, sft_inputs);
    if cfg.sft.steps == 0 && base.is_none() {
        sft_row.invalid.push(Invalid::new("steps", "0 (no SFT) needs a top-level `base` policy"));
    }
    let mut plans = vec![
        plan_data(&t, cfg),
        plan_tokenizer(&t, cfg, base, dir("data")),
        sft_row,
        t.row("reward", &cfg.reward, reward::Inputs::from_sft(dir("data"), dir("sft"))),
        t.row("rank", &cfg.rank, on_sft.clone()),
        t.row("finetune", &cfg.finetune, finetune_inputs(cfg, run, &on_sft)),
        t.row("refine", &cfg.refine, on_sft.clone()),
        t.row("compare", &cfg.compare, on_sft),
        t.row("eval", &cfg.eval, eval::Inputs { model: dir("reward"), data: vec![dir("data").join("test.parquet")] }),
    ];
    let upstream = plans.iter().map(|p| p.dir.clone()).collect();
    plans.push(t.row("report", &cfg.report, report::Inputs { stages: upstream }));
    plans
}

/// What every row of a run shares: the run directory and the common settings.
struct Table<'a> {
    run: &'a Path,
    common: Common,
}

impl Table<'_> {
    fn row<S: Stage + Clone + 'static>(
        &self,
        name: &'static str,
        cfg: &S,
        inputs: S::Inputs,
    ) -> Planned {
        Planned::new(name, self.run, cfg, &self.common, inputs)
    }
}

/// The data stage: `synth`, or `ingest` of the config's input files.
fn plan_data(t: &Table, cfg: &RunConfig) -> Planned {
    match &cfg.data {
        DataConfig::Synth(synth) => t.row("data", synth, stages::synth::Inputs),
        DataConfig::Ingest { inputs, config } => {
            let inputs = stages::ingest::Inputs {
                data: inputs.clone(),
            };
            t.row("data", config, inputs)
        }
    }
}

/// The tokenizer stage: trained on the data, or the `base` policy's (then `[tokenizer]` must
/// be left at its defaults: it would be ignored).
fn plan_tokenizer(t: &Table, cfg: &RunConfig, base: Option<PathBuf>, data: PathBuf) -> Planned {
    let ignored = base.is_some() && cfg.tokenizer != stages::tokenizer::Config::default();
    let mut row = t.row(
        "tokenizer",
        &cfg.tokenizer,
        stages::tokenizer::Inputs { data, base },
    );
    if ignored {
        row.invalid.push(Invalid::new(
            "",
            "the run has a `base` policy, whose tokenizer it uses: leave [tokenizer] out",
        ));
    }
    row
}

/// `~/…` → the home directory's `…` (TOML has no shell to expand it).
pub fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

/// rank, refine and compare work on the SFT policy's answers to the evaluation prompts: synth's
/// held-out `eval_prompts.parquet`, or the test split of ingested data.
fn on_sft(cfg: &RunConfig, run: &Path) -> OnPolicy {
    let data = stage_dir(run, "data");
    let prompts = match cfg.data {
        DataConfig::Synth(_) => data.join("eval_prompts.parquet"),
        DataConfig::Ingest { .. } => data.join("test.parquet"),
    };
    OnPolicy {
        policy: stage_dir(run, "sft"),
        reward: stage_dir(run, "reward"),
        prompts,
    }
}

/// finetune trains on the training split's prompts, evaluates on the held-out ones and mixes in
/// the SFT demonstrations when the data stage made them (synth does, for `algo = "rs"`).
fn finetune_inputs(cfg: &RunConfig, run: &Path, on_sft: &OnPolicy) -> stages::finetune::Inputs {
    let data = stage_dir(run, "data");
    let synth = matches!(cfg.data, DataConfig::Synth(_));
    let rs = cfg.finetune.algo == policy::finetune::Algo::Rs;
    stages::finetune::Inputs {
        on: OnPolicy {
            prompts: data.join("train.parquet"),
            ..on_sft.clone()
        },
        eval_prompts: Some(on_sft.prompts.clone()),
        mix_sft: (synth && rs).then(|| data.join("sft.parquet")),
        from_refine: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_wires_every_stage_in_pipeline_order() {
        let run = Path::new("/r");
        let names: Vec<&str> = plan(&RunConfig::default(), run)
            .iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, super::super::STAGES);
        let plans = plan(&RunConfig::default(), run);
        let report = plans.last().unwrap();
        let upstream: Vec<PathBuf> = plans[..9].iter().map(|p| p.dir.clone()).collect();
        assert_eq!(report.inputs, upstream);
        let eval = &plans[8];
        let test = stage_dir(run, "data").join("test.parquet");
        assert_eq!(eval.inputs, [stage_dir(run, "reward"), test]);
        assert_eq!(
            plans[2].inputs,
            [
                stage_dir(run, "data"),
                stage_dir(run, "tokenizer").join("tokenizer.json")
            ]
        );
    }
}
