//! The value types of settings and the one parser each of them has.
//!
//! Every layer (command line, TOML, environment, defaults) hands strings to
//! these parsers, so `--timeout 2m`, `timeout = "2m"` and
//! `FERROCORN_TIMEOUT=2m` can never disagree. Each type also renders back to a
//! canonical string that parses to the same value; `--print-config`, the
//! README table and the example TOML use that. Range checks and checks that
//! involve several settings live in `validate.rs`, not here.

use super::table::TomlKind;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Why a string is not a valid value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueError {
    /// It does not parse; the setting's "expected ..." text says what would.
    Invalid,
    /// A gunicorn worker class that ferrocorn does not have yet.
    UnsupportedWorkerClass,
}

/// A single value type: one parser, one canonical rendering.
pub trait Scalar: Sized {
    /// Placeholder shown in `--help`.
    const VALUE_NAME: &'static str;
    /// What a valid value looks like, for error messages.
    const EXPECTED: &'static str;
    /// How the value is written in TOML.
    const TOML: TomlKind = TomlKind::String;
    /// Whether a list of these may be given as one comma-separated string.
    const COMMA_SEPARATED: bool = false;
    /// Parses one value.
    fn parse(text: &str) -> Result<Self, ValueError>;
    /// The canonical spelling, which `parse` turns back into the same value.
    fn render(&self) -> String;
    /// The value as a number, for range checks of integer settings.
    fn as_number(&self) -> Option<u64> {
        None
    }
}

/// Implements `Scalar` for a type through its `FromStr` and `Display`.
macro_rules! scalar_from_str {
    ($ty:ty, $value_name:literal, $expected:literal $(, comma_separated: $comma:literal)?) => {
        impl Scalar for $ty {
            const VALUE_NAME: &'static str = $value_name;
            const EXPECTED: &'static str = $expected;
            $(const COMMA_SEPARATED: bool = $comma;)?
            fn parse(text: &str) -> Result<Self, ValueError> {
                text.parse()
            }
            fn render(&self) -> String {
                self.to_string()
            }
        }
    };
}

macro_rules! integer_scalar {
    ($($ty:ty),*) => {$(
        impl Scalar for $ty {
            const VALUE_NAME: &'static str = "INT";
            const EXPECTED: &'static str = "expected a whole number";
            const TOML: TomlKind = TomlKind::Integer;
            fn parse(text: &str) -> Result<Self, ValueError> {
                let text = text.trim();
                // `u64::from_str` accepts a leading '+'; gunicorn's int() does too, but
                // "+4 workers" in a config is more likely a typo than intent.
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ValueError::Invalid);
                }
                text.parse().map_err(|_| ValueError::Invalid)
            }
            fn render(&self) -> String {
                self.to_string()
            }
            fn as_number(&self) -> Option<u64> {
                u64::try_from(*self).ok()
            }
        }
    )*};
}
integer_scalar!(u32, u64, usize);

/// On/off, for switches: `true`/`false`, `1`/`0` or `yes`/`no`, in any case.
/// Only the env var can carry the other spellings: the flag takes no value and
/// the TOML reader takes only TOML booleans, which it passes on as `true`/`false`.
impl Scalar for bool {
    const VALUE_NAME: &'static str = "BOOL";
    const EXPECTED: &'static str = "expected true, false, 1, 0, yes or no";
    const TOML: TomlKind = TomlKind::Boolean;
    fn parse(text: &str) -> Result<Self, ValueError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(ValueError::Invalid),
        }
    }
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Scalar for String {
    const VALUE_NAME: &'static str = "TEXT";
    const EXPECTED: &'static str = "expected text";
    fn parse(text: &str) -> Result<Self, ValueError> {
        Ok(text.to_string())
    }
    fn render(&self) -> String {
        self.clone()
    }
}

impl Scalar for PathBuf {
    const VALUE_NAME: &'static str = "PATH";
    const EXPECTED: &'static str = "expected a path";
    // gunicorn splits --pythonpath on commas; we do the same for every path list.
    const COMMA_SEPARATED: bool = true;
    fn parse(text: &str) -> Result<Self, ValueError> {
        match text.trim() {
            "" => Err(ValueError::Invalid),
            path => Ok(PathBuf::from(path)),
        }
    }
    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl Scalar for Duration {
    const VALUE_NAME: &'static str = "DURATION";
    const EXPECTED: &'static str = "expected a duration such as 30, 1.5, 500ms, 2s, 2m or 1h";
    fn parse(text: &str) -> Result<Self, ValueError> {
        parse_duration(text).ok_or(ValueError::Invalid)
    }
    fn render(&self) -> String {
        format_duration(*self)
    }
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses `30` (seconds, as gunicorn), `1.5`, `500ms`, `2s`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = split_unit(text);
    let unit_nanos = match unit.to_ascii_lowercase().as_str() {
        "" | "s" => NANOS_PER_SEC,
        "ms" => NANOS_PER_SEC / 1000,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return None,
    };
    let nanos = scale_decimal(number, unit_nanos)?;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).ok()?;
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).ok()?;
    Some(Duration::new(secs, subsec))
}

/// The canonical spelling of a duration: the largest unit that is exact.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    let exact = |unit: u128| nanos % unit == 0;
    if nanos == 0 {
        "0s".to_string()
    } else if exact(3600 * NANOS_PER_SEC) {
        format!("{}h", nanos / (3600 * NANOS_PER_SEC))
    } else if exact(60 * NANOS_PER_SEC) {
        format!("{}m", nanos / (60 * NANOS_PER_SEC))
    } else if exact(NANOS_PER_SEC) {
        format!("{}s", nanos / NANOS_PER_SEC)
    } else if exact(NANOS_PER_SEC / 1000) {
        format!("{}ms", nanos / (NANOS_PER_SEC / 1000))
    } else {
        let fraction = format!("{:09}", nanos % NANOS_PER_SEC);
        format!(
            "{}.{}s",
            nanos / NANOS_PER_SEC,
            fraction.trim_end_matches('0')
        )
    }
}

/// Splits `"1.5GiB"` into `("1.5", "GiB")`, trimming spaces around both.
fn split_unit(text: &str) -> (&str, &str) {
    let text = text.trim();
    let at = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    (&text[..at], text[at..].trim())
}

/// `number * unit` for a decimal `number`, exactly, truncating below one unit of the result.
fn scale_decimal(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || number.ends_with('.') {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    // More than 18 fractional digits cannot change a result counted in nanoseconds or bytes.
    let fraction = &fraction[..fraction.len().min(18)];
    let scaled_fraction = match fraction {
        "" => 0,
        f => f.parse::<u128>().ok()? * unit / 10u128.pow(f.len() as u32),
    };
    whole.checked_mul(unit)?.checked_add(scaled_fraction)
}

/// A number of bytes, written `512`, `200MB` (10^6) or `512MiB` (2^20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

const BYTE_UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1_000_000_000_000),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];

impl FromStr for ByteSize {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        let (number, unit) = split_unit(text);
        let unit = unit.to_ascii_lowercase();
        // A bare K/M/G/T means the same as KB/MB/GB/TB: powers of 1000, like the B forms.
        let multiplier = match unit.as_str() {
            "" | "b" => Some(1),
            "k" | "m" | "g" | "t" => unit_bytes(&format!("{unit}b")),
            other => unit_bytes(other),
        }
        .ok_or(ValueError::Invalid)?;
        let bytes = scale_decimal(number, u128::from(multiplier)).ok_or(ValueError::Invalid)?;
        u64::try_from(bytes)
            .map(ByteSize)
            .map_err(|_| ValueError::Invalid)
    }
}

fn unit_bytes(lower: &str) -> Option<u64> {
    BYTE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(lower))
        .map(|&(_, bytes)| bytes)
}

impl fmt::Display for ByteSize {
    /// The largest unit that is exact, binary units first: `1GiB`, `200MB`, `512B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = BYTE_UNITS
            .iter()
            .find(|&&(_, size)| self.0 != 0 && self.0 % size == 0);
        match unit {
            Some((name, size)) => write!(f, "{}{name}", self.0 / size),
            None => write!(f, "{}B", self.0),
        }
    }
}

scalar_from_str!(
    ByteSize,
    "SIZE",
    "expected a size such as 512, 200MB, 512MiB or 1GiB"
);

/// An address to listen on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// A TCP address; `host` is a name or an IP address (IPv6 without brackets).
    Tcp {
        /// Host name or IP address.
        host: String,
        /// Port; 0 asks the OS for a free one.
        port: u16,
    },
    /// A Unix domain socket.
    Unix(PathBuf),
    /// `fd://N`: a socket the master inherited already listening (from
    /// systemd or a parent process), as gunicorn's.
    Fd(i32),
}

/// The host of `:PORT`, as gunicorn's empty host (Python binds `""` to
/// INADDR_ANY).
const ANY_IPV4: &str = "0.0.0.0";

/// gunicorn's port when `--bind` names only a host.
const DEFAULT_PORT: u16 = 8000;

impl FromStr for BindAddr {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            return match path {
                "" => Err(ValueError::Invalid),
                path => Ok(BindAddr::Unix(PathBuf::from(path))),
            };
        }
        if let Some(fd) = text.strip_prefix("fd://") {
            if fd.is_empty() || !fd.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ValueError::Invalid);
            }
            return fd
                .parse()
                .map(BindAddr::Fd)
                .map_err(|_| ValueError::Invalid);
        }
        let text = text.strip_prefix("tcp://").unwrap_or(text);
        // gunicorn's `:PORT`: an empty host binds every IPv4 interface.
        let any_host;
        let text = match text.strip_prefix(':') {
            Some(port) if !port.contains(':') => {
                any_host = format!("{ANY_IPV4}:{port}");
                any_host.as_str()
            }
            _ => text,
        };
        let (host, port) = split_host_port(text, DEFAULT_PORT)?;
        Ok(BindAddr::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            BindAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            BindAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            BindAddr::Fd(fd) => write!(f, "fd://{fd}"),
        }
    }
}

scalar_from_str!(
    BindAddr,
    "ADDRESS",
    "expected HOST:PORT, :PORT, [IPV6]:PORT, HOST, unix:PATH or fd://N",
    comma_separated: true
);

/// The WSGI app to serve: `module:attribute` or `module:factory(args)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppSpec {
    /// Dotted module path, e.g. `examples.flask_app`.
    pub module: String,
    /// Attribute name or call text, kept as written, e.g. `create_app(debug=True)`.
    pub target: String,
}

impl AppSpec {
    /// The attribute the worker looks up: the target up to any parenthesis.
    pub fn attribute(&self) -> &str {
        self.target.split('(').next().unwrap_or_default()
    }

    /// Whether the target is a factory call rather than the app itself.
    pub fn is_call(&self) -> bool {
        self.target.contains('(')
    }
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

impl FromStr for AppSpec {
    type Err = ValueError;
    fn from_str(text: &str) -> Result<Self, ValueError> {
        let text = text.trim();
        // Only the first colon separates: call arguments may contain colons.
        // gunicorn's default attribute, when only the module is given, is `application`.
        let (module, target) = text.split_once(':').unwrap_or((text, "application"));
        let target = target.trim();
        let call_ok = match target.split_once('(') {
            None => is_identifier(target),
            Some((name, _)) => is_identifier(name.trim_end()) && target.ends_with(')'),
        };
        if !module.split('.').all(is_identifier) || !call_ok {
            return Err(ValueError::Invalid);
        }
        Ok(AppSpec {
            module: module.to_string(),
            target: target.to_string(),
        })
    }
}

impl fmt::Display for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.module, self.target)
    }
}

scalar_from_str!(
    AppSpec,
    "APP",
    "expected MODULE:APP such as examples.flask_app:app or app:create_app()"
);

/// Declares a small keyword enum with its parser, `Display` and `Scalar` impl.
macro_rules! keyword_enum {
    ($(#[$doc:meta])* $name:ident, $value_name:literal, $expected:literal,
     unknown: $unknown:expr, { $($(#[$vdoc:meta])* $variant:ident = $word:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl FromStr for $name {
            type Err = ValueError;
            fn from_str(text: &str) -> Result<Self, ValueError> {
                match text.trim().to_ascii_lowercase().as_str() {
                    $($word $(| $alias)* => Ok($name::$variant),)+
                    "" => Err(ValueError::Invalid),
                    _ => Err($unknown),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $($name::$variant => $word),+ })
            }
        }

        scalar_from_str!($name, $value_name, $expected);
    };
}

keyword_enum!(
    /// How a worker runs requests.
    WorkerClass, "CLASS", "expected sync, gthread or gevent",
    // gevent, eventlet, tornado, uvicorn... are real gunicorn classes: say so, not "invalid".
    unknown: ValueError::UnsupportedWorkerClass,
    // gunicorn's other spellings of the same classes (matched in lower case).
    {
        /// One request at a time per worker (with `threads > 1` it behaves as gthread).
        Sync = "sync" | "egg:gunicorn#sync" | "gunicorn.workers.sync.syncworker",
        /// `threads` concurrent requests per worker, each on its own thread.
        Gthread = "gthread" | "egg:gunicorn#gthread" | "gunicorn.workers.gthread.threadworker",
        /// `worker_connections` concurrent requests per worker, each in its
        /// own greenlet, after gevent's monkey-patching (gevent is the user's).
        Gevent = "gevent" | "egg:gunicorn#gevent" | "gunicorn.workers.ggevent.geventworker",
    }
);

keyword_enum!(
    /// Minimum severity of the error log.
    LogLevel, "LEVEL", "expected debug, info, warning, error or critical",
    unknown: ValueError::Invalid,
    {
        /// Everything, including one line per request.
        Debug = "debug",
        /// Lifecycle events.
        Info = "info",
        /// Degraded but handled.
        Warning = "warning",
        /// An operator must act.
        Error = "error",
        /// The server cannot go on.
        Critical = "critical",
    }
);

keyword_enum!(
    /// Which memory figure of a worker the memory limits apply to.
    MemoryMetric, "METRIC", "expected rss, uss or pss",
    unknown: ValueError::Invalid,
    {
        /// Resident set size: counts pages shared with the other workers in full.
        Rss = "rss",
        /// Unique set size: only the pages this worker alone uses.
        Uss = "uss",
        /// Proportional set size: shared pages divided among their users.
        Pss = "pss",
    }
);

keyword_enum!(
    /// What happens to a request header whose name has an underscore, which
    /// the environ cannot tell from a dash (gunicorn's `header_map`).
    HeaderMapping, "MODE", "expected drop, refuse or dangerous",
    unknown: ValueError::Invalid,
    {
        /// Left out of the environ (gunicorn's default).
        Drop = "drop",
        /// The request gets 400.
        Refuse = "refuse",
        /// Mapped as if it had a dash: `X_A` and `X-A` both become `HTTP_X_A`, joined with a comma.
        Dangerous = "dangerous",
    }
);

/// gunicorn's default.
impl Default for HeaderMapping {
    fn default() -> HeaderMapping {
        HeaderMapping::Drop
    }
}

keyword_enum!(
    /// Whether each worker is pinned to a CPU of its own (`worker_cpu_affinity`).
    WorkerCpuAffinity, "MODE", "expected off, spread or auto",
    unknown: ValueError::Invalid,
    {
        /// Leave the workers where the kernel puts them (gunicorn's way; the default).
        Off = "off",
        /// Always pin each worker to the CPU the fewest live workers hold.
        Spread = "spread",
        /// Spread when there are at least as many workers as CPUs the master
        /// may run on (and at least 2 of those); else off.
        Auto = "auto",
    }
);

keyword_enum!(
    /// How `reload` watches files (gunicorn's `reload_engine`).
    ReloadEngine, "STRING", "expected auto or poll (ferrocorn's reloader polls every second; gunicorn's inotify engine needs the inotify package, which the standard-library worker does not use)",
    unknown: ValueError::Invalid,
    {
        /// gunicorn's default: inotify if installed, else polling; ferrocorn always polls.
        Auto = "auto",
        /// Poll the files' modification times every second.
        Poll = "poll",
    }
);

/// `HOST[:PORT]` or `[IPV6][:PORT]`, as gunicorn's `parse_address` splits
/// an address: the port defaults to `default_port`; a host with blanks or
/// any of `/[]:,` (outside the brackets) is a typo, not a name.
pub(super) fn split_host_port(text: &str, default_port: u16) -> Result<(&str, u16), ValueError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(ValueError::Invalid)?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| ValueError::Invalid)?;
        match after {
            "" => (host, None),
            after => (
                host,
                Some(after.strip_prefix(':').ok_or(ValueError::Invalid)?),
            ),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let bad_host = |c: char| c.is_whitespace() || "/[]:,".contains(c);
    if host.is_empty() || (!text.starts_with('[') && host.contains(bad_host)) {
        return Err(ValueError::Invalid);
    }
    let port = match port {
        None => default_port,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().map_err(|_| ValueError::Invalid)?
        }
        Some(_) => return Err(ValueError::Invalid),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_spelling() {
        let cases = [
            ("30", Duration::from_secs(30)),
            ("1.5", Duration::from_millis(1500)),
            ("500ms", Duration::from_millis(500)),
            ("2s", Duration::from_secs(2)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            (" 2 M ", Duration::from_secs(120)),
            ("0", Duration::ZERO),
            ("0.000000001", Duration::from_nanos(1)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Some(expected), "{text}");
        }
        for bad in ["", "abc", "-1", "1.", ".5", "5x", "1.2.3", "ms", "1e3"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn durations_render_canonically_and_round_trip() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_nanos(1_000_000_001), "1.000000001s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text);
            assert_eq!(parse_duration(text), Some(duration));
        }
    }

    #[test]
    fn byte_sizes_parse_decimal_and_binary_units_case_insensitively() {
        let cases = [
            ("512", 512),
            ("512b", 512),
            ("200MB", 200_000_000),
            ("512MiB", 512 << 20),
            ("1GiB", 1 << 30),
            ("1gib", 1 << 30),
            ("1G", 1_000_000_000),
            ("1GB", 1_000_000_000),
            ("2k", 2000),
            ("4KiB", 4096),
            ("1.5GiB", 3 << 29),
            ("1 TiB", 1 << 40),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "MB", "1XB", "-5", "1.5.5MB", "99999999999TiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn byte_sizes_render_with_the_largest_exact_unit_and_round_trip() {
        for (bytes, text) in [
            (0, "0B"),
            (512, "512B"),
            (1 << 30, "1GiB"),
            (200_000_000, "200MB"),
            (1536, "1536B"),
            (3 << 29, "1536MiB"),
        ] {
            assert_eq!(ByteSize(bytes).to_string(), text);
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)));
        }
        assert_eq!(ByteSize(7).bytes(), 7);
    }

    #[test]
    fn bind_addresses_parse_like_gunicorn_and_render_canonically() {
        let tcp = |host: &str, port| BindAddr::Tcp {
            host: host.to_string(),
            port,
        };
        let cases = [
            ("127.0.0.1:8000", tcp("127.0.0.1", 8000), "127.0.0.1:8000"),
            ("localhost", tcp("localhost", 8000), "localhost:8000"),
            ("0.0.0.0:0", tcp("0.0.0.0", 0), "0.0.0.0:0"),
            ("[::1]:9000", tcp("::1", 9000), "[::1]:9000"),
            ("[::]", tcp("::", 8000), "[::]:8000"),
            (
                "tcp://example.com:80",
                tcp("example.com", 80),
                "example.com:80",
            ),
            (
                "unix:/run/f.sock",
                BindAddr::Unix("/run/f.sock".into()),
                "unix:/run/f.sock",
            ),
            (
                "unix:///run/f.sock",
                BindAddr::Unix("/run/f.sock".into()),
                "unix:/run/f.sock",
            ),
            // gunicorn's `:PORT` is every IPv4 interface.
            (":8000", tcp("0.0.0.0", 8000), "0.0.0.0:8000"),
            ("tcp://:9000", tcp("0.0.0.0", 9000), "0.0.0.0:9000"),
            ("fd://3", BindAddr::Fd(3), "fd://3"),
            ("fd://0", BindAddr::Fd(0), "fd://0"),
        ];
        for (text, addr, canonical) in cases {
            assert_eq!(text.parse::<BindAddr>(), Ok(addr.clone()), "{text}");
            assert_eq!(addr.to_string(), canonical);
            assert_eq!(canonical.parse::<BindAddr>(), Ok(addr));
        }
        for bad in [
            "",
            ":",
            ":http",
            "::1",
            "fd://",
            "fd://-1",
            "fd://3x",
            "fd://+3",
            "fd:// 3",
            "host:",
            "host:http",
            "host:70000",
            "[::1",
            "[nope]:80",
            "unix:",
            "a b:80",
            "[::1]x",
        ] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn app_specs_accept_attributes_and_factory_calls() {
        let app: AppSpec = "examples.flask_app:app".parse().unwrap();
        assert_eq!(
            (app.module.as_str(), app.target.as_str()),
            ("examples.flask_app", "app")
        );
        assert!(!app.is_call());
        let app: AppSpec = "pkg:create_app(debug=True, x={'a': 1})".parse().unwrap();
        assert_eq!(app.target, "create_app(debug=True, x={'a': 1})");
        assert_eq!((app.attribute(), app.is_call()), ("create_app", true));
        assert_eq!(app.to_string(), "pkg:create_app(debug=True, x={'a': 1})");
        let app: AppSpec = "hello".parse().unwrap();
        assert_eq!(app.to_string(), "hello:application");
        for bad in [
            "",
            ":app",
            "mod:",
            "my-mod:app",
            "mod..x:app",
            "mod:a.b",
            "mod:f(",
            "1mod:app",
            "mod:app x",
        ] {
            assert!(bad.parse::<AppSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn booleans_parse_true_false_one_zero_yes_no_in_any_case_and_render_true_or_false() {
        for (text, value) in [
            ("true", true),
            ("TRUE", true),
            (" Yes ", true),
            ("1", true),
            ("false", false),
            ("False", false),
            ("no", false),
            ("0", false),
        ] {
            assert_eq!(bool::parse(text), Ok(value), "{text:?}");
        }
        for bad in ["", "maybe", "on", "off", "2", "y", "t", "truee"] {
            assert_eq!(bool::parse(bad), Err(ValueError::Invalid), "{bad:?}");
        }
        assert_eq!(
            (true.render(), false.render()),
            ("true".into(), "false".into())
        );
        assert_eq!(<bool as Scalar>::TOML, TomlKind::Boolean);
    }

    #[test]
    fn keyword_enums_parse_any_case_and_flag_other_worker_classes_as_unsupported() {
        assert_eq!("GThread".parse(), Ok(WorkerClass::Gthread));
        for (spelling, class) in [
            ("gunicorn.workers.sync.SyncWorker", WorkerClass::Sync),
            ("egg:gunicorn#sync", WorkerClass::Sync),
            (
                "gunicorn.workers.gthread.ThreadWorker",
                WorkerClass::Gthread,
            ),
            ("egg:gunicorn#gthread", WorkerClass::Gthread),
        ] {
            assert_eq!(spelling.parse(), Ok(class), "{spelling}");
        }
        assert_eq!(
            "gunicorn.workers.ggevent.GeventWorker".parse::<WorkerClass>(),
            Ok(WorkerClass::Gevent)
        );
        assert_eq!("gevent".parse::<WorkerClass>(), Ok(WorkerClass::Gevent));
        assert_eq!(
            "eventlet".parse::<WorkerClass>(),
            Err(ValueError::UnsupportedWorkerClass)
        );
        assert_eq!("".parse::<WorkerClass>(), Err(ValueError::Invalid));
        assert_eq!("WARNING".parse(), Ok(LogLevel::Warning));
        assert_eq!("warn".parse::<LogLevel>(), Err(ValueError::Invalid));
        assert_eq!(MemoryMetric::Pss.to_string(), "pss");
    }
}
