//! The operating-system side: signals, poll, interfaces, the kernel's neighbour table.

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::process::Command;

use lvs::director::parse_mac;

pub use super::signals::{DUMP, STOP, install_signal_handlers};

/// Waits up to `timeout_ms` for one of `fds` (at most two) to be readable.
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) {
    let mut p = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 2];
    for (slot, &fd) in p.iter_mut().zip(fds) {
        slot.fd = fd;
    }
    let n = fds.len().min(p.len());
    // SAFETY: `p` holds `n` valid pollfd entries.
    unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
}

/// The interface's MAC address and MTU, from sysfs.
pub fn link_info(ifname: &str) -> io::Result<([u8; 6], u32)> {
    let read = |what: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{ifname}/{what}"))
            .map_err(|e| io::Error::new(e.kind(), format!("interface {ifname}: {e}")))
    };
    let mac = read("address")?;
    let mac = parse_mac(mac.trim())
        .ok_or_else(|| io::Error::other(format!("{ifname}: no Ethernet address")))?;
    let mtu = read("mtu")?.trim().parse().unwrap_or(1500);
    Ok((mac, mtu))
}

/// The addresses configured on `ifname` (`ip -o addr show dev IF`), global scope first.
pub fn addresses(ifname: &str) -> Vec<IpAddr> {
    let Ok(out) = Command::new("ip")
        .args(["-o", "addr", "show", "dev", ifname])
        .output()
    else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<(bool, IpAddr)> = text
        .lines()
        .filter_map(|l| {
            let mut w = l
                .split_whitespace()
                .skip_while(|w| *w != "inet" && *w != "inet6");
            w.next()?;
            let a = w.next()?.split('/').next()?.parse().ok()?;
            Some((l.contains("scope link"), a))
        })
        .collect();
    v.sort_by_key(|(link, _)| *link);
    v.into_iter().map(|(_, a)| a).collect()
}

/// The kernel's neighbour table (`ip -o neigh show`): resolved entries only.
pub fn kernel_neighbours() -> Vec<(IpAddr, [u8; 6])> {
    let Ok(out) = Command::new("ip").args(["-o", "neigh", "show"]).output() else {
        return Vec::new();
    };
    parse_ip_neigh(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `ip neigh show` lines: `ADDR dev IF lladdr MAC [router] STATE`.
pub fn parse_ip_neigh(text: &str) -> Vec<(IpAddr, [u8; 6])> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let ip = w.first()?.parse().ok()?;
            let i = w.iter().position(|x| *x == "lladdr")?;
            let mac = parse_mac(w.get(i + 1)?)?;
            if w.iter().any(|s| matches!(*s, "FAILED" | "INCOMPLETE")) {
                return None;
            }
            Some((ip, mac))
        })
        .collect()
}

/// Asks the kernel to resolve `ip`'s MAC: a datagram to its discard port makes the kernel
/// send an ARP request or neighbour solicitation, and the next table read finds the answer.
pub fn poke_neighbour(ip: IpAddr) {
    let bind: IpAddr = match ip {
        IpAddr::V4(_) => [0u8; 4].into(),
        IpAddr::V6(_) => [0u16; 8].into(),
    };
    if let Ok(s) = std::net::UdpSocket::bind((bind, 0)) {
        let _ = s.send_to(&[], (ip, 9));
    }
}

/// Creates the control FIFO if it does not exist and opens it for reading without blocking
/// (also for writing, so the FIFO never reports end-of-file between writers).
pub fn open_fifo(path: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => {
            return Err(io::Error::other(format!(
                "{}: exists and is not a FIFO",
                path.display()
            )));
        }
        Err(_) => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::other("path has a NUL"))?;
            // SAFETY: `c` is a NUL-terminated path that outlives the call.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_neigh_lines_parse_and_unresolved_ones_are_skipped() {
        let t = "10.99.2.11 dev d0 lladdr 02:00:00:00:02:11 REACHABLE\n\
                 10.99.2.12 dev d0  FAILED\n\
                 10.99.2.13 dev d0 lladdr 02:00:00:00:02:13 router STALE\n\
                 fd99:2::11 dev d0 lladdr 02:00:00:00:02:11 DELAY\n\
                 garbage\n";
        let v = parse_ip_neigh(t);
        assert_eq!(
            v,
            vec![
                ("10.99.2.11".parse().unwrap(), [2, 0, 0, 0, 2, 0x11]),
                ("10.99.2.13".parse().unwrap(), [2, 0, 0, 0, 2, 0x13]),
                ("fd99:2::11".parse().unwrap(), [2, 0, 0, 0, 2, 0x11]),
            ]
        );
    }
}
