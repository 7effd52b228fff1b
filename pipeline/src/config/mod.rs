//! Run configs for `ember run`: one TOML file whose top level holds the settings every stage
//! shares (`seed`, `device`, `run_dir`) and one section per stage, each section being exactly
//! that stage module's `Config` (documented there; every section and key is optional).
//!
//! Loading is strict: unknown keys are usage errors (exit code 2) naming the key path, with a
//! "did you mean" hint picked by edit distance among the keys that exist at that place.
//! `--set section.key=value` overrides are applied to the TOML before it is checked; the value
//! is parsed as TOML (`200`, `0.5`, `true`, `"text"`, `[1, 2]`) and taken as a string otherwise.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::error::{usage, UsageError};
use crate::stage::Common;
use crate::stages;

mod data;
mod invalid;
mod keys;

pub use data::DataConfig;
pub use invalid::{reject, reject_sections, Invalid, KeyLines};
pub use keys::{check_keys, closest, edit_distance, KeyError};

/// A whole run: shared settings and one section per stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The one seed: every RNG of every stage derives from it with a named stream.
    pub seed: u64,
    /// `cpu`, `cuda` or `auto`, for the stages that run a model.
    pub device: policy::device::DeviceArg,
    /// `fp32`, or `bf16`: bf16 autocast on CUDA (weights and optimizer state stay fp32).
    pub precision: policy::device::Precision,
    /// Where the run's stage directories go (relative to the working directory);
    /// `--run-dir` wins; default `runs/<config file name without .toml>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<PathBuf>,
    /// A pretrained policy directory the run starts from (`ember import` output, e.g. `make
    /// pretrained`'s SmolLM2; a leading `~/` is the home directory). The tokenizer stage takes
    /// its tokenizer (and chat template) instead of training one, so `[tokenizer]` is left out;
    /// SFT, and through it the energy model, starts from its weights; `sft.steps = 0` skips SFT
    /// (the base is the policy). Unset: a fresh GPT-2 trunk per `[sft.model]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    /// `[data]`: `kind = "synth"` (the built-in task; the other keys are `ember synth`'s) or
    /// `kind = "ingest"` with `inputs = ["files or globs", …]` (the other keys are `ember
    /// ingest`'s).
    pub data: DataConfig,
    /// `[tokenizer]`: see `ember tokenizer train --help`.
    pub tokenizer: stages::tokenizer::Config,
    /// `[sft]`: supervised fine-tuning of the policy on the demonstrations.
    pub sft: stages::sft::Config,
    /// `[reward]`: training the energy model, initialised from the SFT trunk.
    pub reward: stages::reward::Config,
    /// `[rank]`: best-of-n by lowest energy on the evaluation prompts.
    pub rank: stages::rank::Config,
    /// `[finetune]`: rounds of rank-and-select (or RLOO) fine-tuning of the SFT policy.
    pub finetune: stages::finetune::Config,
    /// `[refine]`: gradient descent on the energy in a continuous relaxation of the answer.
    pub refine: stages::refine::Config,
    /// `[compare]`: best-of-N vs refine vs hybrid at equal energy-model compute.
    pub compare: stages::compare::Config,
    /// `[eval]`: the energy model on the held-out test split, against the longer answer.
    pub eval: stages::eval::Config,
    /// `[report]`: the Markdown report with plots.
    pub report: stages::report::Config,
    /// `[distributed]`: how many ranks run the pipeline.
    pub distributed: DistributedConfig,
    /// Where each key stands in the file, for messages (not a value of the config).
    #[serde(skip)]
    pub lines: KeyLines,
}

impl Default for RunConfig {
    fn default() -> Self {
        let common = Common::default();
        Self {
            seed: common.seed,
            device: common.device,
            precision: common.precision,
            run_dir: None,
            base: None,
            data: DataConfig::default(),
            tokenizer: Default::default(),
            sft: Default::default(),
            reward: Default::default(),
            rank: Default::default(),
            finetune: Default::default(),
            refine: Default::default(),
            compare: Default::default(),
            eval: Default::default(),
            report: stages::report::Config::default(),
            distributed: DistributedConfig::default(),
            lines: KeyLines::default(),
        }
    }
}

/// `[distributed]`: the ranks of `ember run`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DistributedConfig {
    /// Ranks on this machine. Above 1, `ember run` starts that many ranks of itself (as `ember
    /// launch -n N -- run …` does) unless it already is one rank of a job (torchrun, srun), whose
    /// `WORLD_SIZE` must then equal it; 1 runs as one process, or as the job's ranks when the
    /// environment describes a job. The stages that share their work (sft, reward, rank,
    /// finetune, refine, compare) run on every rank; the others on rank 0 alone.
    pub world_size: u32,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self { world_size: 1 }
    }
}

impl RunConfig {
    /// The settings every stage shares.
    pub fn common(&self) -> Common {
        Common {
            seed: self.seed,
            device: self.device,
            precision: self.precision,
        }
    }

    /// The effective config as TOML, every default written out (`ember config print`).
    pub fn to_toml(&self) -> Result<String> {
        let mut table = toml::Table::try_from(self).context("writing the config as TOML")?;
        // Not a key of [reward]: the run's seed (see `parse`).
        if let Some(toml::Value::Table(reward)) = table.get_mut("reward") {
            reward.remove("seed");
        }
        toml::to_string_pretty(&table).context("writing the config as TOML")
    }
}

/// `--split 0.9,0.05,0.05`: train, validation and test fractions.
pub fn parse_split(s: &str) -> std::result::Result<[f64; 3], String> {
    datasets::split::parse_fractions(s).map_err(|e| e.to_string())
}

/// Reads, overrides, checks and builds a run config from a file.
pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig> {
    if !path.is_file() {
        return Err(usage(format!("config {} does not exist", path.display())));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    parse(&text, &path.display().to_string(), overrides)
}

/// The config a run directory keeps (`RUN/config.toml`, written by `ember run`). Before the
/// one-seed rule (2026-11-29) ember wrote the reward trainer's own `seed` under `[reward]`, a key
/// the runner overwrote with the run's seed; it is dropped here so that those runs still read.
pub fn load_saved(path: &Path) -> Result<RunConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let source = path.display().to_string();
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        usage(format!(
            "{source} is not valid TOML: {}",
            e.message().trim()
        ))
    })?;
    let reward = table.get_mut("reward").and_then(toml::Value::as_table_mut);
    if reward.and_then(|r| r.remove("seed")).is_none() {
        return parse(&text, &source, &[]);
    }
    let text = toml::to_string(&table).context("writing the config as TOML")?;
    parse(&text, &source, &[])
}

/// Parses config text; `source` names it in errors (a path, or "the built-in demo config").
pub fn parse(text: &str, source: &str, overrides: &[String]) -> Result<RunConfig> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        usage(format!(
            "{source} is not valid TOML: {}",
            e.message().trim()
        ))
    })?;
    for o in overrides {
        apply_override(&mut table, o)?;
    }
    let mut schema = serde_json::to_value(RunConfig::default()).expect("config serialises");
    // Unset by default, so absent from the default's JSON: a null accepts any value.
    for key in ["run_dir", "base"] {
        schema[key] = serde_json::Value::Null;
    }
    let kind = table
        .get("data")
        .and_then(|d| d.get("kind"))
        .and_then(|k| k.as_str())
        .unwrap_or("synth");
    if let Some(data) = DataConfig::schema(kind) {
        schema["data"] = data;
    }
    // The run's `seed` is the one seed: the reward trainer's own `seed` field is set from it,
    // so a `seed` under [reward] would be silently overwritten. It is not a key of the section.
    if let Some(reward) = schema["reward"].as_object_mut() {
        reward.remove("seed");
        for key in reward::train::TrainConfig::KEYS_SKIPPED_AT_DEFAULT {
            reward.entry(key).or_insert(serde_json::Value::Null);
        }
        // A section, so its own keys are checked.
        reward["mine"] =
            serde_json::to_value(reward::train::MineConfig::default()).expect("config serialises");
    }
    for section in ["refine", "compare"] {
        if let Some(optimiser) = schema[section]["optimiser"].as_object_mut() {
            for key in reward::search::RefineConfig::KEYS_SKIPPED_AT_DEFAULT {
                optimiser.entry(key).or_insert(serde_json::Value::Null);
            }
        }
    }
    if let Some(err) = check_keys(&table, &schema, "") {
        return Err(UsageError::with_hint(format!("{source}: {}", err.message), err.hint).into());
    }
    let mut cfg = build(table, text, source, overrides.is_empty())?;
    cfg.lines = KeyLines::of(text);
    for o in overrides {
        if let Some((key, _)) = o.split_once('=') {
            cfg.lines.forget(key.trim());
        }
    }
    Ok(cfg)
}

/// The typed config of a checked table. A value of the wrong type is a usage error naming its
/// key path and, when the value is the file's own (not a `--set`), its line.
fn build(table: toml::Table, text: &str, source: &str, from_text: bool) -> Result<RunConfig> {
    let err = match serde_path_to_error::deserialize(toml::Value::Table(table)) {
        Ok(cfg) => return Ok(cfg),
        Err(err) => err,
    };
    let line = from_text
        .then(|| toml::from_str::<RunConfig>(text).err()?.span())
        .flatten()
        .map(|span| format!(" line {}", text[..span.start].matches('\n').count() + 1));
    let message = err.inner().message().trim().to_string();
    Err(usage(format!(
        "{source}{}: `{}`: {message}",
        line.unwrap_or_default(),
        err.path()
    )))
}

/// Applies one `--set a.b.c=value` to the TOML table.
pub fn apply_override(table: &mut toml::Table, item: &str) -> Result<()> {
    let Some((key, raw)) = item.split_once('=') else {
        return Err(usage(format!(
            "--set {item}: expected KEY=VALUE, e.g. sft.steps=200"
        )));
    };
    let parts: Vec<&str> = key.trim().split('.').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(usage(format!("--set {item}: empty part in key `{key}`")));
    }
    let value = parse_value(raw.trim());
    let (last, parents) = parts.split_last().expect("split yields one part at least");
    let mut node = table;
    for (i, part) in parents.iter().enumerate() {
        let entry = node
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| {
            usage(format!(
                "--set {item}: `{}` is not a section",
                parts[..=i].join(".")
            ))
        })?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

/// A TOML value if the text parses as one, else the text itself as a string.
fn parse_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod props {
    //! Whatever the text of a config file or of a `--set`, loading it never panics, and every
    //! refusal is a usage error (exit 2).
    use super::*;
    use proptest::prelude::*;

    /// TOML-ish text: known sections and keys with values of every type, and raw noise.
    fn config_text() -> impl Strategy<Value = String> {
        let section = prop_oneof![
            Just(""),
            Just("[data]"),
            Just("[sft]"),
            Just("[sft.optim]"),
            Just("[sft.model]"),
            Just("[reward]"),
            Just("[reward.loss]"),
            Just("[rank]"),
            Just("[finetune]"),
            Just("[refine]"),
            Just("[refine.optimiser]"),
            Just("[compare]"),
            Just("[report]"),
            Just("[tokenizer]"),
            Just("[nonsense]"),
        ];
        let key = prop_oneof![
            Just("seed"),
            Just("device"),
            Just("steps"),
            Just("lr"),
            Just("batch"),
            Just("n"),
            Just("pairs"),
            Just("budgets"),
            Just("max_len"),
            Just("kind"),
            Just("rounds"),
            Just("base"),
            Just("run_dir"),
            Just("precision"),
            Just("split"),
            Just("inputs"),
        ];
        let value = prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<f64>().prop_map(|v| format!("{v:?}")),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-0.0".to_string()),
            "\"[ -~]{0,10}\"",
            Just("[]".to_string()),
            Just("[1, 2, 4]".to_string()),
            Just("true".to_string()),
            Just("{ a = 1 }".to_string()),
            "[ -~]{0,12}",
        ];
        let line = prop_oneof![
            3 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
            1 => section.prop_map(String::from),
            1 => "[ -~]{0,20}",
        ];
        prop::collection::vec(line, 0..14).prop_map(|l| l.join("\n"))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_config_text_loads_or_is_a_usage_error(text in config_text()) {
            if let Err(err) = parse(&text, "prop.toml", &[]).and_then(|c| {
                crate::runner::check(&c)?;
                Ok(c)
            }) {
                prop_assert_eq!(crate::error::exit_code(&err), 2, "{:#}", err);
            }
        }

        #[test]
        fn any_override_loads_or_is_a_usage_error(set in "[a-z_.]{0,16}=?[ -~]{0,12}") {
            if let Err(err) = parse("", "prop.toml", std::slice::from_ref(&set)) {
                prop_assert_eq!(crate::error::exit_code(&err), 2, "{:#}", err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_hand_cases() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("steps", "steps"), 0);
        assert_eq!(edit_distance("stpes", "steps"), 1);
        assert_eq!(edit_distance("titel", "title"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_picks_a_near_key_or_none() {
        let keys = ["seed", "device", "run_dir", "report"];
        assert_eq!(closest("sed", keys.iter().copied()), Some("seed"));
        assert_eq!(closest("devise", keys.iter().copied()), Some("device"));
        assert_eq!(closest("zzzzzz", keys.iter().copied()), None);
    }

    /// The optimiser keys serialised only away from their defaults (so older fingerprints
    /// stay) are still known keys.
    #[test]
    fn refine_method_keys_are_known_though_skipped_at_default() {
        let text = "[refine.optimiser]\nmethod = \"swap\"\ncandidates = 6\n\
                    [compare.optimiser]\nmethod = \"swap\"\n";
        let cfg = parse(text, "t.toml", &[]).unwrap();
        assert_eq!(cfg.refine.optimiser.method, reward::search::Method::Swap);
        assert_eq!(cfg.refine.optimiser.candidates, 6);
        assert_eq!(cfg.compare.optimiser.method, reward::search::Method::Swap);
        let default = serde_json::to_value(RunConfig::default()).unwrap();
        assert!(default["refine"]["optimiser"].get("method").is_none());
        let err = parse("[refine.optimiser]\nmethod = \"magic\"\n", "t.toml", &[]).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
    }

    #[test]
    fn unknown_key_names_its_path_and_a_hint() {
        let err = parse("seed = 1\n[report]\ntitel = \"x\"\n", "t.toml", &[]).unwrap_err();
        let usage = err.downcast_ref::<UsageError>().expect("usage error");
        assert!(
            usage.message.contains("`report.titel`"),
            "{}",
            usage.message
        );
        assert_eq!(usage.hint.as_deref(), Some("did you mean `report.title`?"));
        let err = parse("sede = 1\n", "t.toml", &[]).unwrap_err();
        let usage = err.downcast_ref::<UsageError>().unwrap();
        assert!(usage.message.contains("`sede`"));
        assert_eq!(usage.hint.as_deref(), Some("did you mean `seed`?"));
    }

    #[test]
    fn overrides_parse_values_as_toml() {
        let cfg = parse(
            "seed = 1\n",
            "t",
            &["seed=7".into(), "report.title=Hello run".into()],
        )
        .unwrap();
        assert_eq!(cfg.seed, 7);
        assert_eq!(cfg.report.title, "Hello run");
        let err = parse("", "t", &["seed".into()]).unwrap_err();
        assert!(crate::error::exit_code(&err) == 2);
        let err = parse("seed = 1\n", "t", &["seed.x=1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("`seed` is not a section"));
    }

    #[test]
    fn wrong_type_is_a_usage_error() {
        let err = parse("seed = \"many\"\n", "t.toml", &[]).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(format!("{err:#}").contains("t.toml"));
    }

    #[test]
    fn keys_unset_by_default_are_known() {
        let text =
            "run_dir = \"r\"\nbase = \"~/m\"\n[reward]\ntrain_blocks = 2\npooling = \"mean\"\n\
                    train_pairs = 10\nstats_pairs = 8\ncache_frozen = false\n";
        let cfg = parse(text, "t", &[]).unwrap();
        assert_eq!(cfg.reward.train_blocks, Some(2));
        assert_eq!(cfg.reward.pooling, reward::model::Pooling::Mean);
        assert_eq!((cfg.reward.train_pairs, cfg.reward.stats_pairs), (10, 8));
        assert!(!cfg.reward.cache_frozen);
        assert_eq!(cfg.run_dir, Some(PathBuf::from("r")));
        assert_eq!(cfg.base, Some(PathBuf::from("~/m")));
        let again = parse(&cfg.to_toml().unwrap(), "t", &[]).unwrap();
        assert_eq!(cfg, again);
    }

    /// `negatives` and `[reward.mine]` are left out of the serialised config at their defaults
    /// (old fingerprints stay), yet known; the section's own keys are checked.
    #[test]
    fn mining_keys_are_known_and_checked() {
        let text =
            "[reward]\nnegatives = \"refine\"\n[reward.mine]\nfrom = \"chosen\"\nreplay = 2\n";
        let cfg = parse(text, "t", &[]).unwrap();
        assert_eq!(cfg.reward.negatives, reward::train::Negatives::Refine);
        assert_eq!(cfg.reward.mine.from, reward::train::MineFrom::Chosen);
        assert_eq!(cfg.reward.mine.replay, 2);
        let again = parse(&cfg.to_toml().unwrap(), "t", &[]).unwrap();
        assert_eq!(cfg, again);
        let default = parse("", "t", &[]).unwrap().to_toml().unwrap();
        assert!(
            !default.contains("\nnegatives") && !default.contains("[reward.mine]"),
            "{default}"
        );
        let err = parse("[reward.mine]\nstep = 2\n", "t", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("reward.mine.step"), "{err:#}");
    }

    #[test]
    fn effective_config_round_trips() {
        let cfg = parse("seed = 3\n", "t", &[]).unwrap();
        let again = parse(&cfg.to_toml().unwrap(), "t", &[]).unwrap();
        assert_eq!(cfg, again);
    }
}
