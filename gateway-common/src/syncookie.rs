//! SYN cookies answered by the gateway itself (spike, issue 24): the names the
//! eBPF programs and their loader share, and the cookie arithmetic both sides
//! run (the programs to mint and check cookies, userspace to test them).
//!
//! A cookie is the initial sequence number of the SYN-ACK the XDP program sends.
//! Its top 29 bits are a keyed SipHash-1-3 of the flow (addresses, ports, the
//! client's initial sequence number) and a ~69 s time slot; its low 3 bits are
//! an index into [`MSS_TABLE`]. A cookie is valid in its own slot and the next.

/// Map names.
pub mod maps {
    /// `Array<u64>` of [`CONFIG_SLOTS`](super::CONFIG_SLOTS): the key and the port.
    pub const CONFIG: &str = "SYNCOOKIE_CONFIG";
    /// `PerCpuArray<u64>` of [`STAT_COUNT`](super::STAT_COUNT) counters.
    pub const STATS: &str = "SYNCOOKIE_STATS";
}

/// Program names.
pub mod programs {
    /// XDP: answers SYNs, drops handshake ACKs, refuses or passes first data.
    pub const XDP: &str = "syncookie_xdp";
    /// TC ingress: hands a passed first data segment's connection to the kernel.
    pub const TC: &str = "syncookie_tc";
}

/// [`maps::CONFIG`] slot: first half of the SipHash key.
pub const CONFIG_KEY0: u32 = 0;
/// [`maps::CONFIG`] slot: second half of the SipHash key.
pub const CONFIG_KEY1: u32 = 1;
/// [`maps::CONFIG`] slot: the TLS port the cookies guard (0: none, all pass).
pub const CONFIG_PORT: u32 = 2;
/// Entries of [`maps::CONFIG`].
pub const CONFIG_SLOTS: u32 = 3;

/// Counter: SYNs answered with a cookie SYN-ACK (XDP_TX).
pub const STAT_SYN_ANSWERED: u32 = 0;
/// Counter: bare ACKs with a valid cookie, dropped (the handshake needs no state).
pub const STAT_ACK_DROPPED: u32 = 1;
/// Counter: first data segments with a valid cookie passed on to TC.
pub const STAT_HELLO_PASSED: u32 = 2;
/// Counter: first data segments refused and answered with a RST (XDP_TX).
pub const STAT_HELLO_REFUSED: u32 = 3;
/// Counter: TC handed a connection to the kernel (`bpf_sk_assign_tcp_reqsk` = 0).
pub const STAT_TC_ASSIGNED: u32 = 4;
/// Counter: TC found a valid cookie but the kfunc failed.
pub const STAT_TC_ASSIGN_FAILED: u32 = 5;
/// Counter: TC found a valid cookie but no listener (the kernel answers).
pub const STAT_TC_NO_LISTENER: u32 = 6;
/// Counter: a SYN the XDP program could not answer (passed to the kernel).
pub const STAT_SYN_PASSED: u32 = 7;
/// Number of counters.
pub const STAT_COUNT: u32 = 8;

/// The counters' names, by index (for logs and tests).
pub const STAT_NAMES: [&str; STAT_COUNT as usize] = [
    "syn_answered",
    "ack_dropped",
    "hello_passed",
    "hello_refused",
    "tc_assigned",
    "tc_assign_failed",
    "tc_no_listener",
    "syn_passed",
];

/// The `imm` the eBPF object carries in each call of `bpf_sk_assign_tcp_reqsk`;
/// the loader replaces it with the function's id in the kernel's BTF.
pub const KFUNC_PLACEHOLDER: u32 = 0x5c0f_fee1;

/// The MSS values a cookie can carry (the kernel's IPv4 table).
pub const MSS_TABLE: [u16; 4] = [536, 1300, 1440, 1460];

/// Low bits of a cookie that carry the MSS index.
const INDEX_BITS: u32 = 3;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;

/// Time slot of a monotonic nanosecond clock: 2^36 ns, about 68.7 s.
#[inline(always)]
pub fn time_slot(now_ns: u64) -> u64 {
    now_ns >> 36
}

/// What identifies a handshake: IPv4 addresses and ports as on the wire
/// (network byte order, read as native words) and the client's initial
/// sequence number (host order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// Source and destination address, `saddr | daddr << 32`.
    pub addrs: u64,
    /// Source and destination port, `sport | dport << 16`.
    pub ports: u32,
    /// The client's initial sequence number.
    pub client_isn: u32,
}

/// The index in [`MSS_TABLE`] of the largest entry not above `mss`.
#[inline(always)]
pub fn mss_index(mss: u16) -> u32 {
    let mut index = 0;
    let mut i = 1;
    while i < MSS_TABLE.len() {
        if MSS_TABLE[i] <= mss {
            index = i as u32;
        }
        i += 1;
    }
    index
}

/// The cookie for a handshake in a time slot, carrying an MSS index.
#[inline(always)]
pub fn mint(key: [u64; 2], flow: &Handshake, slot: u64, mss_index: u32) -> u32 {
    let hash = siphash13(key, flow, slot) as u32;
    (hash & !INDEX_MASK) | (mss_index & INDEX_MASK)
}

/// The MSS a cookie carries if it is valid for the handshake now (minted in
/// `slot` or the one before).
#[inline(always)]
pub fn check(key: [u64; 2], flow: &Handshake, slot: u64, cookie: u32) -> Option<u16> {
    let index = (cookie & INDEX_MASK) as usize;
    if index >= MSS_TABLE.len() {
        return None;
    }
    for age in 0..2 {
        let hash = siphash13(key, flow, slot.wrapping_sub(age)) as u32;
        if (hash ^ cookie) & !INDEX_MASK == 0 {
            return Some(MSS_TABLE[index]);
        }
    }
    None
}

/// SipHash-1-3 of the three words a handshake and a slot make.
#[inline(always)]
fn siphash13(key: [u64; 2], flow: &Handshake, slot: u64) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    let words = [
        flow.addrs,
        (flow.ports as u64) | ((flow.client_isn as u64) << 32),
        slot,
        24u64 << 56,
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
mod tests {
    use super::*;

    const KEY: [u64; 2] = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
    const FLOW: Handshake = Handshake {
        addrs: 0x0200_12c6_0100_12c6,
        ports: 0xbb01_3930,
        client_isn: 0xdead_beef,
    };

    #[test]
    fn a_cookie_checks_in_its_slot_and_the_next_only() {
        let cookie = mint(KEY, &FLOW, 1000, mss_index(1460));
        assert_eq!(check(KEY, &FLOW, 1000, cookie), Some(1460));
        assert_eq!(check(KEY, &FLOW, 1001, cookie), Some(1460));
        assert_eq!(check(KEY, &FLOW, 1002, cookie), None);
        assert_eq!(check(KEY, &FLOW, 999, cookie), None);
    }

    #[test]
    fn a_cookie_is_bound_to_key_flow_and_isn() {
        let cookie = mint(KEY, &FLOW, 7, 2);
        let other_isn = Handshake {
            client_isn: FLOW.client_isn + 1,
            ..FLOW
        };
        let other_port = Handshake {
            ports: FLOW.ports ^ 1,
            ..FLOW
        };
        assert_eq!(check(KEY, &other_isn, 7, cookie), None);
        assert_eq!(check(KEY, &other_port, 7, cookie), None);
        assert_eq!(check([KEY[0], KEY[1] ^ 1], &FLOW, 7, cookie), None);
        assert_eq!(check(KEY, &FLOW, 7, cookie ^ 0x100), None);
    }

    #[test]
    fn the_mss_rounds_down_to_the_table() {
        assert_eq!(mss_index(0), 0);
        assert_eq!(mss_index(1299), 0);
        assert_eq!(mss_index(1300), 1);
        assert_eq!(mss_index(1459), 2);
        assert_eq!(mss_index(9000), 3);
    }
}
