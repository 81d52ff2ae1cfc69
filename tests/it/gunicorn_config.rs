//! Issue 11: a gunicorn deployment's configuration runs unchanged: a
//! `gunicorn.conf.py` in the working directory (read by default), its
//! gunicorn names, `GUNICORN_CMD_ARGS`, `WEB_CONCURRENCY`, a HUP that reads
//! the file again, and a refused name that stops the start.

use crate::harness::{command, free_port, metric, root, wait_until, TestServer, DEADLINE};

const SERVING: &str = "ferrocorn_workers{state=\"serving\"} ";

fn serving(metrics: &str, count: f64) {
    wait_until(
        &format!("{count} serving workers"),
        DEADLINE,
        || match metric(metrics, SERVING) {
            Some(n) if n == count => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// A gunicorn.conf.py as deployments write them: imports, a helper, a hook,
/// gunicorn's names; the app is found through `pythonpath`.
fn conf(workers: usize, metrics: &str) -> String {
    format!(
        r#"import multiprocessing
import os

def _cores():
    return multiprocessing.cpu_count()

workers = {workers}
threads = 2
keepalive = 5
timeout = 30
loglevel = "info"
accesslog = None
wsgi_app = "examples.flask_app:app"
pythonpath = {root:?}
metrics_bind = {metrics:?}
daemon = False

def post_fork(server, worker):
    pass
"#,
        root = root().display().to_string()
    )
}

#[test]
fn gunicorn_conf_py_in_the_working_directory_is_read_and_hup_reads_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let path = dir.path().join("gunicorn.conf.py");
    std::fs::write(&path, conf(2, &metrics)).unwrap();
    let server = TestServer::start_in(dir.path(), &[], &[]);
    serving(&metrics, 2.0);
    assert_eq!(server.get("/hello").status, 200);
    std::fs::write(&path, conf(3, &metrics)).unwrap();
    server.signal("HUP");
    serving(&metrics, 3.0);
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn gunicorn_cmd_args_beat_web_concurrency_and_the_command_line_beats_both() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let app = root().display().to_string();
    let cmd_args = format!("--metrics-bind {metrics} --pythonpath '{app}'");
    let env = [
        ("WEB_CONCURRENCY", "3"),
        ("GUNICORN_CMD_ARGS", cmd_args.as_str()),
    ];
    let server = TestServer::start_in(dir.path(), &env, &["examples.flask_app:app"]);
    serving(&metrics, 3.0);
    drop(server);

    let metrics = format!("127.0.0.1:{}", free_port());
    let cmd_args = format!("--metrics-bind {metrics} --pythonpath '{app}' -w 2");
    let env = [
        ("WEB_CONCURRENCY", "3"),
        ("GUNICORN_CMD_ARGS", cmd_args.as_str()),
    ];
    let server = TestServer::start_in(dir.path(), &env, &["examples.flask_app:app"]);
    serving(&metrics, 2.0);
    drop(server);

    let metrics = format!("127.0.0.1:{}", free_port());
    let cmd_args = format!("--metrics-bind {metrics} --pythonpath '{app}' -w 2");
    let env = [("GUNICORN_CMD_ARGS", cmd_args.as_str())];
    let args = ["-w", "1", "examples.flask_app:app"];
    let server = TestServer::start_in(dir.path(), &env, &args);
    serving(&metrics, 1.0);
    assert_eq!(server.get("/hello").status, 200);
}

#[test]
fn a_gunicorn_setting_ferrocorn_lacks_stops_the_start_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.py");
    std::fs::write(
        &path,
        "workers = 2\nkeyfile = 'k.pem'\nwsgi_app = 'examples.flask_app:app'\n",
    )
    .unwrap();
    let output = command(&["-c", path.to_str().unwrap(), "-b", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`keyfile`") && stderr.contains("prod.py"),
        "{stderr}"
    );
    // A config that raises: the traceback's last line is in the message.
    std::fs::write(&path, "import no_such_module_here\n").unwrap();
    let output = command(&["-c", path.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no_such_module_here"), "{stderr}");
}
