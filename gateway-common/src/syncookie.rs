//! SYN cookies answered by the XDP program: the names the eBPF programs and
//! their loader share, and the arithmetic both sides run (the programs to mint
//! and check cookies and to write options, userspace to test them as a model).
//!
//! A cookie is the initial sequence number of the SYN-ACK the XDP program
//! sends. Its low 8 bits carry the options agreed with the client
//! ([`SynOptions`]: an MSS index, the client's window scale, SACK-permitted,
//! ECN); its top 24 bits are a keyed SipHash-1-3 of the flow (addresses,
//! ports, the client's initial sequence number), the time slot and those 8
//! bits. Timestamps need no bits: the client echoes them in every segment when
//! both sides agreed, so the first data segment says whether they were.
//!
//! Keys live in a ring of three [`CookieKey`]s indexed by slot (about 69 s
//! each); userspace writes the next slot's key ahead of time, and a cookie is
//! accepted in its own slot and the next one, so rotation never breaks a
//! handshake in flight.

/// Map names.
pub mod maps {
    /// `Array<CookieKey>` of [`KEY_RING`](super::KEY_RING) entries, indexed by slot % 3.
    pub const KEYS: &str = "COOKIE_KEYS";
    /// `Array<CookieConfig>` with one entry: the options the kernel allows.
    pub const CONFIG: &str = "COOKIE_CONFIG";
    /// `Array<u8>` of 65536 entries: each port's `PORT_*` flags.
    pub const PORTS: &str = "COOKIE_PORTS";
    /// `PerCpuArray<u64>` of [`SYN_COUNTERS`](super::SYN_COUNTERS): SYNs seen, by port % 256.
    pub const SYNS: &str = "SYN_COUNTS";
    /// `PerCpuArray<u64>` indexed by [`CookieStat`](super::CookieStat).
    pub const STATS: &str = "COOKIE_STATS";
    /// `ProgramArray` of the cookie programs, [`COOKIE_PROGRAM_NAMES`](super::COOKIE_PROGRAM_NAMES).
    pub const PROGRAMS: &str = "COOKIE_PROGS";
}

/// The TC ingress program that hands a connection with a valid cookie to the kernel.
pub const TC_PROGRAM: &str = "gateway_tc";

/// The XDP programs `gateway_xdp` tail-calls through [`maps::PROGRAMS`], by index.
pub const COOKIE_PROGRAM_NAMES: [&str; COOKIE_PROGRAMS as usize] =
    ["cookie_syn", "cookie_ack", "cookie_reset"];

/// Entries of [`maps::PROGRAMS`].
pub const COOKIE_PROGRAMS: u32 = 3;

/// Keys kept at once: the previous slot's, the current one's, the next one's.
pub const KEY_RING: u32 = 3;

/// Per-port SYN counters (the port's low 8 bits index them; TLS ports that
/// share them are counted together, which only engages cookies sooner).
pub const SYN_COUNTERS: u32 = 256;

/// [`maps::PORTS`] flag: answer this port's SYNs with cookies.
pub const PORT_ANSWER: u8 = 1;
/// [`maps::PORTS`] flag: check cookies on this port's ACKs (kept on for two
/// slots after answering stops, for handshakes still in flight).
pub const PORT_CHECK: u8 = 2;

/// The window scale the gateway announces for itself (Linux's usual one).
pub const OUR_WSCALE: u8 = 7;

/// The window a SYN-ACK offers (never scaled).
pub const SYNACK_WINDOW: u16 = 64240;

/// The `imm` the eBPF object carries in each call of `bpf_sk_assign_tcp_reqsk`;
/// the loader replaces it with the function's id in the kernel's BTF.
pub const KFUNC_PLACEHOLDER: u32 = 0x5c0f_fee1;

/// One key of the ring: the slot it is for, and the SipHash key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieKey {
    /// The time slot this key mints and checks cookies for (0: no key yet).
    pub slot: u64,
    /// The SipHash-1-3 key.
    pub key: [u64; 2],
}

/// The options the kernel of the gateway's namespace allows (its sysctls):
/// offering one it refuses would make `bpf_sk_assign_tcp_reqsk` fail.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieConfig {
    /// `ALLOW_*` bits.
    pub allow: u32,
    /// Unused; keeps the value 8 bytes.
    pub reserved: u32,
}

/// [`CookieConfig::allow`]: `net.ipv4.tcp_window_scaling`.
pub const ALLOW_WSCALE: u32 = 1;
/// [`CookieConfig::allow`]: `net.ipv4.tcp_sack`.
pub const ALLOW_SACK: u32 = 2;
/// [`CookieConfig::allow`]: `net.ipv4.tcp_timestamps`.
pub const ALLOW_TIMESTAMPS: u32 = 4;
/// [`CookieConfig::allow`]: `net.ipv4.tcp_ecn` accepts ECN when asked.
pub const ALLOW_ECN: u32 = 8;

/// The cookie stage's counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieStat {
    /// SYNs answered with a cookie SYN-ACK (XDP_TX).
    Sent = 0,
    /// SYNs the program did not answer (no key yet, IP options, a socket in
    /// TIME_WAIT or open on the same 4-tuple): the kernel did.
    NotAnswered,
    /// Bare ACKs with a valid cookie: the handshake needs no state, dropped.
    AckDropped,
    /// Bare ACKs with an invalid cookie and no connection: dropped.
    BadCookie,
    /// First data with a valid cookie whose hello was refused: a RST went
    /// back (XDP_TX) and the kernel never saw the connection.
    RefusedWithoutSocket,
    /// Connections the kernel built from a cookie (`bpf_sk_assign_tcp_reqsk`).
    SocketMade,
    /// A valid cookie the kernel would not take (the kfunc failed).
    AssignFailed,
}

impl CookieStat {
    /// Number of counters.
    pub const COUNT: u32 = 7;
    /// Every counter, in index order.
    pub const ALL: [CookieStat; Self::COUNT as usize] = [
        Self::Sent,
        Self::NotAnswered,
        Self::AckDropped,
        Self::BadCookie,
        Self::RefusedWithoutSocket,
        Self::SocketMade,
        Self::AssignFailed,
    ];

    /// The metric label of this counter.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::NotAnswered => "not_answered",
            Self::AckDropped => "ack_dropped",
            Self::BadCookie => "bad_cookie",
            Self::RefusedWithoutSocket => "refused_without_socket",
            Self::SocketMade => "socket_made",
            Self::AssignFailed => "assign_failed",
        }
    }
}

/// The MSS values a cookie can carry over IPv4 (the kernel's table).
pub const MSS_TABLE_V4: [u16; 4] = [536, 1300, 1440, 1460];
/// The MSS values a cookie can carry over IPv6 (the kernel's table).
pub const MSS_TABLE_V6: [u16; 4] = [1220, 1420, 1440, 8940];

/// Time slot of a monotonic nanosecond clock: 2^36 ns, about 68.7 s.
#[inline(always)]
pub fn time_slot(now_ns: u64) -> u64 {
    now_ns >> 36
}

/// The ring index of a slot's key.
#[inline(always)]
pub fn key_index(slot: u64) -> u32 {
    (slot % KEY_RING as u64) as u32
}

/// What identifies a handshake: addresses and ports as on the wire (network
/// byte order, read as native words) and the client's initial sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// IPv4: `saddr | daddr << 32` in word 0, the rest 0. IPv6: source then
    /// destination, two words each.
    pub addrs: [u64; 4],
    /// Source and destination port, `sport | dport << 16`.
    pub ports: u32,
    /// The client's initial sequence number.
    pub client_isn: u32,
    /// Whether the addresses are IPv6 ones.
    pub ipv6: bool,
}

/// What a client's SYN offered, read from its options.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offered {
    /// The MSS option's value (0: none).
    pub mss: u16,
    /// The window scale option's shift, if any.
    pub wscale: Option<u8>,
    /// SACK-permitted.
    pub sack: bool,
    /// The timestamp option's TSval and TSecr, if any.
    pub timestamps: Option<(u32, u32)>,
    /// ECE and CWR both set: the client asks for ECN.
    pub ecn: bool,
}

/// The options agreed with a client: what the cookie's low 8 bits carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynOptions {
    /// Index into the family's MSS table.
    pub mss_index: u8,
    /// The client's window scale (0..=14), if both sides scale.
    pub wscale: Option<u8>,
    /// SACK agreed.
    pub sack: bool,
    /// ECN agreed.
    pub ecn: bool,
}

/// Largest shift RFC 7323 allows.
const MAX_WSCALE: u8 = 14;
/// The 4-bit window-scale field value meaning "no window scaling".
const NO_WSCALE: u8 = 15;

impl SynOptions {
    /// What the gateway agrees to, given the client's offer and what its
    /// kernel allows (`CookieConfig::allow`).
    #[inline(always)]
    pub fn agree(offered: &Offered, allow: u32, ipv6: bool) -> SynOptions {
        let mss = if offered.mss == 0 {
            if ipv6 { 1220 } else { 536 }
        } else {
            offered.mss
        };
        SynOptions {
            mss_index: mss_index(mss, ipv6),
            wscale: match offered.wscale {
                Some(shift) if allow & ALLOW_WSCALE != 0 => Some(shift.min(MAX_WSCALE)),
                _ => None,
            },
            sack: offered.sack && allow & ALLOW_SACK != 0,
            ecn: offered.ecn && allow & ALLOW_ECN != 0,
        }
    }

    /// The options as the cookie's low 8 bits.
    #[inline(always)]
    pub fn bits(&self) -> u32 {
        let wscale = match self.wscale {
            Some(shift) => shift.min(MAX_WSCALE),
            None => NO_WSCALE,
        };
        ((self.mss_index as u32 & 3) << 6)
            | ((wscale as u32) << 2)
            | ((self.sack as u32) << 1)
            | self.ecn as u32
    }

    /// The options a cookie's low 8 bits carry, or `None` if they are not a
    /// value [`SynOptions::bits`] makes.
    #[inline(always)]
    pub fn from_bits(bits: u32) -> Option<SynOptions> {
        let wscale = ((bits >> 2) & 0xf) as u8;
        if wscale > MAX_WSCALE && wscale != NO_WSCALE {
            return None;
        }
        Some(SynOptions {
            mss_index: ((bits >> 6) & 3) as u8,
            wscale: if wscale == NO_WSCALE {
                None
            } else {
                Some(wscale)
            },
            sack: bits & 2 != 0,
            ecn: bits & 1 != 0,
        })
    }

    /// The MSS this index stands for.
    #[inline(always)]
    pub fn mss(&self, ipv6: bool) -> u16 {
        // A match, not an index into a local table: BPF code must not do
        // arithmetic on stack addresses (LLVM would OR the index in).
        let table = if ipv6 { &MSS_TABLE_V6 } else { &MSS_TABLE_V4 };
        match self.mss_index & 3 {
            0 => table[0],
            1 => table[1],
            2 => table[2],
            _ => table[3],
        }
    }
}

/// The index in the family's MSS table of the largest entry not above `mss`.
#[inline(always)]
pub fn mss_index(mss: u16, ipv6: bool) -> u8 {
    let table = if ipv6 { MSS_TABLE_V6 } else { MSS_TABLE_V4 };
    let mut index = 0;
    let mut i = 1;
    while i < table.len() {
        if table[i] <= mss {
            index = i as u8;
        }
        i += 1;
    }
    index
}

/// Longest TCP option area.
pub const MAX_OPTIONS: usize = 40;

/// The buffer an option area is read into: room for the longest area and
/// for reading the longest option (10 bytes) at any position in it.
pub const OPTION_BUF: usize = 64;

/// Reads the options of a segment from `area`: its `len` option bytes,
/// followed by zeros, and `flags`, the TCP flags byte. Unknown options are
/// skipped; a malformed area (an option running past `len`) ends the walk with
/// what was read so far.
///
/// It visits the 40 byte positions in turn, each at a constant index, and acts
/// only where the next option begins: no index is computed from the data,
/// which in BPF keeps the verifier's work linear (a walk that jumps from
/// option to option makes it explore every chain of sizes). It writes into
/// `offered`, which the programs keep in map memory: the verifier does not
/// follow constants through map memory, so the code after the walk cannot
/// tie the walk's paths apart by branching on what it found.
#[inline(always)]
pub fn walk_options(area: &[u8; OPTION_BUF], len: usize, flags: u8, offered: &mut Offered) {
    *offered = Offered {
        ecn: flags & 0xc0 == 0xc0,
        ..Offered::default()
    };
    let mut next = 0usize;
    macro_rules! positions {
        ($($p:literal)*) => {
            $(
                if !option_at(area, $p, len, &mut next, offered) {
                    return;
                }
            )*
        };
    }
    positions!(
        0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19
        20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39
    );
}

/// One position of [`walk_options`]: reads the option there if one begins
/// there; false ends the walk.
#[inline(always)]
fn option_at(
    area: &[u8; OPTION_BUF],
    p: usize,
    len: usize,
    next: &mut usize,
    offered: &mut Offered,
) -> bool {
    if p >= len {
        return false;
    }
    if p != *next {
        return true;
    }
    let kind = area[p];
    if kind == 0 {
        return false;
    }
    if kind == 1 {
        *next = p + 1;
        return true;
    }
    let size = area[p + 1] as usize;
    if size < 2 || p + size > len {
        return false;
    }
    let be32 = |at: usize| u32::from_be_bytes([area[at], area[at + 1], area[at + 2], area[at + 3]]);
    match (kind, size) {
        (2, 4) => offered.mss = u16::from_be_bytes([area[p + 2], area[p + 3]]),
        (3, 3) => offered.wscale = Some(area[p + 2]),
        (4, 2) => offered.sack = true,
        (8, 10) => offered.timestamps = Some((be32(p + 2), be32(p + 6))),
        _ => {}
    }
    *next = p + size;
    true
}

/// [`walk_options`] over an area of any length (the model's entry point).
pub fn parse_options(area: &[u8], flags: u8) -> Offered {
    let mut buf = [0u8; OPTION_BUF];
    let len = area.len().min(MAX_OPTIONS);
    buf[..len].copy_from_slice(&area[..len]);
    let mut offered = Offered::default();
    walk_options(&buf, len, flags, &mut offered);
    offered
}

/// Longest option area a SYN-ACK of ours carries: MSS (4), SACK-permitted and
/// timestamps (12), NOP and window scale (4).
pub const SYNACK_OPTIONS_MAX: usize = 20;

/// Writes a SYN-ACK's options: MSS, then SACK-permitted, timestamps and
/// window scale as agreed. `ts` is (our TSval, the client's TSval to echo)
/// when both sides use timestamps. Returns the length (a multiple of 4).
#[inline(always)]
pub fn write_synack_options(
    opts: &SynOptions,
    mss: u16,
    ts: Option<(u32, u32)>,
    out: &mut [u8; SYNACK_OPTIONS_MAX],
) -> usize {
    let [hi, lo] = mss.to_be_bytes();
    out[..4].copy_from_slice(&[2, 4, hi, lo]);
    let mut len = 4;
    match ts {
        Some((ours, theirs)) => {
            let mut block = [1u8, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
            if opts.sack {
                [block[0], block[1]] = [4, 2];
            }
            block[4..8].copy_from_slice(&ours.to_be_bytes());
            block[8..12].copy_from_slice(&theirs.to_be_bytes());
            out[4..16].copy_from_slice(&block);
            len = 16;
        }
        None if opts.sack => {
            out[4..8].copy_from_slice(&[1, 1, 4, 2]);
            len = 8;
        }
        None => {}
    }
    if opts.wscale.is_some() {
        // NOP, window scale: our shift (the client's is in the cookie).
        let ws = [1, 3, 3, OUR_WSCALE];
        match len {
            4 => out[4..8].copy_from_slice(&ws),
            8 => out[8..12].copy_from_slice(&ws),
            _ => out[16..20].copy_from_slice(&ws),
        }
        len += 4;
    }
    len
}

/// The cookie for a handshake in a time slot, carrying its agreed options.
#[inline(always)]
pub fn mint(key: [u64; 2], flow: &Handshake, slot: u64, opts: &SynOptions) -> u32 {
    let bits = opts.bits();
    (hash(key, flow, slot, bits) & !0xff) | bits
}

/// The options a cookie carries if it is valid for the handshake with one of
/// the ring's keys, in `slot` or the one before.
#[inline(always)]
pub fn check(
    ring: &[CookieKey; 3],
    flow: &Handshake,
    slot: u64,
    cookie: u32,
) -> Option<SynOptions> {
    let bits = cookie & 0xff;
    let opts = SynOptions::from_bits(bits)?;
    for age in 0..2u64 {
        let want = slot.wrapping_sub(age);
        // A match, not an index: the BPF verifier does not bound `%`.
        let entry = match key_index(want) {
            0 => &ring[0],
            1 => &ring[1],
            _ => &ring[2],
        };
        if entry.slot == want && (hash(entry.key, flow, want, bits) ^ cookie) & !0xff == 0 {
            return Some(opts);
        }
    }
    None
}

/// SipHash-1-3 of a handshake, a slot and the option bits.
#[inline(always)]
fn hash(key: [u64; 2], flow: &Handshake, slot: u64, bits: u32) -> u32 {
    let tail = (flow.ports as u64) | ((flow.client_isn as u64) << 32);
    let stamp = slot | ((bits as u64) << 56);
    let h = if flow.ipv6 {
        siphash13(
            key,
            [
                flow.addrs[0],
                flow.addrs[1],
                flow.addrs[2],
                flow.addrs[3],
                tail,
                stamp,
                48u64 << 56,
            ],
        )
    } else {
        siphash13(key, [flow.addrs[0], tail, stamp, 24u64 << 56])
    };
    h as u32
}

/// SipHash-1-3 of `N` message words (the last one carries the length).
#[inline(always)]
fn siphash13<const N: usize>(key: [u64; 2], words: [u64; N]) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    for m in words {
        v[3] ^= m;
        sip_round(&mut v);
        v[0] ^= m;
    }
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

#[cfg(test)]
mod tests;
