//! The unknown-key check of run configs: a key absent from the schema (the JSON form of the
//! default config) is named with its path, with a "did you mean" hint picked by edit distance.
/// An unknown key: the message names its path, the hint the closest known key.
#[derive(Debug, PartialEq)]
pub struct KeyError {
    pub message: String,
    pub hint: String,
}

/// The first key of `value` (walked in order) absent from `schema`, the JSON form of the
/// default config. Objects recurse; a null in the schema (an unset `Option`) accepts anything.
pub fn check_keys(
    value: &toml::Table,
    schema: &serde_json::Value,
    prefix: &str,
) -> Option<KeyError> {
    let serde_json::Value::Object(known) = schema else {
        return None;
    };
    for (key, v) in value {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(key) {
            None => {
                let hint = match closest(key, known.keys().map(String::as_str)) {
                    Some(best) if prefix.is_empty() => format!("did you mean `{best}`?"),
                    Some(best) => format!("did you mean `{prefix}.{best}`?"),
                    None => {
                        "`ember config print CONFIG` lists every key with its default".to_string()
                    }
                };
                let place = if prefix.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in [{prefix}]")
                };
                let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Some(KeyError {
                    message: format!("unknown key `{path}` {place} (known: {})", names.join(", ")),
                    hint,
                });
            }
            Some(sub @ serde_json::Value::Object(_)) => {
                if let toml::Value::Table(t) = v {
                    if let Some(err) = check_keys(t, sub, &path) {
                        return Some(err);
                    }
                }
            }
            Some(_) => {}
        }
    }
    None
}

/// The candidate nearest to `key` by edit distance, if it is near enough to be a likely typo
/// (at most a third of the longer name, and at least 1 edit allowed).
pub fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(key, c), c))
        .filter(|(d, c)| {
            *d <= (key.len().max(c.len()) / 3).max(1) || c.contains(key) || key.contains(c)
        })
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance over chars: Levenshtein plus adjacent transpositions
/// (`stpes` → `steps` is one edit), the usual typo.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}
