//! Integration tests: the real ferrocorn binary, the real example Flask app,
//! real sockets. One test binary, so CI links once (ripgrep's layout).

mod harness;

mod affinity;
mod chaos;
mod corpus;
mod failures;
mod forking;
mod gevent;
mod gunicorn_config;
mod hooks;
mod http_front;
mod lifecycle;
mod logging;
mod master_threads;
mod options;
mod pep3333;
mod pipelining;
mod privileges;
mod process_opts;
mod proxy;
mod recycling;
mod rings;
mod scheduling;
mod serving;
mod statsd;
mod sweep;
mod systemd;
mod upgrade;
