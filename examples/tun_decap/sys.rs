//! The Linux calls behind the decapsulator, each `unsafe` block small and explained: the
//! AF_PACKET socket, the TUN device, the interface's addresses, signals, `poll`.

use std::ffi::{CStr, CString, c_int, c_short};
use std::fs::{File, OpenOptions};
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

pub use super::signals::{DUMP, STOP, install_signal_handlers};

fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// An interface name as `ifr_name` wants it: at most IFNAMSIZ - 1 bytes, NUL-terminated.
fn ifr_name(name: &str) -> io::Result<[libc::c_char; libc::IFNAMSIZ]> {
    let mut out = [0; libc::IFNAMSIZ];
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface names are 1 to {} bytes", libc::IFNAMSIZ - 1),
        ));
    }
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> io::Result<c_int> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i as c_int)
    }
}

/// A raw AF_PACKET socket receiving every frame of interface `ifindex`, but not the frames
/// the host sends on it (PACKET_IGNORE_OUTGOING, Linux 4.20; the caller checks the packet
/// type as well, for older kernels).
pub fn packet_socket(ifindex: c_int) -> io::Result<OwnedFd> {
    // Protocol 0 at creation: the socket receives nothing until it is bound, so no frame of
    // another interface slips in between socket() and bind().
    // SAFETY: plain system call, no pointers.
    let fd =
        check(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: c_int = 1;
    // SAFETY: the option value points to a c_int that lives across the call, with its size.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            (&one as *const c_int).cast(),
            mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOPROTOOPT) {
            return Err(e);
        }
    }
    // PACKET_AUXDATA: each frame comes with the kernel's checksum status (a frame sent by a
    // local stack over veth has its checksum still partial; a NIC may have verified it).
    // SAFETY: the option value points to a c_int that lives across the call, with its size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            (&one as *const c_int).cast(),
            mem::size_of::<c_int>() as libc::socklen_t,
        )
    })?;
    set_rcvbuf(&fd, RCVBUF);
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid (unspecified) address.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: the address points to a sockaddr_ll that lives across the call, with its size.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// The packet socket's receive buffer. The default (net.core.rmem_default, 208 KiB) lost a
/// quarter of a 2 MB upload's segments from a sender on the other end of a veth pair, which
/// hands frames over faster than the decapsulator reads them one by one.
const RCVBUF: c_int = 8 << 20;

/// Asks for a receive buffer of `bytes`: SO_RCVBUFFORCE (root may exceed net.core.rmem_max),
/// else SO_RCVBUF (capped at rmem_max). A smaller buffer only means more drops, which the
/// counters show, so failures are ignored.
fn set_rcvbuf(fd: &OwnedFd, bytes: c_int) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: the option value points to a c_int that lives across the call, with its
        // size.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const c_int).cast(),
                mem::size_of::<c_int>() as libc::socklen_t,
            )
        };
        if ret == 0 {
            return;
        }
    }
}

/// Frames the kernel dropped since the last call because the socket's receive buffer was
/// full (PACKET_STATISTICS: reading the counters resets them).
pub fn packet_drops(fd: &OwnedFd) -> io::Result<u32> {
    let mut st = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: the option value points to a tpacket_stats of `len` bytes; both outlive the call.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok(st.tp_drops)
}

/// A received frame.
pub struct Received {
    /// Its length (more than the buffer when it did not fit).
    pub len: usize,
    /// `sll_pkttype`: PACKET_HOST, PACKET_OUTGOING, ...
    pub pkttype: u8,
    /// Whether its checksums must be verified here: not when the kernel says they are
    /// partial (sent by a local stack, TP_STATUS_CSUMNOTREADY) or already verified by the
    /// NIC (TP_STATUS_CSUM_VALID).
    pub verify_checksums: bool,
}

/// Receives one frame without waiting: `None` when there is none.
pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    // Room for one control message: the tpacket_auxdata (u64 words keep it aligned).
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` (address, one iovec over `buf`, the control buffer)
    // points to memory writable for the stated length that outlives the call. MSG_TRUNC makes
    // it return the frame's real length.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let mut verify_checksums = true;
    // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes of well-formed
    // control messages; CMSG_FIRSTHDR/CMSG_NXTHDR stay within them and CMSG_DATA points into
    // a message whose length covers a tpacket_auxdata, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET
                && (*c).cmsg_type == libc::PACKET_AUXDATA
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(mem::size_of::<libc::tpacket_auxdata>() as u32) as usize
            {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                verify_checksums = aux.tp_status
                    & (libc::TP_STATUS_CSUMNOTREADY | libc::TP_STATUS_CSUM_VALID)
                    == 0;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(Some(Received {
        len: n as usize,
        pkttype: sll.sll_pkttype,
        verify_checksums,
    }))
}

/// Waits up to `timeout_ms` for `fd` to be readable (or in error); `false` on timeout or
/// when a signal interrupted the wait.
pub fn poll_in(fd: &OwnedFd, timeout_ms: c_int) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, valid across the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0)
}

/// Attaches to TUN device `name` (IFF_TUN | IFF_NO_PI: each write is one bare IP packet),
/// creating it, for the life of the process, if it does not exist. Returns the device and
/// its name (the kernel's, should `name` hold a `%d`).
pub fn open_tun(name: &str) -> io::Result<(File, String)> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    ifr.ifr_name = ifr_name(name)?;
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which lives across the call.
    check(unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr) })?;
    // SAFETY: the kernel leaves a NUL-terminated name in ifr_name (it was zeroed, and
    // names are shorter than IFNAMSIZ).
    let actual = unsafe { CStr::from_ptr(ifr.ifr_name.as_ptr()) };
    Ok((file, actual.to_string_lossy().into_owned()))
}

/// Sets IFF_UP on interface `name` through socket `fd` (any socket does); `true` when it was
/// down.
pub fn bring_up(fd: RawFd, name: &str) -> io::Result<bool> {
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    ifr.ifr_name = ifr_name(name)?;
    // SAFETY: SIOCGIFFLAGS fills the flags of one ifreq, which lives across the call.
    check(unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) })?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as c_short != 0 {
        return Ok(false);
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as c_short;
    // SAFETY: SIOCSIFFLAGS reads one ifreq, which lives across the call.
    check(unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) })?;
    Ok(true)
}

/// The addresses configured on interface `name`, IPv4 ones with a label (`eth0:1`) too.
pub fn interface_addrs(name: &str) -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`; freed below.
    check(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_name is a NUL-terminated string of the list.
        let ifa_name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes();
        let ours = ifa_name == name.as_bytes()
            || ifa_name
                .strip_prefix(name.as_bytes())
                .is_some_and(|rest| rest.first() == Some(&b':'));
        if !ours {
            continue;
        }
        // SAFETY: a non-null ifa_addr points to at least a sockaddr header.
        let family = c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
        match family {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs and no reference into the list is used after this.
    unsafe { libc::freeifaddrs(head) };
    out.sort();
    out.dedup();
    Ok(out)
}
