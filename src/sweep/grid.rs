//! The grid: every combination of the swept values, times every row, times
//! the repetitions, in a stable order (the first swept key varies slowest,
//! so a chart's x axis is read left to right), and `{placeholder}`
//! substitution in paths, bodies and commands.

use std::collections::BTreeMap;

use crate::config::table;

use super::definition::SweepFile;

/// One combination of swept values, in grid order.
pub type Combo = Vec<(String, toml::Value)>;

/// Every combination of the grid; one empty combination if nothing is swept.
pub fn combos(grid: &toml::Table) -> Vec<Combo> {
    let mut out: Vec<Combo> = vec![Vec::new()];
    for (key, values) in grid {
        let values = values.as_array().map(Vec::as_slice).unwrap_or_default();
        out = out
            .into_iter()
            .flat_map(|combo| {
                values.iter().map(move |value| {
                    let mut next = combo.clone();
                    next.push((key.clone(), value.clone()));
                    next
                })
            })
            .collect();
    }
    out
}

/// A value as a placeholder shows it: strings bare, others as TOML writes them.
pub fn display(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The combination as `name -> value` strings, for reports.
pub fn params(combo: &Combo) -> BTreeMap<String, String> {
    combo.iter().map(|(k, v)| (k.clone(), display(v))).collect()
}

/// Replaces every `{name}` in `template` from `values`; an unknown name is
/// an error naming it (`{{` and `}}` are literal braces).
pub fn fill(template: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if let Some(after) = tail.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed {{ in {template:?}"))?;
            let name = &after[..end];
            let value = values.get(name).ok_or_else(|| {
                let known: Vec<&str> = values.keys().map(String::as_str).collect();
                format!(
                    "unknown placeholder {{{name}}} in {template:?}; known: {}",
                    known.join(", ")
                )
            })?;
            out.push_str(value);
            rest = &after[end + 1..];
        } else {
            return Err(format!("unmatched }} in {template:?}"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Grid keys that sweep the load itself instead of the server.
pub const LOAD_KEYS: &[&str] = &[
    "load.rate",
    "load.max_in_flight",
    "load.users",
    "load.loops",
    "load.pace",
];

/// Grid keys that configure nothing: not a ferrocorn setting and not a
/// placeholder anywhere. Almost always a typo, so the sweep refuses them.
pub fn unused_keys(file: &SweepFile) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    for endpoint in &file.endpoints {
        texts.push(endpoint.path.clone());
        texts.extend(endpoint.body.clone());
        texts.extend(endpoint.body_size.as_ref().map(|size| size.template()));
    }
    for row in &file.rows {
        texts.extend(row.command.clone());
    }
    file.grid
        .keys()
        .filter(|key| table::spec(key).is_none() && !LOAD_KEYS.contains(&key.as_str()))
        .filter(|key| {
            let placeholder = format!("{{{key}}}");
            !texts.iter().any(|t| t.contains(&placeholder))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn every_combination_first_key_slowest() {
        let all = combos(&grid("workers = [1, 2]\nthreads = [1, 4, 8]"));
        assert_eq!(all.len(), 6);
        let shown: Vec<String> = all
            .iter()
            .map(|c| {
                c.iter()
                    .map(|(_, v)| display(v))
                    .collect::<Vec<_>>()
                    .join("x")
            })
            .collect();
        assert_eq!(shown, ["1x1", "1x4", "1x8", "2x1", "2x4", "2x8"]);
        assert_eq!(combos(&toml::Table::new()), vec![Vec::new()]);
    }

    #[test]
    fn placeholders_fill_and_unknown_ones_are_named() {
        let values: BTreeMap<String, String> = [("level".to_string(), "5".to_string())].into();
        assert_eq!(fill("/cpu?level={level}", &values).unwrap(), "/cpu?level=5");
        assert_eq!(fill("{{x}} {level}", &values).unwrap(), "{x} 5");
        let err = fill("/io?ms={ms}", &values).unwrap_err();
        assert!(err.contains("{ms}") && err.contains("level"), "{err}");
        assert!(fill("/a{level", &values).is_err());
    }

    #[test]
    fn strings_show_bare() {
        assert_eq!(display(&toml::Value::String("200MB".into())), "200MB");
        assert_eq!(display(&toml::Value::Integer(3)), "3");
    }
}
