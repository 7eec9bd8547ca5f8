//! `ipvsadm` rules: the commands `ipvsadm-restore` accepts and `ipvsadm -S -n` prints.
//!
//! One command per line, applied in order; blank lines and `#` comments are ignored:
//!
//! ```text
//! -A -t|-u|--sctp-service VIP:PORT | -f FWMARK [-6]  [-s SCHED] [-b FLAGS] [-p [TIMEOUT]] [-M NETMASK] [-o]
//! -E ... (same; options not given return to ipvsadm's defaults, as ipvsadm sends them)
//! -D -t|-u|--sctp-service VIP:PORT | -f FWMARK
//! -a|-e -t|-u|--sctp-service VIP:PORT | -f FWMARK  -r ADDR[:PORT]  [-g|-m|-i]
//!       [--tun-type ipip|gue|gre] [--tun-port N] [--tun-nocsum|--tun-csum|--tun-remcsum]
//!       [-w WEIGHT] [-x UPPER] [-y LOWER]
//! -d -t|-u|--sctp-service VIP:PORT | -f FWMARK  -r ADDR[:PORT]
//! -C
//! --set TCP TCPFIN UDP
//! ```
//!
//! Long spellings (`--add-service`, `--tcp-service`, `--scheduler`, `--weight`, ...) and
//! `--option=value` work too. IPv6 addresses go in brackets (`[2001:db8::1]:80`). Defaults are
//! ipvsadm's: scheduler `wlc`, direct routing, weight 1, persistence 300 s with `-p` alone,
//! netmask /32 (/128). A real server without a port takes the service's port. Host and service
//! names are not resolved (the crate does no I/O): save with `ipvsadm -S -n`.
//!
//! [`Command`]'s `Display` prints the canonical `ipvsadm -S -n` form, and parsing that text
//! gives the same command back.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr};

use crate::dest::{DestConfig, ForwardMethod, MAX_WEIGHT, Tunnel, TunnelCsum, TunnelKind};
use crate::flow::{Protocol, SocketDisplay};
use crate::sched::{SchedFlags, SchedulerKind};

/// ipvsadm's default persistence timeout, in seconds.
pub const DEFAULT_PERSISTENCE: u32 = 300;

/// How a virtual service is addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ServiceKey {
    /// `-t`, `-u`, `--sctp-service`: protocol, virtual address and port (0 = any port).
    Addr {
        /// TCP, UDP or SCTP.
        proto: Protocol,
        /// Virtual IP.
        addr: IpAddr,
        /// Virtual port.
        port: u16,
    },
    /// `-f`: packets the caller marked with `mark`, of one address family.
    Fwmark {
        /// The firewall mark.
        mark: u32,
        /// IPv6 (`-6`) or IPv4.
        ipv6: bool,
    },
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ServiceKey::Addr { proto, addr, port } => {
                let opt = match proto {
                    Protocol::Udp => "-u",
                    Protocol::Sctp => "--sctp-service",
                    _ => "-t",
                };
                write!(f, "{opt} {}", SocketDisplay(addr, port))
            }
            ServiceKey::Fwmark { mark, ipv6 } => {
                write!(f, "-f {mark}")?;
                if ipv6 {
                    f.write_str(" -6")?;
                }
                Ok(())
            }
        }
    }
}

/// Persistence (`-p`, `-M`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// Template timeout in seconds.
    pub timeout: u32,
    /// Client netmask as a prefix length (IPv4 `-M 255.255.255.0` is 24).
    pub prefix_len: u8,
}

/// The options of a virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ServiceOptions {
    /// Scheduler (`-s`).
    pub scheduler: SchedulerKind,
    /// Scheduler flags (`-b`).
    pub flags: SchedFlags,
    /// Persistence, if `-p` was given.
    pub persistence: Option<Persistence>,
    /// One-packet scheduling (`-o`, UDP only).
    pub one_packet: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            scheduler: SchedulerKind::Wlc,
            flags: SchedFlags::NONE,
            persistence: None,
            one_packet: false,
        }
    }
}

/// One ipvsadm command.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// `-A`: add a virtual service.
    AddService(ServiceKey, ServiceOptions),
    /// `-E`: edit a virtual service.
    EditService(ServiceKey, ServiceOptions),
    /// `-D`: delete a virtual service.
    DeleteService(ServiceKey),
    /// `-C`: delete every virtual service.
    Clear,
    /// `-a`: add a real server.
    AddServer(ServiceKey, DestConfig),
    /// `-e`: edit a real server.
    EditServer(ServiceKey, DestConfig),
    /// `-d`: delete a real server.
    DeleteServer(ServiceKey, IpAddr, u16),
    /// `--set TCP TCPFIN UDP`: timeouts in seconds (0 keeps the current value).
    SetTimeouts {
        /// TCP ESTABLISHED.
        tcp: u32,
        /// TCP FIN_WAIT.
        tcpfin: u32,
        /// UDP.
        udp: u32,
    },
}

fn flags_text(flags: SchedFlags, sched: SchedulerKind) -> String {
    let prefix = match sched {
        SchedulerKind::Sh => "sh-",
        SchedulerKind::Mh => "mh-",
        _ => "",
    };
    let mut names = Vec::new();
    for (bit, generic, name) in [
        (SchedFlags::FALLBACK, "flag-1", "fallback"),
        (SchedFlags::PORT, "flag-2", "port"),
        (SchedFlags::FLAG3, "flag-3", ""),
    ] {
        if flags.contains(bit) {
            let mut s = String::new();
            if prefix.is_empty() || name.is_empty() {
                s.push_str(generic);
            } else {
                s.push_str(prefix);
                s.push_str(name);
            }
            names.push(s);
        }
    }
    names.join(",")
}

fn prefix_to_mask(len: u8) -> Ipv4Addr {
    let bits = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    Ipv4Addr::from(bits)
}

fn write_dest(f: &mut fmt::Formatter<'_>, d: &DestConfig) -> fmt::Result {
    write!(f, " -r {}", SocketDisplay(d.addr, d.port))?;
    match d.method {
        ForwardMethod::DirectRoute => f.write_str(" -g")?,
        ForwardMethod::Nat => f.write_str(" -m")?,
        ForwardMethod::Tunnel(t) => {
            f.write_str(" -i")?;
            if t.kind != TunnelKind::Ipip {
                write!(f, " --tun-type {}", t.kind.name())?;
            }
            if t.port != 0 {
                write!(f, " --tun-port {}", t.port)?;
            }
            match t.csum {
                TunnelCsum::None => {}
                TunnelCsum::Csum => f.write_str(" --tun-csum")?,
                TunnelCsum::RemCsum => f.write_str(" --tun-remcsum")?,
            }
        }
    }
    write!(f, " -w {}", d.weight)?;
    if d.upper_threshold != 0 {
        write!(f, " -x {}", d.upper_threshold)?;
    }
    if d.lower_threshold != 0 {
        write!(f, " -y {}", d.lower_threshold)?;
    }
    Ok(())
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::AddService(k, o) | Command::EditService(k, o) => {
                let c = if matches!(self, Command::AddService(..)) {
                    "-A"
                } else {
                    "-E"
                };
                write!(f, "{c} {k} -s {}", o.scheduler)?;
                if o.flags != SchedFlags::NONE {
                    write!(f, " -b {}", flags_text(o.flags, o.scheduler))?;
                }
                if let Some(p) = o.persistence {
                    write!(f, " -p {}", p.timeout)?;
                    let v6 = match k {
                        ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
                        ServiceKey::Fwmark { ipv6, .. } => *ipv6,
                    };
                    if v6 && p.prefix_len != 128 {
                        write!(f, " -M {}", p.prefix_len)?;
                    } else if !v6 && p.prefix_len != 32 {
                        write!(f, " -M {}", prefix_to_mask(p.prefix_len))?;
                    }
                }
                if o.one_packet {
                    f.write_str(" -o")?;
                }
                Ok(())
            }
            Command::DeleteService(k) => write!(f, "-D {k}"),
            Command::Clear => f.write_str("-C"),
            Command::AddServer(k, d) => {
                write!(f, "-a {k}")?;
                write_dest(f, d)
            }
            Command::EditServer(k, d) => {
                write!(f, "-e {k}")?;
                write_dest(f, d)
            }
            Command::DeleteServer(k, a, p) => write!(f, "-d {k} -r {}", SocketDisplay(*a, *p)),
            Command::SetTimeouts { tcp, tcpfin, udp } => write!(f, "--set {tcp} {tcpfin} {udp}"),
        }
    }
}

/// What was wrong with a rules line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The line has no command option (`-A`, `-a`, ...).
    MissingCommand,
    /// Two command options on one line.
    SecondCommand(String),
    /// An option this parser does not know.
    UnknownOption(String),
    /// An option that does not apply to this command.
    NotAllowed(String),
    /// An option given twice, or two that exclude each other.
    Conflict(String),
    /// An option lacks its value.
    MissingValue(&'static str),
    /// A value that does not parse.
    BadValue {
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// The command needs a service (`-t`, `-u`, `--sctp-service` or `-f`).
    MissingService,
    /// The command needs a real server (`-r`).
    MissingServer,
    /// An unknown scheduler name.
    UnknownScheduler(String),
    /// An unknown `-b` flag.
    UnknownFlag(String),
    /// A value out of range.
    OutOfRange {
        /// The field.
        what: &'static str,
        /// The value given.
        value: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A destination setting IPVS refuses.
    Dest(crate::dest::DestError),
}

/// A rules error with its place: 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Line, from 1.
    pub line: usize,
    /// Column of the offending token, from 1.
    pub column: usize,
    /// What was wrong.
    pub kind: ConfigErrorKind,
}

impl fmt::Display for ConfigErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigErrorKind::MissingCommand => {
                f.write_str("expected a command: -A, -E, -D, -C, -a, -e, -d or --set")
            }
            ConfigErrorKind::SecondCommand(o) => write!(f, "second command {o} on one line"),
            ConfigErrorKind::UnknownOption(o) => write!(f, "unknown option {o}"),
            ConfigErrorKind::NotAllowed(o) => {
                write!(f, "option {o} does not apply to this command")
            }
            ConfigErrorKind::Conflict(o) => write!(f, "option {o} conflicts with an earlier one"),
            ConfigErrorKind::MissingValue(what) => write!(f, "expected {what}"),
            ConfigErrorKind::BadValue { expected, found } => {
                write!(f, "expected {expected}, found {found:?}")
            }
            ConfigErrorKind::MissingService => {
                f.write_str("expected a service: -t, -u, --sctp-service ADDR:PORT or -f MARK")
            }
            ConfigErrorKind::MissingServer => f.write_str("expected a real server: -r ADDR[:PORT]"),
            ConfigErrorKind::UnknownScheduler(s) => write!(
                f,
                "unknown scheduler {s:?}; expected one of rr wrr lc wlc sed nq fo ovf twos sh dh mh lblc lblcr maglev"
            ),
            ConfigErrorKind::UnknownFlag(s) => write!(
                f,
                "unknown scheduler flag {s:?}; expected sh-fallback, sh-port, mh-fallback, mh-port, flag-1, flag-2 or flag-3"
            ),
            ConfigErrorKind::OutOfRange { what, value, max } => {
                write!(f, "{what} {value} out of range (at most {max})")
            }
            ConfigErrorKind::Dest(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.kind
        )
    }
}

impl core::error::Error for ConfigError {}

/// A command and the 1-based line it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Line number.
    pub line: usize,
    /// The command.
    pub command: Command,
}

/// Parses a whole rules file. Stops at the first error.
///
/// ```
/// let rules = lvs::config::parse(
///     "# saved with ipvsadm -S -n\n\
///      -A -t 10.0.0.1:80 -s wrr -p 300\n\
///      -a -t 10.0.0.1:80 -r 192.168.1.1:80 -g -w 3\n",
/// )?;
/// assert_eq!(rules.len(), 2);
/// assert_eq!(rules[1].line, 3);
/// // Printed back as ipvsadm prints it.
/// assert_eq!(rules[1].command.to_string(), "-a -t 10.0.0.1:80 -r 192.168.1.1:80 -g -w 3");
///
/// // An error names the line, the column and what was expected.
/// let err = lvs::config::parse("-A -t 10.0.0.1:80 -s nosuch\n").unwrap_err();
/// assert_eq!((err.line, err.column), (1, 22));
/// # Ok::<(), lvs::config::ConfigError>(())
/// ```
pub fn parse(text: &str) -> Result<Vec<Rule>, ConfigError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(command) = parse_line(line).map_err(|(column, kind)| ConfigError {
            line: i + 1,
            column,
            kind,
        })? {
            rules.push(Rule {
                line: i + 1,
                command,
            });
        }
    }
    Ok(rules)
}

/// Parses one line; `Ok(None)` for a blank or comment line. Errors carry the 1-based column.
pub fn parse_line(line: &str) -> Result<Option<Command>, (usize, ConfigErrorKind)> {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    let mut toks: Vec<Token<'_>> = Vec::new();
    let mut start = None;
    for (i, c) in line
        .char_indices()
        .chain(core::iter::once((line.len(), ' ')))
    {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                toks.push(Token {
                    text: &line[s..i],
                    col: line[..s].chars().count() + 1,
                });
                start = None;
            }
            _ => {}
        }
    }
    if toks.is_empty() {
        return Ok(None);
    }
    Parser { toks, pos: 0 }.command().map(Some)
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    text: &'a str,
    col: usize,
}

type PResult<T> = Result<T, (usize, ConfigErrorKind)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    AddService,
    EditService,
    DeleteService,
    Clear,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
}

struct Parser<'a> {
    toks: Vec<Token<'a>>,
    pos: usize,
}

fn bad(expected: &'static str, tok: Token<'_>) -> (usize, ConfigErrorKind) {
    (
        tok.col,
        ConfigErrorKind::BadValue {
            expected,
            found: tok.text.to_string(),
        },
    )
}

fn parse_num(tok: Token<'_>, what: &'static str, max: u64) -> PResult<u64> {
    let v: u64 = tok.text.parse().map_err(|_| bad(what, tok))?;
    if v > max {
        return Err((
            tok.col,
            ConfigErrorKind::OutOfRange {
                what,
                value: v,
                max,
            },
        ));
    }
    Ok(v)
}

/// `ADDR`, `ADDR:PORT`, `[V6]`, `[V6]:PORT`; a bare IPv6 address has no port.
fn parse_addr_port(tok: Token<'_>) -> PResult<(IpAddr, Option<u16>)> {
    let s = tok.text;
    let err = || bad("an address as ADDR[:PORT] or [IPV6][:PORT]", tok);
    if let Some(rest) = s.strip_prefix('[') {
        let (a, after) = rest.split_once(']').ok_or_else(err)?;
        let addr: core::net::Ipv6Addr = a.parse().map_err(|_| err())?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(err)?
                    .parse()
                    .map_err(|_| err())?,
            ),
        };
        return Ok((IpAddr::V6(addr), port));
    }
    if let Ok(a) = s.parse::<core::net::Ipv6Addr>() {
        return Ok((IpAddr::V6(a), None));
    }
    match s.rsplit_once(':') {
        Some((a, p)) => {
            let addr: Ipv4Addr = a.parse().map_err(|_| err())?;
            let port: u16 = p.parse().map_err(|_| err())?;
            Ok((IpAddr::V4(addr), Some(port)))
        }
        None => Ok((IpAddr::V4(s.parse().map_err(|_| err())?), None)),
    }
}

fn parse_flags(tok: Token<'_>) -> PResult<SchedFlags> {
    let mut flags = SchedFlags::NONE;
    for name in tok.text.split(',') {
        let f = match name {
            "sh-fallback" | "mh-fallback" | "flag-1" => SchedFlags::FALLBACK,
            "sh-port" | "mh-port" | "flag-2" => SchedFlags::PORT,
            "flag-3" => SchedFlags::FLAG3,
            other => return Err((tok.col, ConfigErrorKind::UnknownFlag(other.to_string()))),
        };
        flags = flags | f;
    }
    Ok(flags)
}

/// IPv4 dotted netmask or prefix length.
fn parse_netmask(tok: Token<'_>) -> PResult<u8> {
    if let Ok(len) = tok.text.parse::<u8>() {
        if len <= 128 {
            return Ok(len);
        }
        return Err(bad(
            "a netmask (dotted IPv4 mask or prefix length 0..=128)",
            tok,
        ));
    }
    let mask: Ipv4Addr = tok
        .text
        .parse()
        .map_err(|_| bad("a netmask (dotted IPv4 mask or prefix length 0..=128)", tok))?;
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    if bits.checked_shl(len).unwrap_or(0) != 0 {
        return Err(bad("a contiguous netmask", tok));
    }
    Ok(len as u8)
}

impl<'a> Parser<'a> {
    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.toks.get(self.pos).copied();
        self.pos += 1;
        t
    }

    fn value(
        &mut self,
        inline: Option<Token<'a>>,
        what: &'static str,
        at: Token<'_>,
    ) -> PResult<Token<'a>> {
        if let Some(v) = inline {
            return Ok(v);
        }
        self.next().ok_or((
            at.col + at.text.chars().count(),
            ConfigErrorKind::MissingValue(what),
        ))
    }

    fn command(&mut self) -> PResult<Command> {
        let mut cmd: Option<(Cmd, Token<'a>)> = None;
        let mut service: Option<ServiceKey> = None;
        let mut fwmark_v6 = false;
        let mut sched: Option<SchedulerKind> = None;
        let mut flags: Option<SchedFlags> = None;
        let mut persist: Option<u32> = None;
        let mut netmask: Option<(u8, Token<'a>)> = None;
        let mut one_packet = false;
        let mut server: Option<(IpAddr, Option<u16>)> = None;
        let mut method: Option<ForwardMethod> = None;
        let mut tun_kind: Option<TunnelKind> = None;
        let mut tun_port: Option<u16> = None;
        let mut tun_csum: Option<TunnelCsum> = None;
        let mut weight: Option<u32> = None;
        let mut upper: Option<u32> = None;
        let mut lower: Option<u32> = None;
        let mut set_values: Vec<u32> = Vec::new();
        let mut seen: Vec<(&'static str, Token<'a>)> = Vec::new();
        let mut first_opt: Option<Token<'a>> = None;

        while let Some(tok) = self.next() {
            if cmd.map(|c| c.0) == Some(Cmd::Set) && !tok.text.starts_with('-') {
                set_values.push(parse_num(tok, "a timeout in seconds", u32::MAX as u64)? as u32);
                continue;
            }
            let (name, inline) = match tok.text.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (
                    n,
                    Some(Token {
                        text: v,
                        col: tok.col + n.len() + 1,
                    }),
                ),
                _ => (tok.text, None),
            };
            let canon: &'static str = match name {
                "-A" | "--add-service" => "-A",
                "-E" | "--edit-service" => "-E",
                "-D" | "--delete-service" => "-D",
                "-C" | "--clear" => "-C",
                "-a" | "--add-server" => "-a",
                "-e" | "--edit-server" => "-e",
                "-d" | "--delete-server" => "-d",
                "--set" => "--set",
                "-t" | "--tcp-service" => "-t",
                "-u" | "--udp-service" => "-u",
                "--sctp-service" => "--sctp-service",
                "-f" | "--fwmark-service" => "-f",
                "-6" | "--ipv6" => "-6",
                "-s" | "--scheduler" => "-s",
                "-b" | "--sched-flags" => "-b",
                "-p" | "--persistent" => "-p",
                "-M" | "--netmask" => "-M",
                "-o" | "--ops" => "-o",
                "-r" | "--real-server" => "-r",
                "-g" | "--gatewaying" => "-g",
                "-m" | "--masquerading" => "-m",
                "-i" | "--ipip" => "-i",
                "--tun-type" => "--tun-type",
                "--tun-port" => "--tun-port",
                "--tun-nocsum" => "--tun-nocsum",
                "--tun-csum" => "--tun-csum",
                "--tun-remcsum" => "--tun-remcsum",
                "-w" | "--weight" => "-w",
                "-x" | "--u-threshold" => "-x",
                "-y" | "--l-threshold" => "-y",
                other => {
                    return Err((tok.col, ConfigErrorKind::UnknownOption(other.to_string())));
                }
            };
            let is_command = matches!(
                canon,
                "-A" | "-E" | "-D" | "-C" | "-a" | "-e" | "-d" | "--set"
            );
            let takes_value = matches!(
                canon,
                "-t" | "-u"
                    | "--sctp-service"
                    | "-f"
                    | "-s"
                    | "-b"
                    | "-p"
                    | "-M"
                    | "-r"
                    | "--tun-type"
                    | "--tun-port"
                    | "-w"
                    | "-x"
                    | "-y"
            );
            if let Some(v) = inline
                && !takes_value
            {
                return Err((
                    v.col,
                    ConfigErrorKind::BadValue {
                        expected: "no value: this option takes none",
                        found: v.text.to_string(),
                    },
                ));
            }
            if is_command {
                if cmd.is_some() {
                    return Err((
                        tok.col,
                        ConfigErrorKind::SecondCommand(tok.text.to_string()),
                    ));
                }
                let c = match canon {
                    "-A" => Cmd::AddService,
                    "-E" => Cmd::EditService,
                    "-D" => Cmd::DeleteService,
                    "-C" => Cmd::Clear,
                    "-a" => Cmd::AddServer,
                    "-e" => Cmd::EditServer,
                    "-d" => Cmd::DeleteServer,
                    _ => Cmd::Set,
                };
                cmd = Some((c, tok));
                continue;
            }
            if first_opt.is_none() {
                first_opt = Some(tok);
            }
            let group = match canon {
                "-t" | "-u" | "--sctp-service" | "-f" => "service",
                "-g" | "-m" | "-i" => "method",
                "--tun-nocsum" | "--tun-csum" | "--tun-remcsum" => "tun-csum",
                other => other,
            };
            if seen.iter().any(|(g, _)| *g == group) {
                return Err((tok.col, ConfigErrorKind::Conflict(tok.text.to_string())));
            }
            seen.push((group, tok));
            match canon {
                "-t" | "-u" | "--sctp-service" => {
                    let v = self.value(inline, "ADDR:PORT", tok)?;
                    let (addr, port) = parse_addr_port(v)?;
                    let proto = match canon {
                        "-t" => Protocol::Tcp,
                        "-u" => Protocol::Udp,
                        _ => Protocol::Sctp,
                    };
                    service = Some(ServiceKey::Addr {
                        proto,
                        addr,
                        port: port.unwrap_or(0),
                    });
                }
                "-f" => {
                    let v = self.value(inline, "a firewall mark", tok)?;
                    let mark = parse_num(v, "a firewall mark", u32::MAX as u64)? as u32;
                    if mark == 0 {
                        return Err(bad("a non-zero firewall mark", v));
                    }
                    service = Some(ServiceKey::Fwmark { mark, ipv6: false });
                }
                "-6" => fwmark_v6 = true,
                "-s" => {
                    let v = self.value(inline, "a scheduler name", tok)?;
                    sched = Some(v.text.parse().map_err(|_| {
                        (v.col, ConfigErrorKind::UnknownScheduler(v.text.to_string()))
                    })?);
                }
                "-b" => {
                    let v = self.value(inline, "scheduler flags", tok)?;
                    flags = Some(parse_flags(v)?);
                }
                "-p" => {
                    // The timeout is optional: take the next token only if it is a number.
                    let v = match inline {
                        Some(v) => Some(v),
                        None => match self.toks.get(self.pos) {
                            Some(t) if t.text.bytes().all(|b| b.is_ascii_digit()) => self.next(),
                            _ => None,
                        },
                    };
                    persist = Some(match v {
                        Some(v) => {
                            let t =
                                parse_num(v, "a persistence timeout in seconds", u32::MAX as u64)?;
                            if t == 0 {
                                return Err(bad("a persistence timeout above 0", v));
                            }
                            t as u32
                        }
                        None => DEFAULT_PERSISTENCE,
                    });
                }
                "-M" => {
                    let v = self.value(inline, "a netmask", tok)?;
                    netmask = Some((parse_netmask(v)?, v));
                }
                "-o" => one_packet = true,
                "-r" => {
                    let v = self.value(inline, "a real server ADDR[:PORT]", tok)?;
                    server = Some(parse_addr_port(v)?);
                }
                "-g" => method = Some(ForwardMethod::DirectRoute),
                "-m" => method = Some(ForwardMethod::Nat),
                "-i" => method = Some(ForwardMethod::Tunnel(Tunnel::default())),
                "--tun-type" => {
                    let v = self.value(inline, "a tunnel type", tok)?;
                    tun_kind = Some(match v.text {
                        "ipip" => TunnelKind::Ipip,
                        "gue" => TunnelKind::Gue,
                        "gre" => TunnelKind::Gre,
                        _ => return Err(bad("a tunnel type: ipip, gue or gre", v)),
                    });
                }
                "--tun-port" => {
                    let v = self.value(inline, "a tunnel port", tok)?;
                    tun_port = Some(parse_num(v, "a tunnel port", u16::MAX as u64)? as u16);
                }
                "--tun-nocsum" => tun_csum = Some(TunnelCsum::None),
                "--tun-csum" => tun_csum = Some(TunnelCsum::Csum),
                "--tun-remcsum" => tun_csum = Some(TunnelCsum::RemCsum),
                "-w" => {
                    let v = self.value(inline, "a weight", tok)?;
                    weight = Some(parse_num(v, "weight", MAX_WEIGHT as u64)? as u32);
                }
                "-x" => {
                    let v = self.value(inline, "an upper threshold", tok)?;
                    upper = Some(parse_num(v, "upper threshold", i32::MAX as u64)? as u32);
                }
                "-y" => {
                    let v = self.value(inline, "a lower threshold", tok)?;
                    lower = Some(parse_num(v, "lower threshold", i32::MAX as u64)? as u32);
                }
                _ => unreachable!("every canonical option is handled"),
            }
        }

        let Some((cmd, cmd_tok)) = cmd else {
            let col = first_opt.map_or(1, |t| t.col);
            return Err((col, ConfigErrorKind::MissingCommand));
        };
        let end_col = self
            .toks
            .last()
            .map_or(1, |t| t.col + t.text.chars().count());
        // Which option groups each command accepts.
        let allowed: &[&str] = match cmd {
            Cmd::AddService | Cmd::EditService => &["service", "-6", "-s", "-b", "-p", "-M", "-o"],
            Cmd::DeleteService => &["service", "-6"],
            Cmd::Clear | Cmd::Set => &[],
            Cmd::AddServer | Cmd::EditServer => &[
                "service",
                "-6",
                "-r",
                "method",
                "--tun-type",
                "--tun-port",
                "tun-csum",
                "-w",
                "-x",
                "-y",
            ],
            Cmd::DeleteServer => &["service", "-6", "-r"],
        };
        if let Some((_, t)) = seen.iter().find(|(g, _)| !allowed.contains(g)) {
            return Err((t.col, ConfigErrorKind::NotAllowed(t.text.to_string())));
        }
        if let Some(ServiceKey::Fwmark { mark, .. }) = service {
            service = Some(ServiceKey::Fwmark {
                mark,
                ipv6: fwmark_v6,
            });
        } else if fwmark_v6 {
            let t = self.find_tok(&["-6", "--ipv6"]).unwrap_or(cmd_tok);
            return Err((t.col, ConfigErrorKind::NotAllowed(t.text.to_string())));
        }
        match cmd {
            Cmd::Clear => return Ok(Command::Clear),
            Cmd::Set => {
                if set_values.len() != 3 {
                    return Err((
                        end_col,
                        ConfigErrorKind::MissingValue("three timeouts: TCP TCPFIN UDP"),
                    ));
                }
                return Ok(Command::SetTimeouts {
                    tcp: set_values[0],
                    tcpfin: set_values[1],
                    udp: set_values[2],
                });
            }
            _ => {}
        }
        let service = service.ok_or((end_col, ConfigErrorKind::MissingService))?;
        let svc_v6 = match service {
            ServiceKey::Addr { addr, .. } => addr.is_ipv6(),
            ServiceKey::Fwmark { ipv6, .. } => ipv6,
        };
        match cmd {
            Cmd::AddService | Cmd::EditService => {
                let persistence = match (persist, netmask) {
                    (None, Some((_, t))) => {
                        return Err((t.col, ConfigErrorKind::NotAllowed("-M without -p".into())));
                    }
                    (None, None) => None,
                    (Some(timeout), m) => {
                        let max = if svc_v6 { 128 } else { 32 };
                        let prefix_len = match m {
                            Some((len, t)) if len > max => {
                                return Err((
                                    t.col,
                                    ConfigErrorKind::OutOfRange {
                                        what: "netmask prefix length",
                                        value: len as u64,
                                        max: max as u64,
                                    },
                                ));
                            }
                            Some((len, _)) => len,
                            None => max,
                        };
                        Some(Persistence {
                            timeout,
                            prefix_len,
                        })
                    }
                };
                let opts = ServiceOptions {
                    scheduler: sched.unwrap_or(SchedulerKind::Wlc),
                    flags: flags.unwrap_or(SchedFlags::NONE),
                    persistence,
                    one_packet,
                };
                Ok(if cmd == Cmd::AddService {
                    Command::AddService(service, opts)
                } else {
                    Command::EditService(service, opts)
                })
            }
            Cmd::DeleteService => Ok(Command::DeleteService(service)),
            Cmd::AddServer | Cmd::EditServer | Cmd::DeleteServer => {
                let (addr, port) = server.ok_or((end_col, ConfigErrorKind::MissingServer))?;
                let port = port.unwrap_or(match service {
                    ServiceKey::Addr { port, .. } => port,
                    ServiceKey::Fwmark { .. } => 0,
                });
                if cmd == Cmd::DeleteServer {
                    return Ok(Command::DeleteServer(service, addr, port));
                }
                let mut m = method.unwrap_or_default();
                if tun_kind.is_some() || tun_port.is_some() || tun_csum.is_some() {
                    let ForwardMethod::Tunnel(t) = &mut m else {
                        let t = self
                            .find_tok(&[
                                "--tun-type",
                                "--tun-port",
                                "--tun-nocsum",
                                "--tun-csum",
                                "--tun-remcsum",
                            ])
                            .unwrap_or(cmd_tok);
                        return Err((t.col, ConfigErrorKind::NotAllowed(format_tun(t.text))));
                    };
                    t.kind = tun_kind.unwrap_or_default();
                    t.port = tun_port.unwrap_or(0);
                    t.csum = tun_csum.unwrap_or_default();
                }
                let dest = DestConfig {
                    addr,
                    port,
                    weight: weight.unwrap_or(1),
                    upper_threshold: upper.unwrap_or(0),
                    lower_threshold: lower.unwrap_or(0),
                    method: m,
                };
                dest.validate().map_err(|e| {
                    let t = self.find_tok(&["-r", "--real-server"]).unwrap_or(cmd_tok);
                    (t.col, ConfigErrorKind::Dest(e))
                })?;
                Ok(if cmd == Cmd::AddServer {
                    Command::AddServer(service, dest)
                } else {
                    Command::EditServer(service, dest)
                })
            }
            Cmd::Clear | Cmd::Set => unreachable!("handled above"),
        }
    }

    fn find_tok(&self, names: &[&str]) -> Option<Token<'a>> {
        self.toks
            .iter()
            .find(|t| names.contains(&t.text.split('=').next().unwrap_or("")))
            .copied()
    }
}

fn format_tun(opt: &str) -> String {
    let mut s = String::from(opt);
    s.push_str(" without -i");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;

    fn one(line: &str) -> Command {
        parse_line(line).unwrap().unwrap()
    }

    fn err(line: &str) -> (usize, ConfigErrorKind) {
        parse_line(line).unwrap_err()
    }

    #[test]
    fn ipvsadm_save_output_parses() {
        let text = "\
# saved by ipvsadm -S -n
-A -t 10.0.0.1:80 -s wrr
-a -t 10.0.0.1:80 -r 192.168.1.1:80 -g -w 4
-a -t 10.0.0.1:80 -r 192.168.1.2:8080 -m -w 3 -x 100 -y 50
-A -u [2001:db8::1]:53 -s sh -b sh-fallback,sh-port -p 60 -M 64
-a -u [2001:db8::1]:53 -r [2001:db8::10]:53 -i --tun-type gue --tun-port 6080 --tun-csum -w 1
-A -f 7 -s mh -b mh-port -p
-A -t 10.0.0.2:443 -s rr -p 600 -M 255.255.255.0
";
        let rules = parse(text).unwrap();
        assert_eq!(rules.len(), 7);
        assert_eq!(rules[0].line, 2);
        let svc = ServiceKey::Addr {
            proto: Protocol::Tcp,
            addr: "10.0.0.1".parse().unwrap(),
            port: 80,
        };
        assert_eq!(
            rules[0].command,
            Command::AddService(
                svc,
                ServiceOptions {
                    scheduler: SchedulerKind::Wrr,
                    ..ServiceOptions::default()
                }
            )
        );
        assert_eq!(
            rules[2].command,
            Command::AddServer(
                svc,
                DestConfig::new("192.168.1.2".parse().unwrap(), 8080)
                    .weight(3)
                    .thresholds(100, 50)
                    .method(ForwardMethod::Nat)
            )
        );
        match &rules[3].command {
            Command::AddService(ServiceKey::Addr { proto, port, .. }, o) => {
                assert_eq!((*proto, *port), (Protocol::Udp, 53));
                assert_eq!(o.flags, SchedFlags::FALLBACK | SchedFlags::PORT);
                assert_eq!(
                    o.persistence,
                    Some(Persistence {
                        timeout: 60,
                        prefix_len: 64
                    })
                );
            }
            c => panic!("{c:?}"),
        }
        match &rules[4].command {
            Command::AddServer(_, d) => assert_eq!(
                d.method,
                ForwardMethod::Tunnel(Tunnel {
                    kind: TunnelKind::Gue,
                    port: 6080,
                    csum: TunnelCsum::Csum
                })
            ),
            c => panic!("{c:?}"),
        }
        match &rules[5].command {
            Command::AddService(
                ServiceKey::Fwmark {
                    mark: 7,
                    ipv6: false,
                },
                o,
            ) => {
                assert_eq!(o.persistence.unwrap().timeout, 300);
                assert_eq!(o.scheduler, SchedulerKind::Mh);
            }
            c => panic!("{c:?}"),
        }
        match &rules[6].command {
            Command::AddService(_, o) => assert_eq!(o.persistence.unwrap().prefix_len, 24),
            c => panic!("{c:?}"),
        }
    }

    #[test]
    fn defaults_and_long_options() {
        assert_eq!(
            one("--add-server --tcp-service=10.0.0.1:80 --real-server 10.1.1.1"),
            Command::AddServer(
                ServiceKey::Addr {
                    proto: Protocol::Tcp,
                    addr: "10.0.0.1".parse().unwrap(),
                    port: 80
                },
                DestConfig::new("10.1.1.1".parse().unwrap(), 80)
            )
        );
        assert_eq!(
            one("-A -t 10.0.0.1:80"),
            Command::AddService(
                ServiceKey::Addr {
                    proto: Protocol::Tcp,
                    addr: "10.0.0.1".parse().unwrap(),
                    port: 80
                },
                ServiceOptions::default()
            )
        );
        assert_eq!(one("  -C  # flush"), Command::Clear);
        assert_eq!(
            one("--set 900 120 300"),
            Command::SetTimeouts {
                tcp: 900,
                tcpfin: 120,
                udp: 300
            }
        );
        assert_eq!(parse_line("   # nothing").unwrap(), None);
        assert_eq!(
            one("-d -f 3 -6 -r [2001:db8::2]"),
            Command::DeleteServer(
                ServiceKey::Fwmark {
                    mark: 3,
                    ipv6: true
                },
                "2001:db8::2".parse().unwrap(),
                0
            )
        );
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        assert_eq!(
            err("-A -t 10.0.0.1:80 -s nosuch"),
            (22, ConfigErrorKind::UnknownScheduler("nosuch".into()))
        );
        assert_eq!(err("-t 10.0.0.1:80").0, 1);
        assert_eq!(err("-t 10.0.0.1:80").1, ConfigErrorKind::MissingCommand);
        assert_eq!(err("-A -s rr").1, ConfigErrorKind::MissingService);
        assert_eq!(err("-a -t 10.0.0.1:80").1, ConfigErrorKind::MissingServer);
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r 10.1.1.1 -w 70000"),
            (
                34,
                ConfigErrorKind::OutOfRange {
                    what: "weight",
                    value: 70000,
                    max: 65535
                }
            )
        );
        assert_eq!(err("-A -a -t 1.2.3.4:1").0, 4);
        assert!(matches!(
            err("-A -t 1.2.3.4:99999").1,
            ConfigErrorKind::BadValue { .. }
        ));
        assert!(matches!(
            err("-A -t host.example:80").1,
            ConfigErrorKind::BadValue { .. }
        ));
        assert_eq!(
            err("-A -t 1.2.3.4:1 -w 3"),
            (17, ConfigErrorKind::NotAllowed("-w".into()))
        );
        assert_eq!(
            err("-a -t 1.2.3.4:1 -r 1.1.1.1 -g -m").1,
            ConfigErrorKind::Conflict("-m".into())
        );
        assert_eq!(
            err("-a -t 1.2.3.4:1 -r 1.1.1.1 --tun-port 9").1,
            ConfigErrorKind::NotAllowed("--tun-port without -i".into())
        );
        assert_eq!(
            err("-a -t 1.2.3.4:1 -r 1.1.1.1 -i --tun-type gue").1,
            ConfigErrorKind::Dest(crate::dest::DestError::GuePortMissing)
        );
        assert_eq!(
            err("-A -t 1.2.3.4:1 -s").1,
            ConfigErrorKind::MissingValue("a scheduler name")
        );
        assert!(matches!(
            err("-A -t 1.2.3.4:1 -b nope").1,
            ConfigErrorKind::UnknownFlag(_)
        ));
        assert!(matches!(
            err("-A -t 1.2.3.4:1 -M 24").1,
            ConfigErrorKind::NotAllowed(_)
        ));
        assert!(matches!(
            err("-A -t 1.2.3.4:1 -p -M 64").1,
            ConfigErrorKind::OutOfRange { .. }
        ));
        assert!(matches!(
            err("-A -t 1.2.3.4:1 -p -M 255.0.255.0").1,
            ConfigErrorKind::BadValue { .. }
        ));
        assert!(matches!(
            err("--set 1 2").1,
            ConfigErrorKind::MissingValue(_)
        ));
        assert!(matches!(
            err("-A -t 1.2.3.4:1 --bogus").1,
            ConfigErrorKind::UnknownOption(_)
        ));
        // Options without a value refuse one rather than drop it (found by reading, after
        // fuzzing: `--ipv6=false` used to turn IPv6 on).
        assert_eq!(err("-A -f 1 --ipv6=false -p").0, 16);
        for line in [
            "-A -t 10.0.0.1:80 --ops=no",
            "--set=5 1 2 3",
            "--clear=all",
            "-a -t 1.2.3.4:1 -r 1.1.1.1 --masquerading=x",
        ] {
            assert!(
                matches!(err(line).1, ConfigErrorKind::BadValue { .. }),
                "{line}"
            );
        }
        assert_eq!(
            one("-A -t 10.0.0.1:80 --persistent=60").to_string(),
            "-A -t 10.0.0.1:80 -s wlc -p 60"
        );
        let e = parse("-A -t 10.0.0.1:80\n\n-a -t 10.0.0.1:80 -r x").unwrap_err();
        assert_eq!((e.line, e.column), (3, 22));
        assert_eq!(
            format!("{e}"),
            "line 3, column 22: expected an address as ADDR[:PORT] or [IPV6][:PORT], found \"x\""
        );
    }

    #[test]
    fn display_round_trips() {
        let lines = vec![
            "-A -t 10.0.0.1:80 -s wrr",
            "-E -u [2001:db8::1]:53 -s sh -b sh-fallback,sh-port -p 60 -M 64",
            "-A -f 7 -s mh -b mh-port -p 300",
            "-A -t 10.0.0.2:443 -s rr -p 600 -M 255.255.255.0 -o",
            "-D --sctp-service 10.0.0.3:9",
            "-C",
            "-a -t 10.0.0.1:80 -r 192.168.1.2:8080 -m -w 3 -x 100 -y 50",
            "-e -f 9 -6 -r [2001:db8::10]:0 -i --tun-type gre --tun-csum -w 0",
            "-a -u 10.0.0.1:53 -r 10.1.1.1:53 -i --tun-type gue --tun-port 6080 --tun-remcsum -w 1",
            "-d -t 10.0.0.1:80 -r 192.168.1.2:80",
            "--set 900 120 300",
            "-A -t 10.0.0.9:80 -s twos -b flag-3",
        ];
        for l in lines {
            let c = one(l);
            assert_eq!(c.to_string(), l);
            assert_eq!(one(&c.to_string()), c);
        }
    }
}
