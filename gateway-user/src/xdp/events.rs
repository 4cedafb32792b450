//! The filter's refusal events from userspace: the ring buffer the program
//! writes a record to per refused hello (within each CPU's budget), and the
//! counts of those it could not send.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use gateway_common::{
    Stat,
    events::{
        ACTION_COOKIE_RESET, ACTION_DROP, EVENT_IPV6, EVENT_SPLIT, EventCounts, RefusalEvent,
    },
};

/// One refused hello, as userspace reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The client.
    pub peer: SocketAddr,
    /// The server's port.
    pub port: u16,
    /// The SNI as sent (`None`: absent, or not seen in the bytes read).
    pub sni: Option<Vec<u8>>,
    /// The highest version offered (wire value).
    pub offered: u16,
    /// The counter it was counted as.
    pub stat: Option<Stat>,
    /// Decided from several segments or records.
    pub split: bool,
    /// What the filter did with it.
    pub action: RefusalAction,
}

/// What the filter did with a refused hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalAction {
    /// Turned into a RST toward the stack; the client is reset.
    Reset,
    /// Dropped.
    Drop,
    /// The first data of a SYN-cookie handshake: the client is reset if its
    /// cookie is valid, the segment dropped if not.
    CookieReset,
}

impl RefusalAction {
    /// `reset`, `drop` or `cookie_reset`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalAction::Reset => "reset",
            RefusalAction::Drop => "drop",
            RefusalAction::CookieReset => "cookie_reset",
        }
    }
}

impl Refusal {
    /// Decodes a record; `None` if it is shorter than one.
    pub fn decode(bytes: &[u8]) -> Option<Refusal> {
        if bytes.len() < size_of::<RefusalEvent>() {
            return None;
        }
        // SAFETY: the length was checked; RefusalEvent is plain integers, any
        // bit pattern is valid, and the read does not assume alignment.
        let e: RefusalEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let ip = if e.flags & EVENT_IPV6 != 0 {
            let mut b = [0u8; 16];
            for (chunk, word) in b.chunks_exact_mut(4).zip(e.saddr) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            IpAddr::V4(Ipv4Addr::from(e.saddr[0].to_ne_bytes()))
        };
        let sni = e.sni_bytes();
        Some(Refusal {
            peer: SocketAddr::new(ip, u16::from_be(e.sport)),
            port: u16::from_be(e.dport),
            sni: (e.sni_state == gateway_common::SNI_PRESENT).then(|| sni.to_vec()),
            offered: e.max_version,
            stat: Stat::ALL.get(e.stat as usize).copied(),
            split: e.flags & EVENT_SPLIT != 0,
            action: match e.action {
                ACTION_DROP => RefusalAction::Drop,
                ACTION_COOKIE_RESET => RefusalAction::CookieReset,
                _ => RefusalAction::Reset,
            },
        })
    }
}

/// The refusals the program could not send, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unsent {
    /// Records sent in all.
    pub sent: u64,
    /// Not sent: the CPU's budget for the second was spent.
    pub over_budget: u64,
    /// Not sent: the ring was full.
    pub lost: u64,
}

/// The ring and the counts, owned by the task that drains them.
pub struct RefusalEvents {
    ring: RingBuf<MapData>,
    counts: PerCpuArray<MapData, EventCounts>,
}

impl RefusalEvents {
    pub(super) fn new(
        ring: RingBuf<MapData>,
        counts: PerCpuArray<MapData, EventCounts>,
    ) -> RefusalEvents {
        RefusalEvents { ring, counts }
    }

    /// Hands every record waiting in the ring to `each`; returns how many.
    pub fn drain(&mut self, mut each: impl FnMut(Refusal)) -> usize {
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            n += 1;
            match Refusal::decode(&item) {
                Some(refusal) => each(refusal),
                None => log::warn!("a refusal event of {} bytes is too short", item.len()),
            }
        }
        n
    }

    /// What the program sent and could not send, so far.
    pub fn unsent(&self) -> anyhow::Result<Unsent> {
        let cpus = self.counts.get(&0, 0)?;
        Ok(cpus.iter().fold(Unsent::default(), |sum, c| Unsent {
            sent: sum.sent + c.sent,
            over_budget: sum.over_budget + c.over_budget,
            lost: sum.lost + c.lost,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_common::{SNI_ABSENT, SNI_PRESENT, sni::SNI_WORDS};

    fn record(flags: u8, sni: &[u8], state: u8) -> Vec<u8> {
        let mut words = [0u64; SNI_WORDS];
        for (i, b) in sni.iter().enumerate() {
            words[i / 8] |= (*b as u64) << ((i % 8) * 8);
        }
        let e = RefusalEvent {
            saddr: [u32::from_ne_bytes([198, 18, 0, 2]), 0, 0, 0],
            sport: 40000u16.to_be(),
            dport: 443u16.to_be(),
            max_version: 0x0301,
            stat: Stat::DropTls10 as u8,
            flags,
            action: ACTION_DROP,
            sni_state: state,
            sni_len: sni.len() as u8,
            reserved: 0,
            sni: words,
        };
        // SAFETY: plain integers viewed as bytes.
        unsafe {
            std::slice::from_raw_parts((&e as *const RefusalEvent).cast::<u8>(), size_of_val(&e))
        }
        .to_vec()
    }

    #[test]
    fn a_record_decodes_to_its_peer_sni_version_and_action() {
        let r = Refusal::decode(&record(EVENT_SPLIT, b"api.example.com", SNI_PRESENT)).unwrap();
        assert_eq!(r.peer, "198.18.0.2:40000".parse().unwrap());
        assert_eq!(r.port, 443);
        assert_eq!(r.sni.as_deref(), Some(&b"api.example.com"[..]));
        assert_eq!(r.offered, 0x0301);
        assert_eq!(r.stat, Some(Stat::DropTls10));
        assert!(r.split);
        assert_eq!(r.action, RefusalAction::Drop);
    }

    #[test]
    fn an_absent_sni_is_none_and_a_short_record_is_refused() {
        let r = Refusal::decode(&record(0, b"", SNI_ABSENT)).unwrap();
        assert_eq!(r.sni, None);
        assert!(!r.split);
        let whole = record(0, b"", SNI_ABSENT);
        assert!(Refusal::decode(&whole[..whole.len() - 1]).is_none());
    }

    #[test]
    fn an_ipv6_client_reads_back_whole() {
        let ip: Ipv6Addr = "fd00::2".parse().unwrap();
        let mut bytes = record(EVENT_IPV6, b"", SNI_ABSENT);
        let o = std::mem::offset_of!(RefusalEvent, saddr);
        bytes[o..o + 16].copy_from_slice(&ip.octets());
        let r = Refusal::decode(&bytes).unwrap();
        assert_eq!(r.peer.ip(), IpAddr::V6(ip));
    }
}
