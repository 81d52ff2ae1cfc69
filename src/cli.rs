//! The command line, built from the settings table: no setting's flag is typed here.
//!
//! [`command`] turns every row of `config::table` into a clap argument (all
//! optional and repeatable, so "not given" stays visible and the last value
//! wins, as in gunicorn; a switch such as `--preload` takes no value and
//! turns its setting on) and adds the CLI-only meta flags: `-c/--config`,
//! `--print-config`, `--check-config`, `-v/--version`. [`parse`] returns the
//! command-line layer as raw strings; `config::load` merges it with the
//! other layers. gunicorn options ferrocorn lacks are caught before clap, so
//! they get a clear "not supported yet" instead of "unexpected argument".
//! `ferrocorn sweep ...` never reaches this parser: `main` hands it to
//! `sweep::cli` first, so `ferrocorn -w 4 app:app` keeps gunicorn's shape
//! (serve a module named `sweep` with `sweep:application`).

use crate::config::gunicorn;
use crate::config::layers::{Layer, Origin};
use crate::config::table::{SettingSpec, SETTINGS};
use crate::config::{ConfigError, Mode};
use clap::parser::ValueSource;
use clap::{value_parser, Arg, ArgAction, Command};
use std::ffi::OsString;
use std::path::PathBuf;

/// Whether `flag` is a gunicorn command-line option ferrocorn refuses; the
/// list is `config::gunicorn`'s.
pub fn is_unsupported_gunicorn_flag(flag: &str) -> bool {
    gunicorn::by_flag(flag).is_some_and(|setting| setting.support == gunicorn::Support::No)
}

/// The clap ids of the CLI-only flags; setting names must not collide with them.
pub const META_IDS: &[&str] = &["config", "print_config", "check_config", "version"];

/// What the command line says, before it is merged with the other layers.
#[derive(Debug, Clone)]
pub struct CliArgs {
    /// The settings given on the command line, as raw strings.
    pub layer: Layer,
    /// The TOML file from `-c/--config`.
    pub config_file: Option<PathBuf>,
    /// Serve, or only print or check the configuration.
    pub mode: Mode,
}

/// The clap command: every setting of the table plus the meta flags.
pub fn command() -> Command {
    let command = Command::new("ferrocorn")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A gunicorn-compatible WSGI server: a Rust master and pre-forked Python workers")
        .after_help(
            "Every setting can also be given in the TOML file of -c (key = setting name) or as \
             FERROCORN_<NAME> in the environment. The command line wins over the environment, \
             the environment over the file.\n\n\
             Tuning experiments: ferrocorn sweep FILE.toml (see ferrocorn sweep --help).",
        )
        // gunicorn spells version -v/--version; clap's own -V would be a second spelling.
        .disable_version_flag(true)
        .args_conflicts_with_subcommands(true)
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("TOML config file (keys are the setting names)"),
        )
        .arg(
            Arg::new("print_config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print every setting with its value and where it came from, then exit"),
        )
        .arg(
            Arg::new("check_config")
                .long("check-config")
                .action(ArgAction::SetTrue)
                .conflicts_with("print_config")
                .help("Check the configuration, then exit"),
        )
        .arg(
            Arg::new("version")
                .short('v')
                .long("version")
                .action(ArgAction::Version)
                .help("Print the version and exit"),
        );
    SETTINGS
        .iter()
        .fold(command, |command, spec| command.arg(setting_arg(spec)))
}

fn setting_arg(spec: &'static SettingSpec) -> Arg {
    let default = match spec.default {
        [] => String::new(),
        values => format!(" [default: {}]", values.join(",")),
    };
    let arg = Arg::new(spec.name)
        .value_name(spec.value_name)
        .help(format!("{}{default} [env: {}]", spec.doc, spec.env_var()))
        .help_heading(spec.section.title())
        .num_args(1);
    if let Some(placeholder) = spec.positional {
        return arg.value_name(placeholder).index(1).action(ArgAction::Set);
    }
    let arg = if spec.is_switch() {
        // gunicorn's store_true: no value, and giving it twice is not an error.
        arg.num_args(0)
            .action(ArgAction::SetTrue)
            .overrides_with(spec.name)
    } else {
        // `--workers -2` must reach the value parser, which names the
        // setting and its range, instead of clap's "unexpected argument".
        arg.action(ArgAction::Append).allow_negative_numbers(true)
    };
    let arg = match spec.bare {
        Some(bare) => arg.num_args(0..=1).default_missing_value(bare),
        None => arg,
    };
    let arg = arg.visible_aliases(spec.aliases.iter().copied());
    let arg = match spec.long {
        Some(long) => arg.long(long),
        None => arg,
    };
    match spec.short {
        Some(short) => arg.short(short),
        None => arg,
    }
}

/// Parses the command line; `args` starts with the program name.
///
/// # Errors
/// A gunicorn option ferrocorn lacks, or anything clap rejects; `--help` and
/// `--version` also come back as [`ConfigError::Clap`], with exit code 0.
pub fn parse(args: &[OsString]) -> Result<CliArgs, ConfigError> {
    reject_unsupported(args)?;
    let matches = command()
        .try_get_matches_from(args)
        .map_err(ConfigError::Clap)?;
    let mut layer = Layer::default();
    for (index, spec) in SETTINGS.iter().enumerate() {
        if spec.is_switch() {
            // SetTrue always has a value (false when absent): only a given flag is a layer value.
            // The flag flips the default: `--preload` turns on, `--no-sendfile` off.
            if matches.value_source(spec.name) == Some(ValueSource::CommandLine) {
                let given = if spec.default == ["true"] {
                    "false"
                } else {
                    "true"
                };
                layer.set(index, vec![given.to_string()], Origin::Cli);
            }
        } else if let Some(values) = matches.get_many::<String>(spec.name) {
            layer.set(index, values.cloned().collect(), Origin::Cli);
        }
    }
    let mode = if matches.get_flag("print_config") {
        Mode::PrintConfig
    } else if matches.get_flag("check_config") {
        Mode::CheckConfig
    } else {
        Mode::Serve
    };
    Ok(CliArgs {
        layer,
        config_file: matches.get_one::<PathBuf>("config").cloned(),
        mode,
    })
}

/// Fails on the first gunicorn option ferrocorn does not support.
fn reject_unsupported(args: &[OsString]) -> Result<(), ConfigError> {
    for arg in args.iter().skip(1).filter_map(|arg| arg.to_str()) {
        if arg == "--" {
            break;
        }
        let option = if arg.starts_with("--") {
            arg.split('=').next().unwrap_or(arg)
        } else if arg.starts_with('-') {
            // A short option may carry its value or more flags: `-u www`, `-uwww`, `-Dw4`.
            arg.get(..2).unwrap_or(arg)
        } else {
            continue;
        };
        if is_unsupported_gunicorn_flag(option) {
            return Err(ConfigError::UnsupportedGunicornOption {
                option: option.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<CliArgs, ConfigError> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn unsupported_gunicorn_options_fail_before_clap_with_exit_code_2() {
        for (args, option) in [
            (&["ferrocorn", "--paste", "app.ini"][..], "--paste"),
            (&["ferrocorn", "app:app", "--keyfile", "k.pem"], "--keyfile"),
            (
                &["ferrocorn", "--log-syslog-to=udp://h:514", "app:app"],
                "--log-syslog-to",
            ),
            (
                &["ferrocorn", "--certfile", "c.pem", "app:app"],
                "--certfile",
            ),
        ] {
            let err = parse_strs(args).expect_err("unsupported");
            assert_eq!(
                err.to_string(),
                format!("gunicorn option {option} is not supported by ferrocorn yet")
            );
            assert_eq!(err.exit_code(), 2);
        }
        // After `--` everything is a value (here: the app); an unknown non-gunicorn flag is clap's error.
        assert!(parse_strs(&["ferrocorn", "--", "--daemon"]).is_ok());
        assert!(matches!(
            parse_strs(&["ferrocorn", "--frobnicate"]),
            Err(ConfigError::Clap(_))
        ));
    }

    #[test]
    fn a_switch_takes_no_value_and_is_only_in_the_layer_when_given() {
        let index = SETTINGS
            .iter()
            .position(|s| s.name == "preload_app")
            .expect("known setting");
        let cli = parse_strs(&["ferrocorn", "app:app"]).expect("valid");
        assert_eq!(cli.layer.get(index), None, "not given stays not given");
        for args in [
            &["ferrocorn", "--preload", "app:app"][..],
            &["ferrocorn", "app:app", "--preload"],
            &["ferrocorn", "--preload", "--preload", "app:app"],
        ] {
            let cli = parse_strs(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let given = cli.layer.get(index).expect("given");
            assert_eq!(
                (given.values.as_slice(), &given.origin),
                (&["true".to_string()][..], &Origin::Cli),
                "{args:?}"
            );
        }
        // The flag takes no value: `--preload app:app` keeps app:app as the app.
        let cli = parse_strs(&["ferrocorn", "--preload", "app:app"]).expect("valid");
        let app = SETTINGS
            .iter()
            .position(|s| s.name == "wsgi_app")
            .expect("known");
        assert_eq!(
            cli.layer.get(app).map(|raw| raw.values.clone()),
            Some(vec!["app:app".to_string()])
        );
        let err = parse_strs(&["ferrocorn", "--preload=yes", "app:app"]).expect_err("no value");
        assert!(matches!(err, ConfigError::Clap(_)));
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn meta_flags_set_the_mode_and_the_config_file() {
        let cli = parse_strs(&["ferrocorn", "-c", "f.toml", "--print-config"]).expect("valid");
        assert_eq!(
            (cli.mode, cli.config_file),
            (Mode::PrintConfig, Some(PathBuf::from("f.toml")))
        );
        let cli = parse_strs(&["ferrocorn", "--check-config", "app:app"]).expect("valid");
        assert_eq!((cli.mode, cli.config_file), (Mode::CheckConfig, None));
        assert!(parse_strs(&["ferrocorn", "--check-config", "--print-config"]).is_err());
    }

    #[test]
    fn a_future_subcommand_does_not_break_positional_apps() {
        let command = command().subcommand(Command::new("sweep"));
        let matches = command
            .clone()
            .try_get_matches_from(["ferrocorn", "-w", "4", "app:app"])
            .expect("serve form parses");
        assert_eq!(
            matches.get_one::<String>("wsgi_app").map(String::as_str),
            Some("app:app")
        );
        assert!(matches.subcommand().is_none());
        let matches = command
            .try_get_matches_from(["ferrocorn", "sweep"])
            .expect("subcommand parses");
        assert_eq!(matches.subcommand_name(), Some("sweep"));
    }

    #[test]
    fn help_groups_settings_by_section_and_shows_env_and_default() {
        let help = command().render_help().to_string();
        for needle in [
            "Workers:",
            "Request limits:",
            "-w, --workers <INT>",
            "[default: 1] [env: FERROCORN_WORKERS]",
            "[APP]",
            "App:",
            "--preload ",
            "[default: false] [env: FERROCORN_PRELOAD_APP]",
        ] {
            assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
        }
        command().debug_assert();
    }
}
