//! systemd's service notifications (`Type=notify`: readiness, watchdog, stopping).

use std::os::unix::net::UnixDatagram;

/// Tells systemd (`$NOTIFY_SOCKET`, `Type=notify`) a state; nothing when not under systemd.
// Hand-written: the sd-notify crate (0.5) connects an `@name` socket as a file path, not abstract.
pub(super) fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket: the name after '@'.
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state}: {e}");
    }
}
