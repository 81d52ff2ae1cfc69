//! Text made from the settings table: `--print-config`, the README settings
//! table and `configs/ferrocorn.example.toml`.
//!
//! Only formatting lives here; values come from `Settings::to_raw` and the
//! table, so the docs cannot drift from the code. The `docs_are_current`
//! test compares the checked-in README block and example file with these
//! renders and rewrites them when `FERROCORN_BLESS=1`.

use super::table::{Kind, TomlKind};
use super::table::{SettingSpec, SETTINGS};
use super::Loaded;

/// The command that regenerates the README block and the example TOML.
pub const REGENERATE: &str = "FERROCORN_BLESS=1 cargo test docs_are_current";

/// The README markers between which [`readme_table`] goes.
pub const README_MARKERS: (&str, &str) = ("<!-- settings:start -->", "<!-- settings:end -->");

/// Values longer than this do not widen the value column of `--print-config`.
const MAX_ALIGNED_VALUE: usize = 40;

/// `--print-config`: every setting with its value and origin, aligned, as TOML.
pub fn render_effective(loaded: &Loaded) -> String {
    let settings = &loaded.settings;
    let rows: Vec<(String, String, String)> = settings
        .to_raw()
        .into_iter()
        .zip(loaded.origins.iter())
        .map(|((_, values), (spec, origin))| {
            let (key, value) = match (spec.kind, values.is_empty()) {
                (Kind::Optional, true) => (format!("# {}", spec.name), "(not set)".to_string()),
                _ => (
                    spec.name.to_string(),
                    format!("= {}", toml_value(spec, &values)),
                ),
            };
            (key, value, origin.describe(spec))
        })
        .collect();
    let key_width = rows.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    // A long value (the access log format) would push every origin far right: let it overhang.
    let value_width = rows
        .iter()
        .map(|(_, v, _)| v.len())
        .filter(|&len| len <= MAX_ALIGNED_VALUE)
        .max()
        .unwrap_or(0);
    let file = match &loaded.config_file {
        Some(path) => format!("config file {}", path.display()),
        None => "no config file".to_string(),
    };
    let mut out = format!(
        "# ferrocorn {} effective configuration ({file}); the comment is where each value came from\n",
        env!("CARGO_PKG_VERSION")
    );
    for (key, value, origin) in rows {
        out += &format!("{key:key_width$} {value:value_width$}  # {origin}\n");
    }
    out += &format!(
        "# effective worker class: {}\n# effective max_concurrent_retirements: {}\n# effective master_threads: {}\n",
        settings.effective_worker_class(),
        settings.effective_max_concurrent_retirements(),
        settings.effective_master_threads()
    );
    out
}

/// The README settings table (the text between [`README_MARKERS`]).
pub fn readme_table() -> String {
    let mut out = format!(
        "<!-- generated from src/config/table.rs by `{REGENERATE}`: edit the table, not this block -->\n"
    );
    out += "\nEvery setting can be given as a flag, as `FERROCORN_<NAME>` in the environment, \
            or as `name = value` in the config file of `-c` (TOML, or Python as gunicorn \
            reads it, also by gunicorn's names: see the compatibility table). Each source \
            wins over the ones before it: defaults, `PORT` and `WEB_CONCURRENCY`, the config \
            file, `FERROCORN_*` variables, `GUNICORN_CMD_ARGS`, the command line. Durations: `30` (seconds), `500ms`, \
            `2m`, `1h`. Sizes: `512` (bytes), `200MB` (powers of 1000), `512MiB` (powers of 1024). \
            Switches (default `false`) are turned on by the flag alone (`--preload`; `sendfile` is the one that defaults to `true`, and gunicorn's `--no-sendfile` turns it off), by \
            `= true` in the file (a TOML boolean, no quotes) or by `true`, `1` or `yes` in \
            the environment (`false`, `0` or `no` turn them off). *On HUP*: whether a reload \
            applies a changed value (with the roll of the workers) or only the next start does.\n";
    for section in sections() {
        out += &format!("\n**{}**\n\n", section.title());
        out += "| Setting | Flag | Environment | Default | On HUP | Description |\n";
        out += "|---|---|---|---|---|---|\n";
        for spec in SETTINGS.iter().filter(|spec| spec.section == section) {
            let flag = spellings(spec).join(" or ");
            let default = match spec.default {
                [] if matches!(spec.kind, Kind::List { .. }) => "empty".to_string(),
                [] => "not set".to_string(),
                values => format!("`{}`", values.join(",")),
            };
            let on_hup = if spec.needs_restart {
                "next start"
            } else {
                "applies"
            };
            out += &format!(
                "| `{}` | `{flag}` | `{}` | {} | {on_hup} | {} |\n",
                spec.name,
                spec.env_var(),
                default.replace('|', "\\|"),
                spec.doc.replace('|', "\\|")
            );
        }
    }
    out
}

/// The README markers between which [`gunicorn_table`] goes.
pub const GUNICORN_MARKERS: (&str, &str) = ("<!-- gunicorn:start -->", "<!-- gunicorn:end -->");

/// The README's gunicorn compatibility table, from `config::gunicorn`.
pub fn gunicorn_table() -> String {
    use super::gunicorn::{supported_count, Support, GUNICORN_SETTINGS};
    let mut out = format!(
        "<!-- generated from src/config/gunicorn.rs by `{REGENERATE}`: edit the table, not this block -->\n"
    );
    out += &format!(
        "\nferrocorn supports **{} of gunicorn's {} settings** (gunicorn 27.0.1) with \
         gunicorn's meaning, under gunicorn's flags and config-file names. The others are \
         refused by name, on the command line, in `GUNICORN_CMD_ARGS` and in a Python \
         config file (there, only when the value asks for something: `keyfile = None` passes).\n\n",
        supported_count(),
        GUNICORN_SETTINGS.len()
    );
    out += "| gunicorn setting | Flags | In ferrocorn |\n|---|---|---|\n";
    let mut refused = Vec::new();
    for setting in GUNICORN_SETTINGS {
        let ours = match setting.support {
            Support::Setting(name) if name == setting.name => "same name".to_string(),
            Support::Setting(name) => format!("`{name}`"),
            Support::Hook => "server hook ([docs/hooks.md](docs/hooks.md))".to_string(),
            Support::Command => "command line".to_string(),
            Support::No => {
                refused.push(format!("`{}`", setting.name));
                continue;
            }
        };
        let flags: Vec<String> = setting.flags.iter().map(|f| format!("`{f}`")).collect();
        out += &format!("| `{}` | {} | {ours} |\n", setting.name, flags.join(" "));
    }
    out += &format!(
        "\nNot supported yet, refused by name: {}.\n",
        refused.join(", ")
    );
    out
}

/// `configs/ferrocorn.example.toml`: every setting at its default, unset ones commented out.
pub fn example_toml() -> String {
    let mut out = format!(
        "# generated from src/config/table.rs by `{REGENERATE}`: edit the table, not this file\n\
         #\n\
         # An example ferrocorn config with every setting at its default; load it with\n\
         # `ferrocorn -c configs/ferrocorn.example.toml`. Each key can also be given as the\n\
         # flag or environment variable shown above it; the command line wins over the\n\
         # environment, the environment over this file.\n"
    );
    for section in sections() {
        out += &format!("\n# --- {} ---\n", section.title());
        for spec in SETTINGS.iter().filter(|spec| spec.section == section) {
            let flags = spellings(spec).join(", ");
            out += &format!("\n# {}\n# {flags}, {}\n", spec.doc, spec.env_var());
            let defaults: Vec<String> = spec.default.iter().map(|s| s.to_string()).collect();
            match (spec.default, spec.example) {
                ([], Some(example)) => {
                    let example = match spec.kind {
                        Kind::List {
                            comma_separated: true,
                        } => example.split(',').map(str::to_string).collect(),
                        _ => vec![example.to_string()],
                    };
                    out += &format!("# {} = {}\n", spec.name, toml_value(spec, &example));
                }
                _ => out += &format!("{} = {}\n", spec.name, toml_value(spec, &defaults)),
            }
        }
    }
    out
}

/// The command-line spellings of a setting: its flag, then its aliases.
fn spellings(spec: &SettingSpec) -> Vec<String> {
    let aliases = spec.aliases.iter().map(|alias| format!("--{alias}"));
    std::iter::once(spec.flag()).chain(aliases).collect()
}

/// The sections in table order, each once.
fn sections() -> Vec<super::table::Section> {
    let mut sections: Vec<_> = SETTINGS.iter().map(|spec| spec.section).collect();
    sections.dedup();
    sections
}

/// One setting's canonical strings as a TOML value.
fn toml_value(spec: &SettingSpec, values: &[String]) -> String {
    let scalar = |text: &str| match spec.toml {
        TomlKind::Integer | TomlKind::Boolean => text.to_string(),
        TomlKind::String => toml::Value::String(text.to_string()).to_string(),
    };
    match spec.kind {
        Kind::List { .. } => {
            let items: Vec<String> = values.iter().map(|v| scalar(v)).collect();
            format!("[{}]", items.join(", "))
        }
        Kind::One | Kind::Optional => scalar(values.last().map(String::as_str).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load, Origin};
    use std::path::{Path, PathBuf};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn repo_file(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
    }

    /// The README with its generated blocks replaced by fresh renders.
    fn readme_with_fresh_block(readme: &str) -> Option<String> {
        let readme = replace_block(readme, README_MARKERS, &readme_table())?;
        replace_block(&readme, GUNICORN_MARKERS, &gunicorn_table())
    }

    fn replace_block(readme: &str, (start, end): (&str, &str), block: &str) -> Option<String> {
        let before = &readme[..readme.find(start)? + start.len()];
        let after = &readme[readme.find(end)?..];
        Some(format!("{before}\n{block}{after}"))
    }

    #[test]
    fn docs_are_current() {
        let bless = std::env::var_os("FERROCORN_BLESS").is_some();
        let example_path = repo_file("configs/ferrocorn.example.toml");
        let readme_path = repo_file("README.md");
        let old_readme = std::fs::read_to_string(&readme_path).expect("README.md exists");
        let fresh_readme =
            readme_with_fresh_block(&old_readme).expect("README.md has the settings markers");
        let fresh_example = example_toml();
        if bless {
            std::fs::create_dir_all(repo_file("configs")).expect("configs/ is creatable");
            std::fs::write(&example_path, &fresh_example).expect("example is writable");
            std::fs::write(&readme_path, &fresh_readme).expect("README is writable");
        }
        let example = std::fs::read_to_string(&example_path).unwrap_or_default();
        let readme = std::fs::read_to_string(&readme_path).expect("README.md exists");
        assert!(
            example == fresh_example && readme == fresh_readme,
            "configs/ferrocorn.example.toml or the README settings table is out of date: run `{REGENERATE}`"
        );
    }

    #[test]
    fn the_example_toml_loads_to_the_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("example.toml");
        std::fs::write(&path, example_toml()).expect("temp dir is writable");
        let args = [
            "ferrocorn".as_ref(),
            "--print-config".as_ref(),
            "-c".as_ref(),
            path.as_os_str(),
        ];
        let loaded = load(args, &no_env).expect("the example is a valid config");
        assert_eq!(loaded.settings, crate::config::Settings::default());
        let from_file = loaded
            .origins
            .iter()
            .filter(|(_, o)| **o == Origin::File(path.clone()))
            .count();
        let set_by_default = SETTINGS.iter().filter(|s| !s.default.is_empty()).count();
        assert_eq!(
            from_file, set_by_default,
            "every setting with a default is spelled out"
        );
        let commented: String = example_toml()
            .lines()
            .filter(|line| line.starts_with("# ") && line.contains(" = "))
            .map(|line| format!("{}\n", &line[2..]))
            .collect();
        std::fs::write(&path, commented).expect("temp dir is writable");
        load(
            ["ferrocorn".as_ref(), "-c".as_ref(), path.as_os_str()],
            &no_env,
        )
        .expect("the commented examples are valid too");
    }

    #[test]
    fn print_config_shows_every_setting_its_value_and_origin_aligned() {
        let env = |name: &str| (name == "FERROCORN_THREADS").then(|| "4".to_string());
        let loaded =
            load(["ferrocorn", "--print-config", "-w", "8", "app:app"], &env).expect("valid");
        let text = render_effective(&loaded);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("# ferrocorn ") && lines[0].contains("no config file"));
        assert_eq!(lines.len(), SETTINGS.len() + 4);
        let line = |key: &str| {
            let found = lines
                .iter()
                .find(|l| l.split_whitespace().next() == Some(key));
            found
                .copied()
                .unwrap_or_else(|| panic!("no line for {key}"))
        };
        assert!(line("workers").ends_with("# --workers"));
        assert!(line("threads").contains("= 4 "));
        assert!(line("threads").ends_with("# FERROCORN_THREADS"));
        assert!(line("bind").contains(r#"= ["127.0.0.1:8000"]"#));
        assert!(line("wsgi_app").contains(r#"= "app:app""#));
        assert!(text.contains("# chdir") && text.contains("(not set)"));
        let origin_column: Vec<usize> = lines[1..=SETTINGS.len()]
            .iter()
            .filter(|l| {
                !l.starts_with("access_log_format") && !l.starts_with("secure_scheme_headers")
            })
            .map(|l| l.rfind("  # ").expect("origin"))
            .collect();
        assert!(
            origin_column.windows(2).all(|w| w[0] == w[1]),
            "origins are aligned:\n{text}"
        );
        assert!(text.contains("# effective worker class: gthread"));
        assert!(text.contains("# effective max_concurrent_retirements: 2"));
    }
}
