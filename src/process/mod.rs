//! The master process itself, before and while it serves: detaching as a
//! daemon (`--daemon`), the process title `ps` shows (`--name`) and the
//! pid file (`--pid`). They
//! act on the whole process, so they live apart from the master's loop;
//! `main.rs` calls them in order (daemonize before any thread exists).
//! `owner` gives the log files to `--user`/`--group`; `files` raises the
//! open-file limit to what the connections need.

pub mod daemon;
pub mod files;
pub mod owner;
pub mod pidfile;
pub mod title;
