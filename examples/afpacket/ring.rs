//! AF_PACKET sockets with PACKET_MMAP rings: TPACKET_V3 blocks for receive, TPACKET_V3 frames
//! for batched transmit (one `send` per burst), both in one mapping.
//!
//! The kernel and this process share the mapping: a receive block belongs to us while its
//! status says `TP_STATUS_USER`, a transmit slot while it says `TP_STATUS_AVAILABLE` (or
//! `TP_STATUS_WRONG_FORMAT`, a frame the kernel refused). Memory is only read or written
//! through slices made for a block or slot we own, after an acquire load of its status, and
//! handed back with a release store.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

// struct tpacket3_hdr (48 bytes, then struct sockaddr_ll at TPACKET_ALIGN(48) = 48).
const H_NEXT: usize = 0;
const H_SNAPLEN: usize = 12;
const H_LEN: usize = 16;
const H_STATUS: usize = 20;
const H_MAC: usize = 24;
const H_VLAN_TCI: usize = 32;
const H_VLAN_TPID: usize = 36;
const H_SLL_PKTTYPE: usize = 48 + 10;
/// Where a transmitted frame starts in its slot: TPACKET3_HDRLEN - sizeof(sockaddr_ll).
const TX_DATA: usize = 48;
// struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1.
const B_STATUS: usize = 8;
const B_NUM_PKTS: usize = 12;
const B_FIRST: usize = 16;

const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_SENDING: u32 = 2;
const TP_STATUS_WRONG_FORMAT: u32 = 4;
const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// Ring sizes.
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    /// Receive block size (a power of two, a multiple of the page size).
    pub rx_block_size: u32,
    /// Receive blocks.
    pub rx_blocks: u32,
    /// Milliseconds after which the kernel hands over a block that is not full (latency
    /// under light load; at least 1).
    pub rx_timeout_ms: u32,
    /// Transmit slot size (holds the largest frame plus 48 bytes of header).
    pub tx_frame_size: u32,
    /// Transmit slots.
    pub tx_frames: u32,
}

/// A received frame, borrowed from its block.
pub struct RxFrame<'a> {
    /// The bytes captured (the whole frame unless `len` says it was longer).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub len: u32,
    /// Sent by this host (PACKET_OUTGOING): not for the director.
    pub outgoing: bool,
    /// The layer-4 checksum is left partial by an offload (TP_STATUS_CSUMNOTREADY).
    pub csum_partial: bool,
    /// A VLAN tag the kernel took out of the frame: (TPID, TCI).
    pub vlan: Option<(u16, u16)>,
}

/// One mapping holding both rings; unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are what mmap returned; nothing borrows the mapping any
        // more (every slice into it borrows the ring that owns this Mapping).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The receive ring.
pub struct RxRing {
    base: *mut u8,
    block_size: usize,
    blocks: usize,
    block: usize,
    /// Within the current block we own: offset of the next frame and frames left.
    cur: Option<(usize, u32)>,
}

/// The transmit ring.
pub struct TxRing {
    fd: RawFd,
    base: *mut u8,
    frame_size: usize,
    frames: usize,
    next: usize,
    pending: usize,
    /// Frames the kernel refused (TP_STATUS_WRONG_FORMAT).
    pub refused: u64,
    /// Frames dropped because the ring stayed full.
    pub full: u64,
}

/// An AF_PACKET socket bound to one interface, with both rings.
pub struct PacketSocket {
    /// Receive side.
    pub rx: RxRing,
    /// Transmit side.
    pub tx: TxRing,
    _map: Mapping,
    fd: OwnedFd,
}

// SAFETY: the rings point into a mapping owned by the same PacketSocket and used by one
// thread at a time (the socket moves into its worker thread whole).
unsafe impl Send for PacketSocket {}

fn cvt(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
    what: &str,
) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    cvt(r, what).map(|_| ())
}

/// The ifindex of `name`.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("interface {name}: {e}")));
    }
    Ok(i)
}

fn bind(fd: RawFd, ifindex: u32, proto: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    cvt(r, "bind").map(|_| ())
}

impl PacketSocket {
    /// Opens a socket on interface `name` with both rings, receiving every protocol. With
    /// `fanout`, it joins that PACKET_FANOUT group (flows hashed over the group's sockets).
    pub fn open(name: &str, cfg: &RingConfig, fanout: Option<u16>) -> io::Result<PacketSocket> {
        let index = ifindex(name)?;
        // Protocol 0 receives nothing until the bind below, so no frame of another
        // interface slips into the ring while it is set up.
        // SAFETY: plain socket(2) call.
        let raw = cvt(
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) },
            "socket(AF_PACKET) (root or CAP_NET_RAW is needed)",
        )?;
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let f = fd.as_raw_fd();
        let v3: libc::c_int = 2; // TPACKET_V3
        setsockopt(
            f,
            libc::SOL_PACKET,
            libc::PACKET_VERSION,
            &v3,
            "PACKET_VERSION",
        )?;
        let one: libc::c_int = 1;
        // Skip frames the kernel refuses instead of stopping the whole batch.
        setsockopt(f, libc::SOL_PACKET, libc::PACKET_LOSS, &one, "PACKET_LOSS")?;
        let rx_len = cfg.rx_block_size as usize * cfg.rx_blocks as usize;
        let rx_req = libc::tpacket_req3 {
            tp_block_size: cfg.rx_block_size,
            tp_block_nr: cfg.rx_blocks,
            tp_frame_size: 2048,
            tp_frame_nr: (rx_len / 2048) as u32,
            tp_retire_blk_tov: cfg.rx_timeout_ms.max(1),
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(
            f,
            libc::SOL_PACKET,
            libc::PACKET_RX_RING,
            &rx_req,
            "PACKET_RX_RING",
        )?;
        // Transmit slots are frames; blocks only group them for the allocator.
        let per_block = (1 << 16) / cfg.tx_frame_size.max(1);
        let tx_blocks = cfg.tx_frames.div_ceil(per_block.max(1));
        let tx_req = libc::tpacket_req3 {
            tp_block_size: 1 << 16,
            tp_block_nr: tx_blocks,
            tp_frame_size: cfg.tx_frame_size,
            tp_frame_nr: tx_blocks * per_block,
            tp_retire_blk_tov: 0,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(
            f,
            libc::SOL_PACKET,
            libc::PACKET_TX_RING,
            &tx_req,
            "PACKET_TX_RING",
        )?;
        let tx_len = (1usize << 16) * tx_blocks as usize;
        let len = rx_len + tx_len;
        // SAFETY: maps the rings the kernel just allocated for this socket, as PACKET_MMAP
        // prescribes (one mapping, receive ring first).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::new(
                io::Error::last_os_error().kind(),
                format!("mmap of the packet rings: {}", io::Error::last_os_error()),
            ));
        }
        let map = Mapping {
            ptr: ptr.cast(),
            len,
        };
        // Straight to the driver (no qdisc), and no copies of what this host sends: both
        // are optimisations, so older kernels without them still work.
        let _ = setsockopt(f, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one, "");
        let _ = setsockopt(f, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one, "");
        bind(f, index, libc::ETH_P_ALL as u16)?;
        if let Some(group) = fanout {
            let arg: libc::c_int = (group as u32
                | (libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG) << 16)
                as libc::c_int;
            setsockopt(
                f,
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                &arg,
                "PACKET_FANOUT",
            )?;
        }
        Ok(PacketSocket {
            rx: RxRing {
                base: map.ptr,
                block_size: cfg.rx_block_size as usize,
                blocks: cfg.rx_blocks as usize,
                block: 0,
                cur: None,
            },
            tx: TxRing {
                fd: f,
                // SAFETY: rx_len < len: the transmit ring follows the receive ring.
                base: unsafe { map.ptr.add(rx_len) },
                frame_size: cfg.tx_frame_size as usize,
                frames: (tx_blocks * per_block) as usize,
                next: 0,
                pending: 0,
                refused: 0,
                full: 0,
            },
            _map: map,
            fd,
        })
    }

    /// The descriptor, for poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn status<'a>(p: *mut u8) -> &'a AtomicU32 {
    // SAFETY: `p` points at a 4-byte-aligned status word inside a live mapping (block and
    // slot offsets are multiples of 16); the kernel writes it concurrently, hence atomic.
    unsafe { &*(p as *const AtomicU32) }
}

fn rd32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn rd16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_ne_bytes([s[0], s[1]]))
}

impl RxRing {
    fn block_ptr(&self) -> *mut u8 {
        // SAFETY: block < blocks, so the offset stays inside the receive ring.
        unsafe { self.base.add(self.block * self.block_size) }
    }

    /// The next received frame, or `None` when the kernel has handed over nothing more.
    pub fn next(&mut self) -> Option<RxFrame<'_>> {
        loop {
            match self.cur {
                Some((off, left)) if left > 0 => {
                    // SAFETY: the block is ours (TP_STATUS_USER was seen with acquire
                    // ordering) until `release` stores TP_STATUS_KERNEL.
                    let block: &[u8] =
                        unsafe { std::slice::from_raw_parts(self.block_ptr(), self.block_size) };
                    let next = rd32(block, off + H_NEXT) as usize;
                    self.cur = Some((off + next, if next == 0 { 0 } else { left - 1 }));
                    let snap = rd32(block, off + H_SNAPLEN) as usize;
                    let mac = off + rd16(block, off + H_MAC) as usize;
                    let Some(data) = block.get(mac..mac + snap) else {
                        // A header we cannot make sense of: give the block back.
                        self.cur = Some((0, 0));
                        continue;
                    };
                    let st = rd32(block, off + H_STATUS);
                    let vlan = (st & TP_STATUS_VLAN_VALID != 0).then(|| {
                        let tpid = if st & TP_STATUS_VLAN_TPID_VALID != 0 {
                            rd16(block, off + H_VLAN_TPID)
                        } else {
                            0x8100
                        };
                        (tpid, rd32(block, off + H_VLAN_TCI) as u16)
                    });
                    return Some(RxFrame {
                        data,
                        len: rd32(block, off + H_LEN),
                        outgoing: block.get(off + H_SLL_PKTTYPE) == Some(&libc::PACKET_OUTGOING),
                        csum_partial: st & TP_STATUS_CSUMNOTREADY != 0,
                        vlan,
                    });
                }
                Some(_) => {
                    status(self.block_ptr().wrapping_add(B_STATUS))
                        .store(TP_STATUS_KERNEL, Ordering::Release);
                    self.block = (self.block + 1) % self.blocks;
                    self.cur = None;
                }
                None => {
                    let st = status(self.block_ptr().wrapping_add(B_STATUS));
                    if st.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                        return None;
                    }
                    // SAFETY: the block is ours now (see above).
                    let block: &[u8] =
                        unsafe { std::slice::from_raw_parts(self.block_ptr(), self.block_size) };
                    let n = rd32(block, B_NUM_PKTS);
                    let first = rd32(block, B_FIRST) as usize;
                    self.cur = Some((first, n));
                }
            }
        }
    }
}

impl TxRing {
    fn slot_ptr(&self, i: usize) -> *mut u8 {
        // SAFETY: i < frames, so the slot lies inside the transmit ring.
        unsafe { self.base.add(i * self.frame_size) }
    }

    /// Queues a copy of `frame`; false if it does not fit a slot or the ring stays full.
    pub fn push(&mut self, frame: &[u8]) -> bool {
        if frame.len() + TX_DATA > self.frame_size {
            self.refused += 1;
            return false;
        }
        for attempt in 0..3 {
            let p = self.slot_ptr(self.next);
            let st = status(p.wrapping_add(H_STATUS));
            let s = st.load(Ordering::Acquire);
            if s == TP_STATUS_SEND_REQUEST || s == TP_STATUS_SENDING {
                // Full: push out what is queued and wait for the kernel.
                if self.send(attempt > 0).is_err() {
                    break;
                }
                continue;
            }
            if s & TP_STATUS_WRONG_FORMAT != 0 {
                self.refused += 1;
            }
            // SAFETY: the slot is ours (status AVAILABLE or WRONG_FORMAT, acquired).
            let slot: &mut [u8] = unsafe { std::slice::from_raw_parts_mut(p, self.frame_size) };
            slot[TX_DATA..TX_DATA + frame.len()].copy_from_slice(frame);
            slot[H_NEXT..H_NEXT + 4].copy_from_slice(&0u32.to_ne_bytes());
            slot[H_LEN..H_LEN + 4].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            slot[H_SNAPLEN..H_SNAPLEN + 4].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            st.store(TP_STATUS_SEND_REQUEST, Ordering::Release);
            self.next = (self.next + 1) % self.frames;
            self.pending += 1;
            return true;
        }
        self.full += 1;
        false
    }

    /// Hands the queued frames to the kernel (one system call for the burst).
    pub fn flush(&mut self) {
        if self.pending > 0 {
            let _ = self.send(false);
        }
    }

    fn send(&mut self, wait: bool) -> io::Result<()> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        // SAFETY: a zero-length send with no buffer: the kernel walks the transmit ring.
        let r = unsafe { libc::send(self.fd, std::ptr::null(), 0, flags) };
        self.pending = 0;
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock && e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(e);
            }
        }
        Ok(())
    }
}
