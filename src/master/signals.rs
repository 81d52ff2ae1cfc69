//! Process signals as a stream of [`Sig`]s. The handlers (signal-hook's)
//! only enqueue; nothing here decides or logs.

use futures_util::stream::StreamExt;
use signal_hook::consts::signal::{
    SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
};
use signal_hook_tokio::Signals;
use tokio::sync::mpsc;

use super::event::Sig;

/// Starts listening for the master's signals; they arrive on the receiver.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Sig>> {
    let mut signals = Signals::new([
        SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
    ])?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(raw) = signals.next().await {
            let sig = match raw {
                SIGTERM => Sig::Term,
                SIGINT => Sig::Int,
                SIGQUIT => Sig::Quit,
                SIGHUP => Sig::Hup,
                SIGTTIN => Sig::Ttin,
                SIGTTOU => Sig::Ttou,
                SIGUSR1 => Sig::Usr1,
                SIGUSR2 => Sig::Usr2,
                SIGWINCH => Sig::Winch,
                _ => continue,
            };
            if tx.send(sig).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
