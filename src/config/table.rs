//! THE settings table: every setting of ferrocorn, declared once.
//!
//! This file is data. `with_settings!` hands the table to a callback macro:
//! here it builds [`SETTINGS`] (the metadata that drives clap, the TOML and
//! env readers and the docs), and `validate.rs` builds the typed `Settings`
//! struct and its conversion from it. To add a setting, add an entry below,
//! then run `FERROCORN_BLESS=1 cargo test docs_are_current` to refresh the
//! README table and `configs/ferrocorn.example.toml`.
//!
//! Entry syntax: `name: Type = [default strings] { doc, section, then the
//! optional short, long, aliases, positional, value_name, min, max, example,
//! bare, restart }` (`restart: true`: a HUP cannot apply it; see [`SettingSpec::needs_restart`]).
//! The TOML key is the name; the env var is `FERROCORN_` + the name in upper
//! case, derived by [`SettingSpec::env_var`] and never typed out.
//!
//! A `bool` setting is a switch (see [`SettingSpec::is_switch`]): its flag
//! takes no value and turns it on, as gunicorn's `store_true` options do; the
//! TOML file takes a TOML boolean and the env var true/false, 1/0 or yes/no.
//! So that the flag means something, a switch defaults to false, except one
//! whose flag is `--no-...` (gunicorn's `--no-sendfile`): it defaults to
//! true and its flag turns it off.

use super::privileges::{Account, Umask};
use super::proxy::{FieldName, IpRange, ProxyProtocol, SchemeHeader};
use super::statsd::StatsdAddr;
use super::types::{
    AppSpec, BindAddr, ByteSize, HeaderMapping, LogLevel, MemoryMetric, ReloadEngine, WorkerClass,
    WorkerCpuAffinity,
};
use super::validate::SettingValue;
use std::path::PathBuf;
use std::time::Duration;

/// Calls `$callback! { <the table> }`.
macro_rules! with_settings {
    ($callback:ident) => {
        $callback! {
            bind: Vec<BindAddr> = ["127.0.0.1:8000"] {
                doc: "Addresses to listen on: HOST:PORT, HOST (port 8000), :PORT (every IPv4 interface), unix:PATH or fd://N (an inherited listening socket), IPv6 hosts in brackets; repeat the flag for several. Sockets from systemd (LISTEN_FDS) replace them",
                section: Server, short: 'b', long: "bind", restart: true,
            },
            backlog: u32 = ["2048"] {
                doc: "Listen backlog, and the bound of the queue of requests waiting for a free worker",
                section: Server, long: "backlog", min: 1, restart: true,
            },
            reuse_port: bool = ["false"] {
                doc: "Set SO_REUSEPORT on the listening TCP sockets, so other processes can bind the same port and the kernel spreads connections among them",
                section: Server, long: "reuse-port", restart: true,
            },
            master_threads: Option<usize> = [] {
                doc: "Threads the master serves HTTP and the workers' lanes on (one tokio runtime; 1 is a single-threaded one). Default: from the machine's cores, see the README's \"The master on more cores\"",
                section: Server, long: "master-threads", min: 1, max: 1024, example: "4", restart: true,
            },
            daemon: bool = ["false"] {
                doc: "Detach from the terminal and run in the background (fork, setsid, fork, stdio to /dev/null), before anything else starts; the pid file gets the daemon's pid",
                section: Server, short: 'D', long: "daemon", restart: true,
            },
            sendfile: bool = ["true"] {
                doc: "Accepted for gunicorn's --no-sendfile, which turns it off; ferrocorn never uses sendfile(2): every response reaches the client through the master's socket, so there is nothing to turn off",
                section: Server, long: "no-sendfile", restart: true,
            },
            user: Option<Account> = [] {
                doc: "Run the fork server and the workers as this user, a name or a numeric uid; default: the master's. The master keeps its own (it binds and signals); Unix sockets and log files it creates are chowned to it, as in gunicorn",
                section: Server, short: 'u', long: "user", value_name: "USER", example: "nobody",
            },
            group: Option<Account> = [] {
                doc: "Run the fork server and the workers with this group, a name or a numeric gid; default: the master's, even when user is set (as in gunicorn)",
                section: Server, short: 'g', long: "group", value_name: "GROUP", example: "nogroup",
            },
            initgroups: bool = ["false"] {
                doc: "With user and group, also give the fork server and the workers user's supplementary groups from the group database, plus group (initgroups(3)); without it they have none",
                section: Server, long: "initgroups",
            },
            umask: Umask = ["0"] {
                doc: "Mask for the mode of the Unix sockets ferrocorn binds (0777 without one, so a proxy running as another user can connect); octal as 0o22 or 022 (gunicorn reads a leading 0 as octal), decimal, or hex as 0x12. The processes' own umask is left as it was, as gunicorn leaves it",
                section: Server, short: 'm', long: "umask", restart: true,
            },
            workers: usize = ["1"] {
                doc: "Number of worker processes",
                section: Workers, short: 'w', long: "workers", min: 1,
            },
            threads: usize = ["1"] {
                doc: "Lanes (concurrent requests) per worker; more than 1 makes a sync worker behave as gthread",
                section: Workers, long: "threads", min: 1,
            },
            worker_connections: usize = ["1000"] {
                doc: "Most client connections open at once per worker, as gunicorn's gthread worker bounds them; the master holds them all, so it accepts at most workers × this (the count at start) and the kernel's backlog holds the rest; with gevent also the requests a worker runs at once (at most 65536)",
                section: Workers, long: "worker-connections", min: 1, restart: true,
            },
            pipeline_below: Duration = ["2ms"] {
                doc: "A request may wait in a busy lane, written behind the running one so the worker never sleeps between requests, when that worker's requests take less than this on average; 0 turns it off",
                section: Workers, long: "pipeline-below", restart: true,
            },
            pipeline_depth: usize = ["16"] {
                doc: "Most requests a lane holds under --pipeline-below: the running one and those written behind it, so a busy worker finds its next request already there even when the master was off its core for a while; 1 turns waiting in lanes off",
                section: Workers, long: "pipeline-depth", min: 1, restart: true,
            },
            worker_cpu_affinity: WorkerCpuAffinity = ["off"] {
                doc: "Pin each worker to one CPU of those the master may run on, the one the fewest live workers hold (a replacement takes the CPU of the worker it replaces): off (the kernel places them, as under gunicorn), spread, or auto, which spreads when there are at least as many workers (at start) as such CPUs and at least 2 of them. The master is never pinned. Measured on 2 cores: 5-12% more requests per second on a trivial app, whose master is the limit, and 6% fewer on Flask, so it is off by default",
                section: Workers, long: "worker-cpu-affinity", restart: true,
            },
            worker_class: WorkerClass = ["sync"] {
                doc: "Worker type: sync, gthread, or gevent (worker-connections requests at once per worker, each in a greenlet; needs gevent in the workers' Python)",
                section: Workers, short: 'k', long: "worker-class",
            },
            python: Option<PathBuf> = [] {
                doc: "Python interpreter for the workers; default: $VIRTUAL_ENV/bin/python if VIRTUAL_ENV is set, else the virtualenv's python if ferrocorn runs from a virtualenv's bin/, else python3 on PATH",
                section: Workers, long: "python", example: ".venv/bin/python",
            },
            worker_tmp_dir: Option<PathBuf> = [] {
                doc: "Accepted for gunicorn's heartbeat-file directory and checked to be an existing directory; nothing is written there: ferrocorn's workers keep no heartbeat file, the master watches them over their control sockets",
                section: Workers, long: "worker-tmp-dir", value_name: "DIR", example: "/dev/shm",
            },
            timeout: Duration = ["30s"] {
                doc: "A request running longer than this gets 504 and its worker is replaced; 0 disables",
                section: Timeouts, short: 't', long: "timeout", restart: true,
            },
            graceful_timeout: Duration = ["30s"] {
                doc: "How long a retiring or stopping worker may finish its requests before it is killed",
                section: Timeouts, long: "graceful-timeout",
            },
            keep_alive: Duration = ["2s"] {
                doc: "How long an idle keep-alive connection stays open",
                section: Timeouts, long: "keep-alive", restart: true,
            },
            header_timeout: Duration = ["10s"] {
                doc: "A connection that does not send a complete request head within this time is closed",
                section: Timeouts, long: "header-timeout", restart: true,
            },
            body_timeout: Duration = ["30s"] {
                doc: "A request body that sends no bytes for this long gets 408 and its connection is closed; a body already streaming to a worker is cut off there (the app's wsgi.input read fails, as when a client leaves); 0 disables",
                section: Timeouts, long: "body-timeout", restart: true,
            },
            queue_timeout: Duration = ["30s"] {
                doc: "A request waiting this long for a free worker gets 503",
                section: Timeouts, long: "queue-timeout", restart: true,
            },
            limit_request_line: usize = ["4094"] {
                doc: "Maximum length of the request line in bytes; 0 means unlimited, and above 8190 means 8190, as in gunicorn",
                section: Limits, long: "limit-request-line", restart: true,
            },
            limit_request_fields: usize = ["100"] {
                doc: "Maximum number of request header fields; 0 and above 32768 mean 32768, as in gunicorn",
                section: Limits, long: "limit-request-fields", restart: true,
            },
            limit_request_field_size: usize = ["8190"] {
                doc: "Maximum size of one request header field in bytes; 0 means the default 8190, as gunicorn's parser has it (its docs say unlimited)",
                section: Limits, long: "limit-request-field_size",
                aliases: ["limit-request-field-size"], restart: true,
            },
            limit_request_body: ByteSize = ["1GiB"] {
                doc: "Larger request bodies get 413",
                section: Limits, long: "limit-request-body", restart: true,
            },
            request_buffer_size: ByteSize = ["1MiB"] {
                doc: "Bodies up to this size are received whole before a worker sees the request; larger ones stream to the worker",
                section: Limits, long: "request-buffer-size", restart: true,
            },
            max_buffered_bodies: ByteSize = ["256MiB"] {
                doc: "Most bytes of request bodies the master holds, over all connections, for requests no worker has answered yet (see request_buffer_size); a body that would pass it gets 503 with Retry-After and its connection is closed; 0 means unbounded",
                section: Limits, long: "max-buffered-bodies", restart: true,
            },
            permit_unconventional_http_method: bool = ["false"] {
                doc: "Let request methods in lower case, with # or outside 3 to 20 characters through to the app, as gunicorn's (deprecated there); without it they get 400",
                section: Limits, long: "permit-unconventional-http-method", restart: true,
            },
            casefold_http_method: bool = ["false"] {
                doc: "REQUEST_METHOD in upper case whatever the client sent, as gunicorn's (deprecated there; with permit_unconventional_http_method)",
                section: Limits, long: "casefold-http-method", restart: true,
            },
            forwarded_allow_ips: Vec<IpRange> = ["127.0.0.1", "::1"] {
                doc: "Front-ends trusted to set secure_scheme_headers and forwarder_headers: IP addresses, CIDR networks or * for any, comma separated; Unix-socket peers are always trusted; default: $FORWARDED_ALLOW_IPS if set, as in gunicorn",
                section: Proxy, long: "forwarded-allow-ips", restart: true,
            },
            secure_scheme_headers: Vec<SchemeHeader> = ["X-FORWARDED-PROTOCOL=ssl", "X-FORWARDED-PROTO=https", "X-FORWARDED-SSL=on"] {
                doc: "Headers by which a trusted front-end says a request came over HTTPS (wsgi.url_scheme becomes https): NAME=VALUE, repeat the flag for several; a TOML table or a dict in gunicorn.conf.py; listed headers that disagree get 400",
                section: Proxy, long: "secure-scheme-headers", restart: true,
            },
            forwarder_headers: Vec<FieldName> = ["SCRIPT_NAME", "PATH_INFO"] {
                doc: "Header names with underscores a trusted front-end may set, comma separated, * for all; a SCRIPT_NAME header sets SCRIPT_NAME, the others reach the app as HTTP_*",
                section: Proxy, long: "forwarder-headers", restart: true,
            },
            header_map: HeaderMapping = ["drop"] {
                doc: "A request header with an underscore in its name (which the environ cannot tell from a dash): drop leaves it out, refuse answers 400, dangerous maps it as if it had a dash; a trusted front-end's forwarder_headers are always kept, as in gunicorn",
                section: Proxy, long: "header-map", restart: true,
            },
            proxy_protocol: ProxyProtocol = ["off"] {
                doc: "Take REMOTE_ADDR and REMOTE_PORT from a PROXY protocol header at the start of each connection: off, v1 (text), v2 (binary) or auto (either; the flag without a value)",
                section: Proxy, long: "proxy-protocol", bare: "auto", restart: true,
            },
            proxy_allow_ips: Vec<IpRange> = ["127.0.0.1", "::1"] {
                doc: "Peers allowed to send a PROXY header: IP addresses, CIDR networks or * for any, comma separated; a PROXY header from another peer gets 403; Unix-socket peers are always allowed",
                section: Proxy, long: "proxy-allow-from", restart: true,
            },
            wsgi_app: Option<AppSpec> = [] {
                doc: "The WSGI app: MODULE:ATTRIBUTE or MODULE:FACTORY(ARGS); the attribute defaults to application",
                section: App, positional: "APP", example: "examples.flask_app:app",
            },
            chdir: Option<PathBuf> = [] {
                doc: "Directory to change to before loading the app",
                section: App, long: "chdir", example: "/srv/app",
            },
            preload_app: bool = ["false"] {
                doc: "Import the app once in the fork server before forking the workers, so they share its memory and boot in milliseconds; HUP still reloads code",
                section: App, long: "preload",
            },
            pythonpath: Vec<PathBuf> = [] {
                doc: "Comma-separated directories to put first on the workers' sys.path",
                section: App, long: "pythonpath", value_name: "PATH[,PATH...]", example: "src,lib",
            },
            raw_env: Vec<String> = [] {
                doc: "Environment variables for the workers, KEY=VALUE; repeat the flag for several",
                section: App, short: 'e', long: "env", value_name: "KEY=VALUE", example: "DJANGO_SETTINGS_MODULE=site.settings",
            },
            proc_name: Option<String> = [] {
                doc: "Name in the process titles ps shows (ferrocorn: master [NAME], ferrocorn: worker [NAME], ferrocorn: forkserver [NAME]); default: the app spec",
                section: App, short: 'n', long: "name", value_name: "STRING", example: "shop",
            },
            reload: bool = ["false"] {
                doc: "Restart a worker when a file of a module it imported (or a reload_extra_files entry) changes; for development; cannot be combined with preload_app, and code with a SyntaxError is answered 500 with its traceback until it is fixed, as in gunicorn",
                section: App, long: "reload",
            },
            reload_engine: ReloadEngine = ["auto"] {
                doc: "How reload watches files: auto or poll (both poll every second; gunicorn's inotify needs a package ferrocorn's standard-library worker does not have)",
                section: App, long: "reload-engine", value_name: "STRING",
            },
            reload_extra_files: Vec<String> = [] {
                doc: "More files (or glob patterns, expanded at each check) whose change restarts a worker with reload; repeat the flag for several",
                section: App, long: "reload-extra-file", value_name: "FILE", example: "templates/**/*.html",
            },
            spew: bool = ["false"] {
                doc: "Print every line the workers execute (a sys.settrace trace function in every thread); for debugging only",
                section: App, long: "spew",
            },
            tmp_upload_dir: Option<PathBuf> = [] {
                doc: "Accepted for gunicorn's config files and checked to be an existing directory; unused, as gunicorn itself does not use it",
                section: App, long: "tmp-upload-dir", value_name: "DIR", example: "/tmp",
            },
            log_level: LogLevel = ["info"] {
                doc: "Error log level: debug, info, warning, error or critical",
                section: Logging, long: "log-level", restart: true,
            },
            capture_output: bool = ["false"] {
                doc: "Send the workers' stdout (print) to the error log file too, as their stderr already goes; no effect when the error log is stderr",
                section: Logging, long: "capture-output", restart: true,
            },
            enable_stdio_inheritance: bool = ["false"] {
                doc: "With daemon, keep stdout and stderr unless they are a terminal (stdin still becomes /dev/null), so shell redirection keeps working; the workers write unbuffered either way (ferrocorn always sets PYTHONUNBUFFERED=1 for them)",
                section: Logging, short: 'R', long: "enable-stdio-inheritance", restart: true,
            },
            error_logfile: String = ["-"] {
                doc: "Error log file; - is stderr",
                section: Logging, long: "error-logfile", aliases: ["log-file"], value_name: "FILE", restart: true,
            },
            access_logfile: Option<String> = [] {
                doc: "Access log file; - is stdout; no access log when not set",
                section: Logging, long: "access-logfile", value_name: "FILE", example: "-", restart: true,
            },
            access_log_format: String = [r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#] {
                doc: "Access log line format, in gunicorn's %(name)s syntax",
                section: Logging, long: "access-logformat", value_name: "FORMAT", restart: true,
            },
            pidfile: Option<PathBuf> = [] {
                doc: "File to write the master's pid to",
                section: Logging, short: 'p', long: "pid", value_name: "FILE", example: "/run/ferrocorn.pid", restart: true,
            },
            max_requests: u64 = ["0"] {
                doc: "Retire a worker after this many requests; 0 disables",
                section: Recycling, long: "max-requests",
            },
            max_requests_jitter: u64 = ["0"] {
                doc: "Each worker retires after max_requests plus a random 0..=jitter requests, so they do not all retire at once",
                section: Recycling, long: "max-requests-jitter",
            },
            max_memory: Option<ByteSize> = [] {
                doc: "Soft memory limit per worker: a worker above it retires gracefully",
                section: Recycling, long: "max-memory", example: "512MiB",
            },
            max_memory_hard: Option<ByteSize> = [] {
                doc: "Hard memory limit per worker: a worker above it is killed at once; must exceed max_memory",
                section: Recycling, long: "max-memory-hard", example: "1GiB",
            },
            max_memory_total: Option<ByteSize> = [] {
                doc: "Memory budget for all workers together",
                section: Recycling, long: "max-memory-total", example: "4GiB",
            },
            memory_metric: MemoryMetric = ["rss"] {
                doc: "Memory figure the limits apply to: rss, uss or pss (forked workers share pages)",
                section: Recycling, long: "memory-metric",
            },
            memory_check_interval: Duration = ["1s"] {
                doc: "How often the master samples each worker's memory",
                section: Recycling, long: "memory-check-interval", restart: true,
            },
            spare_workers: usize = ["1"] {
                doc: "With max_requests or a memory limit, keep this many workers booted and idle, so a worker due to retire is replaced at once instead of after a boot; 0 boots each replacement when it is needed",
                section: Recycling, long: "spare-workers", max: 64,
            },
            max_concurrent_retirements: Option<usize> = [] {
                doc: "At most this many workers retire at once; default: a quarter of the workers, at least 1",
                section: Recycling, long: "max-concurrent-retirements", min: 1, example: "2",
            },
            metrics_bind: Option<String> = [] {
                doc: "HOST:PORT to serve Prometheus metrics on; off when not set",
                section: Metrics, long: "metrics-bind", value_name: "HOST:PORT", example: "127.0.0.1:9100", restart: true,
            },
            statsd_host: Option<StatsdAddr> = [] {
                doc: "Send gunicorn's statsd metrics (gunicorn.requests, gunicorn.request.duration, gunicorn.request.status.CODE, gunicorn.workers, gunicorn.log.LEVEL) to this collector: HOST:PORT (UDP, port 8125 when left out) or unix:PATH (a unix datagram socket), batched once a second; off when not set",
                section: Metrics, long: "statsd-host", example: "127.0.0.1:8125", restart: true,
            },
            statsd_prefix: Option<String> = [] {
                doc: "Prefix of the statsd metric names, joined with a dot as gunicorn does (app gives app.gunicorn.requests)",
                section: Metrics, long: "statsd-prefix", value_name: "PREFIX", example: "app", restart: true,
            },
            dogstatsd_tags: Option<String> = [] {
                doc: "Comma-separated dogstatsd tags (env:prod,region:eu) appended to every statsd line as |#tags",
                section: Metrics, long: "dogstatsd-tags", value_name: "TAGS", example: "env:prod,region:eu", restart: true,
            },
            enable_backlog_metric: bool = ["false"] {
                doc: "Also send gunicorn.backlog to statsd: the connections waiting in the TCP listen sockets' accept queues (Linux), as a histogram, once a second",
                section: Metrics, long: "enable-backlog-metric", restart: true,
            },
        }
    };
}

/// How many values a setting holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exactly one value; given twice on the command line, the last one wins.
    One,
    /// Zero or one value; an empty string means "not set".
    Optional,
    /// Any number of values; a higher layer replaces the whole list.
    List {
        /// Whether one string may carry several values separated by commas.
        comma_separated: bool,
    },
}

/// How a value is written in TOML output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TomlKind {
    /// A bare number.
    Integer,
    /// A quoted string.
    String,
    /// A bare `true` or `false`; the TOML reader accepts nothing else.
    Boolean,
}

/// The group a setting belongs to, in docs and `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    /// Listening sockets.
    Server,
    /// The worker pool.
    Workers,
    /// Time limits.
    Timeouts,
    /// Request size limits.
    Limits,
    /// Trusting a front-end proxy.
    Proxy,
    /// The app and its environment.
    App,
    /// Logs and the pid file.
    Logging,
    /// When workers are replaced.
    Recycling,
    /// Metrics endpoint.
    Metrics,
}

impl Section {
    /// Heading used in `--help` and the docs.
    pub fn title(self) -> &'static str {
        match self {
            Section::Server => "Server",
            Section::Workers => "Workers",
            Section::Timeouts => "Timeouts",
            Section::Limits => "Request limits",
            Section::Proxy => "Behind a proxy",
            Section::App => "App",
            Section::Logging => "Logging",
            Section::Recycling => "Worker recycling",
            Section::Metrics => "Metrics",
        }
    }
}

/// One row of the settings table.
#[derive(Debug)]
pub struct SettingSpec {
    /// Name; also the TOML key and the field of `Settings`.
    pub name: &'static str,
    /// One-line description.
    pub doc: &'static str,
    /// Group in docs and `--help`.
    pub section: Section,
    /// Short flag, gunicorn's where gunicorn has one.
    pub short: Option<char>,
    /// Long flag without the dashes, gunicorn's spelling where gunicorn has one.
    pub long: Option<&'static str>,
    /// Other accepted long flags.
    pub aliases: &'static [&'static str],
    /// Placeholder of the positional argument, for the one setting given that way.
    pub positional: Option<&'static str>,
    /// Placeholder in `--help`.
    pub value_name: &'static str,
    /// Default, as raw strings in canonical form (empty: not set / empty list).
    pub default: &'static [&'static str],
    /// A typical value for docs, for settings that are unset by default.
    pub example: Option<&'static str>,
    /// The value of the flag given without one (`--proxy-protocol` is
    /// `auto`), as gunicorn's `nargs="?"` options have it.
    pub bare: Option<&'static str>,
    /// Owned by the running master (sockets, HTTP front, logs, the
    /// dispatcher's and sampler's timings): a HUP cannot apply it, the next
    /// start does. Everything else applies on HUP, with the workers' roll.
    pub needs_restart: bool,
    /// Smallest allowed value of an integer setting.
    pub min: Option<u64>,
    /// Largest allowed value of an integer setting.
    pub max: Option<u64>,
    /// One value, an optional value or a list.
    pub kind: Kind,
    /// How the value is written in TOML.
    pub toml: TomlKind,
    /// What a valid value looks like, for error messages (before range checks).
    pub expected: &'static str,
}

impl SettingSpec {
    /// The environment variable: `FERROCORN_` + the name in upper case.
    pub fn env_var(&self) -> String {
        format!("FERROCORN_{}", self.name.to_ascii_uppercase())
    }

    /// Whether this is an on/off setting whose flag takes no value (`--preload`).
    pub fn is_switch(&self) -> bool {
        self.toml == TomlKind::Boolean
    }

    /// Whether a TOML table or a Python dict gives it, as `NAME=VALUE`
    /// values (`secure_scheme_headers`, a dict in gunicorn).
    pub fn takes_pairs(&self) -> bool {
        matches!(self.kind, Kind::List { .. }) && self.value_name == "NAME=VALUE"
    }

    /// How the command line spells it: `-w/--workers`, `--backlog` or `APP`.
    pub fn flag(&self) -> String {
        match (self.short, self.long, self.positional) {
            (Some(short), Some(long), _) => format!("-{short}/--{long}"),
            (None, Some(long), _) => format!("--{long}"),
            (_, None, Some(positional)) => positional.to_string(),
            _ => String::new(),
        }
    }
}

/// `Some($x)` when a `$(...)?` fragment is present, else `None`.
macro_rules! optional {
    () => {
        None
    };
    ($x:expr) => {
        Some($x)
    };
}

macro_rules! spec_slice {
    ($(
        $name:ident : $ty:ty = [$($default:literal),*] {
            doc: $doc:literal,
            section: $section:ident,
            $(short: $short:literal,)?
            $(long: $long:literal,)?
            $(aliases: [$($alias:literal),*],)?
            $(positional: $positional:literal,)?
            $(value_name: $value_name:literal,)?
            $(min: $min:literal,)?
            $(max: $max:literal,)?
            $(example: $example:literal,)?
            $(bare: $bare:literal,)?
            $(restart: $restart:literal,)?
        },
    )*) => {
        /// Every setting, in table order.
        pub static SETTINGS: &[SettingSpec] = &[$(
            SettingSpec {
                name: stringify!($name),
                doc: $doc,
                section: Section::$section,
                short: optional!($($short)?),
                long: optional!($($long)?),
                aliases: &[$($($alias),*)?],
                positional: optional!($($positional)?),
                value_name: [$($value_name,)? <$ty as SettingValue>::VALUE_NAME][0],
                default: &[$($default),*],
                example: optional!($($example)?),
                bare: optional!($($bare)?),
                needs_restart: [$($restart,)? false][0],
                min: optional!($($min)?),
                max: optional!($($max)?),
                kind: <$ty as SettingValue>::KIND,
                toml: <$ty as SettingValue>::TOML,
                expected: <$ty as SettingValue>::EXPECTED,
            },
        )*];
    };
}

with_settings!(spec_slice);

/// The row of the setting called `name`.
pub fn spec(name: &str) -> Option<&'static SettingSpec> {
    SETTINGS.iter().find(|spec| spec.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{is_unsupported_gunicorn_flag, META_IDS};
    use crate::config::validate::Settings;
    use std::collections::HashSet;

    /// Issue 10, 16: the list lived in master/reload.rs and drifted (a HUP
    /// silently ignored pipeline_below and memory_check_interval).
    #[test]
    fn what_the_running_master_owns_needs_a_restart_and_the_rest_applies_on_hup() {
        let restart: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| s.needs_restart)
            .map(|s| s.name)
            .collect();
        for owned in [
            "bind",
            "timeout",
            "body_timeout",
            "max_buffered_bodies",
            "pipeline_below",
            "memory_check_interval",
            "metrics_bind",
        ] {
            assert!(restart.contains(&owned), "{owned}");
        }
        for rolled in [
            "workers",
            "threads",
            "max_requests",
            "max_memory",
            "preload_app",
            "wsgi_app",
        ] {
            assert!(!restart.contains(&rolled), "{rolled}");
        }
    }

    #[test]
    fn names_and_flags_are_unique() {
        let mut seen = HashSet::new();
        for spec in SETTINGS {
            assert!(
                seen.insert(spec.name.to_string()),
                "duplicate name {}",
                spec.name
            );
            assert!(
                !META_IDS.contains(&spec.name),
                "{} collides with a meta flag",
                spec.name
            );
        }
        // Meta flags: -c/--config, --print-config, --check-config, -v/--version, -h/--help.
        let mut flags: HashSet<String> = [
            "-c",
            "--config",
            "--print-config",
            "--check-config",
            "-v",
            "--version",
            "-h",
            "--help",
        ]
        .map(String::from)
        .into();
        for spec in SETTINGS {
            let longs = spec.long.into_iter().chain(spec.aliases.iter().copied());
            let spellings = longs
                .map(|l| format!("--{l}"))
                .chain(spec.short.map(|s| format!("-{s}")));
            for flag in spellings {
                assert!(
                    !is_unsupported_gunicorn_flag(&flag),
                    "{flag} is both supported and not"
                );
                assert!(flags.insert(flag.clone()), "flag {flag} is used twice");
            }
        }
    }

    #[test]
    fn every_setting_has_a_doc_a_spelling_and_a_derived_env_var() {
        for spec in SETTINGS {
            assert!(
                !spec.doc.is_empty() && !spec.doc.ends_with('.'),
                "{}: one line, no period",
                spec.name
            );
            assert!(!spec.doc.contains('\n'), "{}: one line", spec.name);
            assert!(
                spec.long.is_some() != spec.positional.is_some(),
                "{}: a flag or a positional",
                spec.name
            );
            assert!(
                spec.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{}",
                spec.name
            );
            assert_eq!(
                spec.env_var(),
                format!("FERROCORN_{}", spec.name.to_uppercase())
            );
        }
        assert_eq!(
            spec("workers").map(|s| s.flag()),
            Some("-w/--workers".to_string())
        );
        assert_eq!(spec("wsgi_app").map(|s| s.flag()), Some("APP".to_string()));
    }

    #[test]
    fn defaults_and_examples_parse_and_defaults_are_canonical() {
        let defaults = Settings::default().to_raw();
        for (spec, (name, rendered)) in SETTINGS.iter().zip(defaults) {
            assert_eq!(spec.name, name, "Settings fields follow table order");
            let given: Vec<&str> = spec.default.to_vec();
            assert_eq!(
                rendered, given,
                "{}: default is not in canonical form",
                spec.name
            );
            match (spec.kind, spec.default.len()) {
                (Kind::One, 1) | (Kind::Optional, 0) | (Kind::List { .. }, _) => {}
                (kind, n) => panic!("{}: {n} defaults for a {kind:?} setting", spec.name),
            }
            if spec.default.is_empty() {
                assert!(
                    spec.example.is_some(),
                    "{}: unset by default, so it needs an example",
                    spec.name
                );
            }
        }
        for spec in SETTINGS.iter().filter(|s| s.example.is_some()) {
            let args = ["ferrocorn", "--print-config"];
            let var = spec.env_var();
            let example = spec.example.map(str::to_string);
            let env = |name: &str| if name == var { example.clone() } else { None };
            crate::config::load(args, &env)
                .unwrap_or_else(|e| panic!("{}: example: {e}", spec.name));
        }
    }

    #[test]
    fn switches_are_single_flags_that_default_to_false() {
        let switches: Vec<&SettingSpec> = SETTINGS.iter().filter(|s| s.is_switch()).collect();
        assert!(switches.iter().any(|s| s.name == "preload_app"));
        for spec in switches {
            assert_eq!(spec.kind, Kind::One, "{}: a switch is one bool", spec.name);
            assert!(
                spec.long.is_some() && spec.positional.is_none(),
                "{}: a switch needs a flag",
                spec.name
            );
            // The flag flips the default; one that turns a setting off says so.
            let long = spec.long.unwrap_or_default();
            match spec.default {
                ["false"] => assert!(!long.starts_with("no-"), "{}", spec.name),
                ["true"] => assert!(long.starts_with("no-"), "{}: --no-...", spec.name),
                other => panic!("{}: switch default {other:?}", spec.name),
            }
        }
        let preload = spec("preload_app").expect("known setting");
        assert_eq!(
            (preload.flag(), preload.section, preload.env_var()),
            (
                "--preload".to_string(),
                Section::App,
                "FERROCORN_PRELOAD_APP".to_string()
            )
        );
    }

    #[test]
    fn ranges_are_only_on_integer_settings_and_sections_are_contiguous() {
        for spec in SETTINGS
            .iter()
            .filter(|s| s.min.is_some() || s.max.is_some())
        {
            assert_eq!(
                spec.toml,
                TomlKind::Integer,
                "{}: range on a non-integer",
                spec.name
            );
        }
        let mut sections: Vec<Section> = SETTINGS.iter().map(|s| s.section).collect();
        sections.dedup();
        let unique: HashSet<_> = sections.iter().collect();
        assert_eq!(
            unique.len(),
            sections.len(),
            "keep each section's settings together"
        );
    }
}
