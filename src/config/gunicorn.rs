//! gunicorn's 120 settings (gunicorn 27.0.1, `gunicorn.config.KNOWN_SETTINGS`)
//! and what ferrocorn does with each: the one list behind the command line's
//! refusals (`cli.rs`), the config file's name mapping (`python_file.rs`)
//! and the README's compatibility table (`render.rs`).
//!
//! A setting is either a ferrocorn setting with gunicorn's meaning (by the
//! name in `table.rs`, which differs for a few: gunicorn's `keepalive` is
//! `keep_alive`, `accesslog` is `access_logfile`...), a server hook read
//! from a Python config file, one of the command line's own flags, or not
//! supported: then its flags and its config-file name are refused by name.

/// What ferrocorn does with one gunicorn setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// The ferrocorn setting of this name (in `SETTINGS`) has its meaning.
    Setting(&'static str),
    /// A server hook: a callable in a Python config file.
    Hook,
    /// Handled by the command line itself (`-c`, `--check-config`, ...).
    Command,
    /// Refused by name, on the command line and in config files.
    No,
}

/// One gunicorn setting.
#[derive(Debug, Clone, Copy)]
pub struct GunicornSetting {
    /// gunicorn's name: the config-file name and the key in `cfg`.
    pub name: &'static str,
    /// gunicorn's command-line flags, if it has any.
    pub flags: &'static [&'static str],
    /// What ferrocorn does with it.
    pub support: Support,
}

const fn g(
    name: &'static str,
    flags: &'static [&'static str],
    support: Support,
) -> GunicornSetting {
    GunicornSetting {
        name,
        flags,
        support,
    }
}

use Support::{Command, Hook, No, Setting};

/// Every gunicorn setting, in gunicorn's order.
pub const GUNICORN_SETTINGS: &[GunicornSetting] = &[
    g("config", &["-c", "--config"], Command),
    g("wsgi_app", &[], Setting("wsgi_app")),
    g("bind", &["-b", "--bind"], Setting("bind")),
    g("backlog", &["--backlog"], Setting("backlog")),
    g("workers", &["-w", "--workers"], Setting("workers")),
    g(
        "worker_class",
        &["-k", "--worker-class"],
        Setting("worker_class"),
    ),
    g("threads", &["--threads"], Setting("threads")),
    g(
        "worker_connections",
        &["--worker-connections"],
        Setting("worker_connections"),
    ),
    g("max_requests", &["--max-requests"], Setting("max_requests")),
    g(
        "max_requests_jitter",
        &["--max-requests-jitter"],
        Setting("max_requests_jitter"),
    ),
    g("timeout", &["-t", "--timeout"], Setting("timeout")),
    g(
        "graceful_timeout",
        &["--graceful-timeout"],
        Setting("graceful_timeout"),
    ),
    g("keepalive", &["--keep-alive"], Setting("keep_alive")),
    g(
        "limit_request_line",
        &["--limit-request-line"],
        Setting("limit_request_line"),
    ),
    g(
        "limit_request_fields",
        &["--limit-request-fields"],
        Setting("limit_request_fields"),
    ),
    g(
        "limit_request_field_size",
        &["--limit-request-field_size"],
        Setting("limit_request_field_size"),
    ),
    g("reload", &["--reload"], Setting("reload")),
    g(
        "reload_engine",
        &["--reload-engine"],
        Setting("reload_engine"),
    ),
    g(
        "reload_extra_files",
        &["--reload-extra-file"],
        Setting("reload_extra_files"),
    ),
    g("spew", &["--spew"], Setting("spew")),
    g("check_config", &["--check-config"], Command),
    g("print_config", &["--print-config"], Command),
    g("preload_app", &["--preload"], Setting("preload_app")),
    g("sendfile", &["--no-sendfile"], Setting("sendfile")),
    g("reuse_port", &["--reuse-port"], Setting("reuse_port")),
    g("chdir", &["--chdir"], Setting("chdir")),
    g("daemon", &["-D", "--daemon"], Setting("daemon")),
    g("raw_env", &["-e", "--env"], Setting("raw_env")),
    g("pidfile", &["-p", "--pid"], Setting("pidfile")),
    g(
        "worker_tmp_dir",
        &["--worker-tmp-dir"],
        Setting("worker_tmp_dir"),
    ),
    g("user", &["-u", "--user"], Setting("user")),
    g("group", &["-g", "--group"], Setting("group")),
    g("umask", &["-m", "--umask"], Setting("umask")),
    g("initgroups", &["--initgroups"], Setting("initgroups")),
    g("tmp_upload_dir", &[], Setting("tmp_upload_dir")),
    g(
        "secure_scheme_headers",
        &[],
        Setting("secure_scheme_headers"),
    ),
    g(
        "forwarded_allow_ips",
        &["--forwarded-allow-ips"],
        Setting("forwarded_allow_ips"),
    ),
    g(
        "accesslog",
        &["--access-logfile"],
        Setting("access_logfile"),
    ),
    g(
        "disable_redirect_access_to_syslog",
        &["--disable-redirect-access-to-syslog"],
        No,
    ),
    g(
        "access_log_format",
        &["--access-logformat"],
        Setting("access_log_format"),
    ),
    g(
        "errorlog",
        &["--error-logfile", "--log-file"],
        Setting("error_logfile"),
    ),
    g("loglevel", &["--log-level"], Setting("log_level")),
    g(
        "capture_output",
        &["--capture-output"],
        Setting("capture_output"),
    ),
    g("logger_class", &["--logger-class"], No),
    g("logconfig", &["--log-config"], No),
    g("logconfig_dict", &[], No),
    g("logconfig_json", &["--log-config-json"], No),
    g("syslog_addr", &["--log-syslog-to"], No),
    g("syslog", &["--log-syslog"], No),
    g("syslog_prefix", &["--log-syslog-prefix"], No),
    g("syslog_facility", &["--log-syslog-facility"], No),
    g(
        "enable_stdio_inheritance",
        &["-R", "--enable-stdio-inheritance"],
        Setting("enable_stdio_inheritance"),
    ),
    g("statsd_host", &["--statsd-host"], Setting("statsd_host")),
    g(
        "dogstatsd_tags",
        &["--dogstatsd-tags"],
        Setting("dogstatsd_tags"),
    ),
    g(
        "statsd_prefix",
        &["--statsd-prefix"],
        Setting("statsd_prefix"),
    ),
    g(
        "enable_backlog_metric",
        &["--enable-backlog-metric"],
        Setting("enable_backlog_metric"),
    ),
    g("proc_name", &["-n", "--name"], Setting("proc_name")),
    g("default_proc_name", &[], No),
    g("pythonpath", &["--pythonpath"], Setting("pythonpath")),
    g("paste", &["--paste", "--paster"], No),
    g("on_starting", &[], Hook),
    g("on_reload", &[], Hook),
    g("when_ready", &[], Hook),
    g("pre_fork", &[], Hook),
    g("post_fork", &[], Hook),
    g("post_worker_init", &[], Hook),
    g("worker_int", &[], Hook),
    g("worker_abort", &[], Hook),
    g("pre_exec", &[], Hook),
    g("pre_request", &[], Hook),
    g("post_request", &[], Hook),
    g("child_exit", &[], Hook),
    g("worker_exit", &[], Hook),
    g("nworkers_changed", &[], Hook),
    g("on_exit", &[], Hook),
    g("ssl_context", &[], No),
    g(
        "proxy_protocol",
        &["--proxy-protocol"],
        Setting("proxy_protocol"),
    ),
    g(
        "proxy_allow_ips",
        &["--proxy-allow-from"],
        Setting("proxy_allow_ips"),
    ),
    g("protocol", &["--protocol"], No),
    g("uwsgi_allow_ips", &["--uwsgi-allow-from"], No),
    g("keyfile", &["--keyfile"], No),
    g("certfile", &["--certfile"], No),
    g("ssl_version", &["--ssl-version"], No),
    g("cert_reqs", &["--cert-reqs"], No),
    g("ca_certs", &["--ca-certs"], No),
    g("suppress_ragged_eofs", &["--suppress-ragged-eofs"], No),
    g(
        "do_handshake_on_connect",
        &["--do-handshake-on-connect"],
        No,
    ),
    g("ciphers", &["--ciphers"], No),
    g("http_protocols", &["--http-protocols"], No),
    g("http2_cleartext", &["--http2-cleartext"], No),
    g(
        "http2_max_concurrent_streams",
        &["--http2-max-concurrent-streams"],
        No,
    ),
    g(
        "http2_initial_window_size",
        &["--http2-initial-window-size"],
        No,
    ),
    g("http2_max_frame_size", &["--http2-max-frame-size"], No),
    g(
        "http2_max_header_list_size",
        &["--http2-max-header-list-size"],
        No,
    ),
    g("raw_paste_global_conf", &["--paste-global"], No),
    g(
        "permit_obsolete_folding",
        &["--permit-obsolete-folding"],
        No,
    ),
    g("strip_header_spaces", &["--strip-header-spaces"], No),
    g(
        "permit_unconventional_http_method",
        &["--permit-unconventional-http-method"],
        Setting("permit_unconventional_http_method"),
    ),
    g(
        "permit_unconventional_http_version",
        &["--permit-unconventional-http-version"],
        No,
    ),
    g(
        "casefold_http_method",
        &["--casefold-http-method"],
        Setting("casefold_http_method"),
    ),
    g(
        "forwarder_headers",
        &["--forwarder-headers"],
        Setting("forwarder_headers"),
    ),
    g("header_map", &["--header-map"], Setting("header_map")),
    g("asgi_loop", &["--asgi-loop"], No),
    g("asgi_lifespan", &["--asgi-lifespan"], No),
    g(
        "asgi_disconnect_grace_period",
        &["--asgi-disconnect-grace-period"],
        No,
    ),
    g(
        "websocket_max_message_size",
        &["--websocket-max-message-size"],
        No,
    ),
    g("http_parser", &["--http-parser"], No),
    g("root_path", &["--root-path"], No),
    g("dirty_apps", &["--dirty-app"], No),
    g("dirty_workers", &["--dirty-workers"], No),
    g("dirty_timeout", &["--dirty-timeout"], No),
    g("dirty_threads", &["--dirty-threads"], No),
    g("dirty_graceful_timeout", &["--dirty-graceful-timeout"], No),
    g("on_dirty_starting", &[], No),
    g("dirty_post_fork", &[], No),
    g("dirty_worker_init", &[], No),
    g("dirty_worker_exit", &[], No),
    g("control_socket", &["--control-socket"], No),
    g("control_socket_mode", &["--control-socket-mode"], No),
    g("control_socket_disable", &["--no-control-socket"], No),
];

/// The gunicorn setting of this config-file name.
pub fn by_name(name: &str) -> Option<&'static GunicornSetting> {
    GUNICORN_SETTINGS
        .iter()
        .find(|setting| setting.name == name)
}

/// The gunicorn setting with this command-line flag (`--user`, `-D`).
pub fn by_flag(flag: &str) -> Option<&'static GunicornSetting> {
    GUNICORN_SETTINGS
        .iter()
        .find(|setting| setting.flags.contains(&flag))
}

/// How many of gunicorn's settings ferrocorn supports with their meaning.
pub fn supported_count() -> usize {
    GUNICORN_SETTINGS
        .iter()
        .filter(|setting| setting.support != No)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SETTINGS;

    #[test]
    fn every_supported_setting_exists_and_takes_gunicorns_flags() {
        assert_eq!(GUNICORN_SETTINGS.len(), 120, "gunicorn 27.0.1 has 120");
        let command = crate::cli::command();
        for setting in GUNICORN_SETTINGS {
            let Setting(ours) = setting.support else {
                continue;
            };
            let spec = SETTINGS.iter().find(|spec| spec.name == ours);
            assert!(spec.is_some(), "{} maps to no setting {ours}", setting.name);
            for flag in setting.flags {
                let args = ["ferrocorn", flag];
                let err = command.clone().try_get_matches_from(args);
                let unknown = matches!(
                    err.as_ref().map_err(|e| e.kind()),
                    Err(clap::error::ErrorKind::UnknownArgument)
                );
                assert!(
                    !unknown,
                    "{flag} (gunicorn's {}) is not accepted",
                    setting.name
                );
            }
        }
    }

    #[test]
    fn names_and_flags_are_unique() {
        for (i, setting) in GUNICORN_SETTINGS.iter().enumerate() {
            assert!(
                GUNICORN_SETTINGS[..i]
                    .iter()
                    .all(|s| s.name != setting.name),
                "{}",
                setting.name
            );
            for flag in setting.flags {
                assert_eq!(by_flag(flag).map(|s| s.name), Some(setting.name), "{flag}");
            }
        }
    }
}
