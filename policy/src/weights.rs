//! Loading a checkpoint's weights into a model, checked: the file must hold exactly the model's
//! tensors (same names, same shapes, no more, no fewer: a `config.json` with fewer layers than
//! the weights is an error, not a silently smaller model), and every weight must be finite.
//! Both are usage errors naming the file and the first tensors that disagree.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use tch::{nn, Tensor};

use crate::{PolicyError, Result};

/// The most tensors a mismatch message lists by name.
const SHOWN: usize = 4;

/// Loads `path` (safetensors) into `vs` after checking that its tensors are exactly `vs`'s,
/// then checks that every weight is finite.
pub fn load_checked(vs: &mut nn::VarStore, path: &Path) -> Result<()> {
    load_matching(vs, path, |_| false, true)
}

/// Loads the tensors of `path` that `vs` has (a policy's trunk into an energy model): every
/// variable must be in the file, with its shape, except those `may_miss` allows; the file's
/// other tensors are ignored. Then checks that every weight is finite.
pub fn load_checked_partial(
    vs: &mut nn::VarStore,
    path: &Path,
    may_miss: impl Fn(&str) -> bool,
) -> Result<()> {
    load_matching(vs, path, may_miss, false)
}

/// The one check behind both loads: `vs`'s variables (less those `may_miss` allows to be
/// absent) against the file's header, the file's other tensors an error only when `exact`.
fn load_matching(
    vs: &mut nn::VarStore,
    path: &Path,
    may_miss: impl Fn(&str) -> bool,
    exact: bool,
) -> Result<()> {
    let header = read_shapes(path)?;
    let vars = vs.variables();
    let expected: BTreeMap<&str, Vec<i64>> = vars
        .iter()
        .filter(|(k, _)| !may_miss(k) || header.contains_key(k.as_str()))
        .map(|(k, t)| (k.as_str(), t.size()))
        .collect();
    let file: BTreeMap<String, Vec<i64>> = header
        .into_iter()
        .filter(|(k, _)| exact || vars.contains_key(k))
        .collect();
    let problems = mismatches(&expected, &file);
    if !problems.is_empty() {
        let what = if exact {
            "the weights do not match the model its config.json describes"
        } else {
            "not a checkpoint of this model's shape"
        };
        return Err(PolicyError::Weights {
            path: path.to_path_buf(),
            message: format!("{what}: {}", problems.join("; ")),
        });
    }
    // Names and shapes are checked: what is left to load is exactly what the file has of `vs`.
    vs.load_partial(path)
        .map_err(|e| PolicyError::torch(format!("loading {}", path.display()), e))?;
    check_finite(vs, path)
}

/// Every tensor of `vs` is finite, or a [`PolicyError::Weights`] naming the first that is not.
pub fn check_finite(vs: &nn::VarStore, path: &Path) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in vars {
        let bad = t
            .isfinite()
            .logical_not()
            .sum(tch::Kind::Int64)
            .int64_value(&[]);
        if bad > 0 {
            return Err(PolicyError::Weights {
                path: path.to_path_buf(),
                message: format!(
                    "tensor {name} has {bad} non-finite values (NaN or infinite): the weights are corrupt"
                ),
            });
        }
    }
    Ok(())
}

/// Names and shapes from a safetensors file's header, without reading the tensors.
pub fn read_shapes(path: &Path) -> Result<BTreeMap<String, Vec<i64>>> {
    let bad = |message: String| PolicyError::Weights {
        path: path.to_path_buf(),
        message,
    };
    let mut file = File::open(path).map_err(|e| PolicyError::io("opening", path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| bad("not a safetensors file (shorter than its 8-byte header size)".into()))?;
    let len = u64::from_le_bytes(len);
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > size.saturating_sub(8) || len > 100 << 20 {
        return Err(bad(format!(
            "not a safetensors file (header of {len} bytes in a file of {size})"
        )));
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact(&mut text)
        .map_err(|e| PolicyError::io("reading", path, e))?;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("not a safetensors file (header: {e})")))?;
    let mut shapes = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape = info["shape"]
            .as_array()
            .and_then(|dims| dims.iter().map(|d| d.as_i64()).collect::<Option<Vec<_>>>())
            .ok_or_else(|| bad(format!("tensor {name} has no shape in the header")))?;
        shapes.insert(name, shape);
    }
    Ok(shapes)
}

/// What differs between the model's tensors and the file's: missing, unexpected and
/// wrongly-shaped names, each list cut to its first [`SHOWN`].
fn mismatches(model: &BTreeMap<&str, Vec<i64>>, file: &BTreeMap<String, Vec<i64>>) -> Vec<String> {
    let missing: Vec<&str> = model
        .keys()
        .filter(|k| !file.contains_key(**k))
        .copied()
        .collect();
    let extra: Vec<&str> = file
        .keys()
        .filter(|k| !model.contains_key(k.as_str()))
        .map(String::as_str)
        .collect();
    let shape: Vec<String> = model
        .iter()
        .filter_map(|(k, s)| {
            let f = file.get(*k)?;
            (f != s).then(|| format!("{k} is {f:?} in the file, {s:?} in the model"))
        })
        .collect();
    let mut out = Vec::new();
    let list = |what: &str, names: Vec<String>| {
        let n = names.len();
        let mut shown = names.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if n > SHOWN {
            shown.push_str(&format!(", … ({} more)", n - SHOWN));
        }
        format!("{n} {what}: {shown}")
    };
    let own = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
    if !missing.is_empty() {
        out.push(list("tensors missing from the file", own(missing)));
    }
    if !extra.is_empty() {
        out.push(list(
            "tensors in the file that the model does not have",
            own(extra),
        ));
    }
    if !shape.is_empty() {
        out.push(list("tensors of another shape", shape));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(layers: i64, width: i64) -> nn::VarStore {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        for l in 0..layers {
            let _ = vs.root().sub("h").sub(l).zeros("w", &[width, 2]);
        }
        vs
    }

    #[test]
    fn a_checkpoint_must_hold_exactly_the_models_tensors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("model.safetensors");
        store(3, 4).save(&path).unwrap();
        load_checked(&mut store(3, 4), &path).unwrap();
        let fewer = load_checked(&mut store(2, 4), &path)
            .unwrap_err()
            .to_string();
        assert!(
            fewer.contains("1 tensors in the file that the model does not have: h.2.w"),
            "{fewer}"
        );
        let more = load_checked(&mut store(4, 4), &path)
            .unwrap_err()
            .to_string();
        assert!(
            more.contains("1 tensors missing from the file: h.3.w"),
            "{more}"
        );
        let wider = load_checked(&mut store(3, 5), &path)
            .unwrap_err()
            .to_string();
        assert!(
            wider.contains(
                "3 tensors of another shape: h.0.w is [4, 2] in the file, [5, 2] in the model"
            ),
            "{wider}"
        );
        std::fs::write(&path, b"garbage").unwrap();
        let junk = load_checked(&mut store(3, 4), &path)
            .unwrap_err()
            .to_string();
        assert!(junk.contains("not a safetensors file"), "{junk}");
    }

    #[test]
    fn a_partial_load_ignores_extra_tensors_and_allowed_missing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("model.safetensors");
        store(3, 4).save(&path).unwrap();
        let mut vs = store(2, 4);
        let _ = vs.root().sub("head").zeros("w", &[1]);
        load_checked_partial(&mut vs, &path, |n| n.starts_with("head.")).unwrap();
        let err = load_checked_partial(&mut vs, &path, |_| false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 tensors missing from the file: head.w"),
            "{err}"
        );
        let err = load_checked_partial(&mut store(2, 5), &path, |_| false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 tensors of another shape"), "{err}");
    }

    #[test]
    fn non_finite_weights_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("model.safetensors");
        let vs = store(2, 4);
        tch::no_grad(|| {
            let _ = vs.variables()["h.1.w"].get(0).get(1).fill_(f64::NAN);
        });
        vs.save(&path).unwrap();
        let err = load_checked(&mut store(2, 4), &path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tensor h.1.w has 1 non-finite values"),
            "{err}"
        );
    }
}
