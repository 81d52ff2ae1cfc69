//! gunicorn's request corpus (issue 10, item 13) run against the real binary:
//! every `tests/it/requests/valid` case is served with the environ its
//! `.expect` file names, every `invalid` case gets a 4xx, and after each the
//! server still answers a plain GET on a new connection.
//!
//! The data is imported by `tests/it/requests/import.py`; see the README
//! there for its origin (MIT) and the cases left out. Cases ferrocorn does
//! not pass yet are in `KNOWN_GAPS`: the test fails when one of them starts
//! passing too, so the list only shrinks.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::harness::{parse_response, root, TestServer};

/// (case, why it does not pass yet). Names are `valid/NAME` or `invalid/NAME`.
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// Invalid cases where a close without a byte is the answer: the input holds
/// no request line at all (gunicorn's `NoMoreData`), so there is nothing to
/// answer; gunicorn closes too. Any other invalid case must get a 4xx.
const SILENT_CLOSE: &[&str] = &["invalid/001"];

/// Cases where ferrocorn answers differently from gunicorn on purpose, with
/// the status it gives and where that is documented. gunicorn serves them.
const DELIBERATE: &[(&str, u16, &str)] = &[
    (
        "valid/rfc9112_target_authority_connect_01",
        405,
        "CONNECT: README \"Failure outcomes\", issue 10 item 11",
    ),
    (
        "valid/rfc9112_target_authority_ipv6_01",
        405,
        "CONNECT: README \"Failure outcomes\", issue 10 item 11",
    ),
    (
        "valid/025",
        400,
        "`gzip` then `chunked`: only chunked alone, README \"Failure outcomes\", issue 10 item 11",
    ),
    (
        "valid/025_line",
        400,
        "`gzip, chunked`: only chunked alone, README \"Failure outcomes\", issue 10 item 11",
    ),
    (
        "valid/rfc9112_smuggle_gzip_chunked_01",
        400,
        "`gzip, chunked`: only chunked alone, README \"Failure outcomes\"",
    ),
    (
        "valid/009",
        400,
        "`identity` (RFC 9112 registers no such coding) with a Content-Length: only chunked alone, README \"Failure outcomes\"",
    ),
    (
        "valid/029",
        400,
        "`identity` then `chunked`: only chunked alone, README \"Failure outcomes\"",
    ),
    (
        "valid/030",
        400,
        "`identity` then `chunked`: only chunked alone, README \"Failure outcomes\"",
    ),
    (
        "valid/rfc9112_smuggle_te_identity_chunked_01",
        400,
        "`identity, chunked`: only chunked alone, README \"Failure outcomes\"",
    ),
];

/// Echoes what the corpus checks, one `KEY escaped-value` line each, so the
/// test needs no JSON crate. Values are latin-1 bytes with everything outside
/// printable ASCII (and the backslash) written `\xHH`, as in `.expect` files.
const ECHO_APP: &str = r#"
def esc(value):
    data = value.encode("latin-1") if isinstance(value, str) else value
    return "".join(chr(b) if 0x21 <= b <= 0x7E and b != 0x5C else "\\x%02x" % b for b in data)

def app(environ, start_response):
    body = environ["wsgi.input"].read()
    lines = []
    for key in ("REQUEST_METHOD", "RAW_URI", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL"):
        lines.append("%s %s" % (key, esc(environ.get(key, ""))))
    for key, value in sorted(environ.items()):
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            lines.append("%s %s" % (key, esc(value)))
    lines.append("BODY " + body.hex())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("\n".join(lines) + "\n").encode()]
"#;

/// How a case that met its expectation met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    /// An invalid case closed without a response (not a 4xx, not served).
    SilentClose,
    /// The status `DELIBERATE` names.
    Deliberate,
}

/// How long one case may take before its connection counts as hung.
const CASE_DEADLINE: Duration = Duration::from_secs(5);

#[test]
fn gunicorn_request_corpus() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corpus_echo.py"), ECHO_APP).unwrap();
    let data = root().join("tests/it/requests");
    let mut cases = Vec::new();
    for kind in ["valid", "invalid"] {
        let mut names: Vec<String> = std::fs::read_dir(data.join(kind))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".expect").map(str::to_string)
            })
            .collect();
        names.sort();
        cases.extend(names.into_iter().map(|n| format!("{kind}/{n}")));
    }
    // Cases that set a gunicorn setting run against a server started with
    // the matching flags (their `.expect`'s `flags` line): one server per set.
    let mut by_flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for case in cases {
        let expect = std::fs::read_to_string(data.join(format!("{case}.expect"))).unwrap();
        let flags = expect
            .lines()
            .find_map(|l| l.strip_prefix("flags "))
            .unwrap_or_default()
            .to_string();
        by_flags.entry(flags).or_default().push(case);
    }
    let app_dir = dir.path().to_str().unwrap();
    let mut outcomes: Vec<(String, Result<Outcome, String>)> = Vec::new();
    let mut stderr = String::new();
    for (flags, cases) in &by_flags {
        let mut args = vec!["-w", "2", "--pythonpath", app_dir];
        args.extend(flags.split_whitespace());
        args.push("corpus_echo:app");
        let server = TestServer::start(&args);
        // A few at a time: bounded load, and a hung case costs its deadline once.
        for chunk in cases.chunks(8) {
            std::thread::scope(|s| {
                let handles: Vec<_> = chunk
                    .iter()
                    .map(|case| s.spawn(|| (case.clone(), run_case(&server.addr, &data, case))))
                    .collect();
                outcomes.extend(handles.into_iter().map(|h| h.join().unwrap()));
            });
        }
        stderr += &server.stderr();
    }
    outcomes.sort_by(|a, b| a.0.cmp(&b.0));

    let count = |kind: &str, want: Option<Outcome>| {
        outcomes
            .iter()
            .filter(|(c, r)| {
                c.starts_with(kind) && (want.is_none() || r.as_ref().ok() == want.as_ref())
            })
            .count()
    };
    eprintln!(
        "corpus: valid served {}/{} ({} answered as DELIBERATE says), \
         invalid rejected with a 4xx {}/{} ({} closed silently)",
        count("valid/", Some(Outcome::Pass)),
        count("valid/", None),
        count("valid/", Some(Outcome::Deliberate)),
        count("invalid/", Some(Outcome::Pass)),
        count("invalid/", None),
        count("invalid/", Some(Outcome::SilentClose)),
    );
    let mut problems = Vec::new();
    for (case, result) in &outcomes {
        let gap = KNOWN_GAPS.iter().find(|(name, _)| name == case);
        match (result, gap) {
            (Err(err), None) => problems.push(format!("{case}: {}", clip(err))),
            (Ok(_), Some(_)) => problems.push(format!(
                "{case}: passes now; remove it from KNOWN_GAPS in tests/it/corpus.rs"
            )),
            (Err(err), Some((_, why))) => eprintln!("known gap {case} ({why}): {}", clip(err)),
            (Ok(_), None) => {}
        }
    }
    let listed = KNOWN_GAPS.iter().map(|(name, _)| *name);
    let listed = listed.chain(DELIBERATE.iter().map(|(name, _, _)| *name));
    for name in listed.chain(SILENT_CLOSE.iter().copied()) {
        if !outcomes.iter().any(|(case, _)| case == name) {
            problems.push(format!(
                "{name}: listed in tests/it/corpus.rs but no such case"
            ));
        }
    }
    for (case, result) in &outcomes {
        if *result == Ok(Outcome::SilentClose) {
            eprintln!("closed without a response: {case}");
        }
    }
    assert!(
        problems.is_empty(),
        "{} corpus case(s) failed:\n{}\nserver stderr:\n{}",
        problems.len(),
        problems.join("\n"),
        stderr
    );
}

/// An error message cut to a readable length (echoed headers run to 8 KiB).
fn clip(message: &str) -> String {
    match message.char_indices().nth(300) {
        Some((at, _)) => format!("{}...", &message[..at]),
        None => message.to_string(),
    }
}

/// Sends one case on a fresh connection, checks the answer, then checks the
/// server still serves a plain GET.
fn run_case(addr: &str, data: &Path, case: &str) -> Result<Outcome, String> {
    let raw = decode_http(&std::fs::read(data.join(format!("{case}.http"))).unwrap());
    let expect = std::fs::read_to_string(data.join(format!("{case}.expect"))).unwrap();
    let bytes = exchange(addr, &raw)?;
    let result = if let Some((_, status, _)) = DELIBERATE.iter().find(|(c, _, _)| *c == case) {
        parse_response(&bytes).and_then(|(r, _)| match r.status {
            s if s == *status => Ok(Outcome::Deliberate),
            s => Err(format!("status {s}, want {status} (see DELIBERATE)")),
        })
    } else if case.starts_with("invalid/") {
        check_rejected(&bytes).and_then(|outcome| match outcome {
            Outcome::SilentClose if !SILENT_CLOSE.contains(&case) => {
                Err("closed without a response (want a 4xx)".into())
            }
            outcome => Ok(outcome),
        })
    } else {
        check_served(&bytes, &expect)
    };
    // No header lines: it must pass the smallest limits a case sets.
    let health = exchange(addr, b"GET /health HTTP/1.0\r\n\r\n")
        .and_then(|b| parse_response(&b).map(|(r, _)| r.status));
    match health {
        Ok(200) => result,
        other => Err(format!(
            "{}; then a plain GET got {other:?}",
            result.err().unwrap_or_else(|| "answered".into())
        )),
    }
}

/// Writes `request`, half-closes (gunicorn's `NoMoreData` cases end there)
/// and reads until the server closes.
fn exchange(addr: &str, request: &[u8]) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(CASE_DEADLINE)).unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(Shutdown::Write);
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => Ok(bytes),
        // A reset after a response (unread bytes at close) still counts.
        Err(_) if !bytes.is_empty() => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(bytes),
        Err(e) => Err(format!("no close within {CASE_DEADLINE:?}: {e}")),
    }
}

/// A 4xx, or a close without a byte (allowed only for `SILENT_CLOSE`).
fn check_rejected(bytes: &[u8]) -> Result<Outcome, String> {
    if bytes.is_empty() {
        return Ok(Outcome::SilentClose);
    }
    let (response, _) = parse_response(bytes)?;
    if (400..500).contains(&response.status) {
        Ok(Outcome::Pass)
    } else {
        Err(format!(
            "status {} (want a 4xx); body {:?}",
            response.status,
            response.text()
        ))
    }
}

fn check_served(bytes: &[u8], expect: &str) -> Result<Outcome, String> {
    let wanted = expected_requests(expect);
    let mut rest = bytes;
    for (i, want) in wanted.iter().enumerate() {
        if rest.is_empty() {
            return Err(format!(
                "request {} of {}: no response",
                i + 1,
                wanted.len()
            ));
        }
        let (response, tail) = parse_response(rest)?;
        rest = tail;
        if response.status != 200 {
            return Err(format!(
                "request {} of {}: status {}; body {:?}",
                i + 1,
                wanted.len(),
                response.status,
                response.text()
            ));
        }
        let got: BTreeMap<&str, &str> = std::str::from_utf8(&response.body)
            .map_err(|e| e.to_string())?
            .lines()
            .filter_map(|l| l.split_once(' ').or(Some((l, ""))))
            .collect();
        for (key, value) in want {
            let actual = got.get(key.as_str()).copied();
            if actual != Some(value.as_str()) {
                return Err(format!(
                    "request {} of {}: {key} is {actual:?}, want {value:?}",
                    i + 1,
                    wanted.len()
                ));
            }
        }
    }
    Ok(Outcome::Pass)
}

/// The environ keys each request of a valid case must echo, from its
/// `.expect` file: header names as WSGI spells them, repeated headers joined
/// with `,` (as gunicorn does).
fn expected_requests(expect: &str) -> Vec<Vec<(String, String)>> {
    let mut requests: Vec<Vec<(String, String)>> = Vec::new();
    for line in expect
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("flags "))
    {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        if key == "request" {
            requests.push(Vec::new());
            continue;
        }
        let current = requests.last_mut().expect("a request line first");
        let (key, value) = match key {
            "method" => ("REQUEST_METHOD".to_string(), value.to_string()),
            "raw_uri" => ("RAW_URI".to_string(), value.to_string()),
            "path_info" => ("PATH_INFO".to_string(), value.to_string()),
            "query" => ("QUERY_STRING".to_string(), value.to_string()),
            "version" => ("SERVER_PROTOCOL".to_string(), format!("HTTP/{value}")),
            "body" => ("BODY".to_string(), value.to_string()),
            "header" => {
                let (name, value) = value.split_once(' ').unwrap_or((value, ""));
                // The master de-chunks the body and drops the framing
                // header (the worker sees a plain body); gunicorn keeps it.
                if name == "TRANSFER-ENCODING" {
                    continue;
                }
                // As gunicorn's wsgi.py: only the dashed Content-Type and
                // Content-Length lose the HTTP_ (a `Content_Length` header,
                // kept by `header_map = "dangerous"`, is HTTP_CONTENT_LENGTH).
                let name = match name {
                    "CONTENT-TYPE" | "CONTENT-LENGTH" => name.replace('-', "_"),
                    _ => format!("HTTP_{}", name.replace('-', "_")),
                };
                if let Some(seen) = current.iter_mut().find(|(k, _)| *k == name) {
                    seen.1 = format!("{},{value}", seen.1);
                    continue;
                }
                (name, value.to_string())
            }
            other => panic!("unknown .expect key {other:?}"),
        };
        current.push((key, value));
    }
    requests
}

/// Undoes the escapes of a corpus `.http` file, in the order gunicorn's
/// `tests/treq.py` applies them: drop the file's own newlines, then `\r\n`,
/// `\0`, `\n`, `\t`, then `\xHH`.
fn decode_http(file: &[u8]) -> Vec<u8> {
    let mut data: Vec<u8> = file.iter().copied().filter(|&b| b != b'\n').collect();
    for (from, to) in [
        (&b"\\r\\n"[..], &b"\r\n"[..]),
        (b"\\0", b"\0"),
        (b"\\n", b"\n"),
        (b"\\t", b"\t"),
    ] {
        data = replace(&data, from, to);
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if i + 3 < data.len() && data[i] == b'\\' && data[i + 1] == b'x' {
            if let Some(b) = std::str::from_utf8(&data[i + 2..i + 4])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    out
}

fn replace(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}
