//! The master process itself, before and while it serves: detaching as a
//! daemon (`--daemon`), the process title `ps` shows (`--name`) and the
//! pid file (`--pid`). They
//! act on the whole process, so they live apart from the master's loop;
//! `main.rs` calls them in order (daemonize before any thread exists).

pub mod daemon;
pub mod pidfile;
pub mod title;
