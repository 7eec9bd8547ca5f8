//! The decapsulator's counters, printed on a timer, on SIGUSR1 and at exit.

use std::collections::BTreeMap;
use std::fmt;

use lvs::wire::Tunnel;

use super::decide::{Decision, Ignored, Malformed};

/// Frames by outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received on the interface (not the ones the host sent).
    pub received: u64,
    /// Inner packets written to the TUN device, by tunnel: IPIP (IPv4 inside, proto 4),
    /// IPv6 inside (proto 41), GRE, GUE.
    pub ipip: u64,
    /// See `ipip`.
    pub ip6: u64,
    /// See `ipip`.
    pub gre: u64,
    /// See `ipip`.
    pub gue: u64,
    /// Ignored frames, by reason.
    pub not_ip: u64,
    /// See `not_ip`.
    pub not_tunnel: u64,
    /// See `not_ip`.
    pub not_ours: u64,
    /// Malformed frames by [`Malformed::counter`].
    pub malformed: BTreeMap<String, u64>,
    /// Frames the kernel dropped before the decapsulator could read them (the socket's
    /// receive buffer was full): not in `received`.
    pub kernel_drops: u64,
    /// Inner packets the TUN device refused.
    pub tun_errors: u64,
    /// The last refusal's message.
    pub last_tun_error: Option<String>,
}

impl Stats {
    /// Counts a decision. An inner packet counts as decapsulated when it is decided on, so a
    /// failed TUN write is in both `tun_errors` and its tunnel's counter.
    pub fn count(&mut self, d: &Decision) {
        self.received += 1;
        match d {
            Decision::Inner(_, _, t) => match t {
                Tunnel::Ipip => self.ipip += 1,
                Tunnel::Ipv6 => self.ip6 += 1,
                Tunnel::Gre => self.gre += 1,
                Tunnel::Gue => self.gue += 1,
            },
            Decision::Ignore(Ignored::NonIp) => self.not_ip += 1,
            Decision::Ignore(Ignored::NoTunnel) => self.not_tunnel += 1,
            Decision::Ignore(Ignored::OtherDestination) => self.not_ours += 1,
            Decision::Malformed(m) => self.count_malformed(m),
        }
    }

    fn count_malformed(&mut self, m: &Malformed) {
        *self.malformed.entry(m.counter()).or_insert(0) += 1;
    }

    /// Counts a failed TUN write.
    pub fn tun_error(&mut self, e: &std::io::Error) {
        self.tun_errors += 1;
        self.last_tun_error = Some(e.to_string());
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decapsulated = self.ipip + self.ip6 + self.gre + self.gue;
        let ignored = self.not_ip + self.not_tunnel + self.not_ours;
        let malformed: u64 = self.malformed.values().sum();
        write!(
            f,
            "{} frames: {decapsulated} decapsulated (ipip {}, ip6 {}, gre {}, gue {}), \
             {ignored} ignored (not IP {}, not a tunnel {}, not ours {}), {malformed} malformed",
            self.received,
            self.ipip,
            self.ip6,
            self.gre,
            self.gue,
            self.not_ip,
            self.not_tunnel,
            self.not_ours
        )?;
        for (i, (name, n)) in self.malformed.iter().enumerate() {
            let sep = if i == 0 { " (" } else { ", " };
            write!(f, "{sep}{name} {n}")?;
        }
        if !self.malformed.is_empty() {
            f.write_str(")")?;
        }
        write!(
            f,
            ", {} dropped by the kernel (receive buffer full), {} TUN write errors",
            self.kernel_drops, self.tun_errors
        )?;
        if let Some(e) = &self.last_tun_error {
            write!(f, " (last: {e})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvs::rewrite::RewriteError;

    #[test]
    fn counts_and_prints_every_outcome() {
        let mut s = Stats::default();
        assert_eq!(
            s.to_string(),
            "0 frames: 0 decapsulated (ipip 0, ip6 0, gre 0, gue 0), 0 ignored (not IP 0, \
             not a tunnel 0, not ours 0), 0 malformed, 0 dropped by the kernel (receive buffer full), \
             0 TUN write errors"
        );
        for d in [
            Decision::Inner(34, 94, Tunnel::Ipip),
            Decision::Inner(34, 94, Tunnel::Ipip),
            Decision::Inner(54, 114, Tunnel::Ipv6),
            Decision::Inner(38, 98, Tunnel::Gre),
            Decision::Inner(46, 106, Tunnel::Gue),
            Decision::Ignore(Ignored::NonIp),
            Decision::Ignore(Ignored::NoTunnel),
            Decision::Ignore(Ignored::OtherDestination),
            Decision::Malformed(Malformed::Cut),
            Decision::Malformed(Malformed::Decap(RewriteError::BadTunnel { offset: 36 })),
            Decision::Malformed(Malformed::Decap(RewriteError::BadTunnel { offset: 42 })),
        ] {
            s.count(&d);
        }
        s.tun_error(&std::io::Error::from_raw_os_error(5));
        s.kernel_drops = 7;
        let line = s.to_string();
        assert!(
            line.starts_with(
                "11 frames: 5 decapsulated (ipip 2, ip6 1, gre 1, gue 1), 3 ignored (not IP 1, \
                 not a tunnel 1, not ours 1), 3 malformed (decap BadTunnel 2, frame cut short \
                 1), 7 dropped by the kernel (receive buffer full), 1 TUN write errors (last: "
            ),
            "{line}"
        );
    }
}
