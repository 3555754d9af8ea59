//! Loopback TCP listeners that egress tests aim a jailed server at.

use std::net::TcpListener;

/// A TCP listener on `addr` accepting (and dropping) connections in the background; its port.
pub fn listen_on(addr: (&str, u16)) -> std::io::Result<u16> {
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    Ok(port)
}

/// A port A with listeners on both 127.0.0.1:A and 127.0.0.2:A, so a rule on the address alone
/// decides which one a server reaches.
pub fn port_on_two_addresses() -> u16 {
    for _ in 0..20 {
        let a = listen_on(("127.0.0.1", 0)).expect("listen on 127.0.0.1");
        if listen_on(("127.0.0.2", a)).is_ok() {
            return a;
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}
