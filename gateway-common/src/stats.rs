//! The filter's counters: one per-CPU slot per outcome.
//!
//! Every packet the program sees increments exactly one outcome counter
//! (a `Pass*` or `Drop*` slot); every ClientHello whose highest version was
//! determined also increments one `Hello*` slot.

/// Index into the `STATS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stat {
    /// Not IPv4/IPv6 TCP (or an IPv6 extension header we do not walk).
    PassNotTcp = 0,
    /// TCP to a port that is not a TLS port.
    PassOtherPort,
    /// SYN (even with Fast Open data), RST, or a segment without payload.
    PassControl,
    /// IPv4 fragment: the TCP header or payload may be elsewhere.
    PassFragment,
    /// Payload that does not start a TLS handshake record (application data, continuations).
    PassNotTls,
    /// A handshake record that is not a ClientHello.
    PassNotClientHello,
    /// ClientHello at or above the minimum for its hostname.
    PassAllowed,
    /// ClientHello whose decisive part is not in this segment or record, or a loop bound hit.
    PassUndecidable,
    /// ClientHello that breaks the format (lengths, duplicates): the server will refuse it.
    PassMalformed,
    /// Refused: highest version offered is TLS 1.0, below the minimum.
    DropTls10,
    /// Refused: highest version offered is TLS 1.1, below the minimum.
    DropTls11,
    /// Refused: highest version offered is TLS 1.2, below the minimum.
    DropTls12,
    /// Refused: SSL 3.0 hello.
    DropSsl3,
    /// Refused: SSL 2.0 / SSLv2-compatible hello format.
    DropSsl2,
    /// Retransmission of a refused hello: passed unchanged so the stack answers with a reset.
    DropRetransmit,
    /// Hellos whose highest offered version is SSL 2 format.
    HelloSsl2,
    /// Hellos whose highest offered version is SSL 3.0.
    HelloSsl3,
    /// Hellos whose highest offered version is TLS 1.0.
    HelloTls10,
    /// Hellos whose highest offered version is TLS 1.1.
    HelloTls11,
    /// Hellos whose highest offered version is TLS 1.2.
    HelloTls12,
    /// Hellos whose highest offered version is TLS 1.3 (or newer).
    HelloTls13,
}

impl Stat {
    /// Number of slots in the `STATS` map.
    pub const COUNT: u32 = Stat::HelloTls13 as u32 + 1;

    /// Every counter, in index order.
    pub const ALL: [Stat; Stat::COUNT as usize] = [
        Stat::PassNotTcp,
        Stat::PassOtherPort,
        Stat::PassControl,
        Stat::PassFragment,
        Stat::PassNotTls,
        Stat::PassNotClientHello,
        Stat::PassAllowed,
        Stat::PassUndecidable,
        Stat::PassMalformed,
        Stat::DropTls10,
        Stat::DropTls11,
        Stat::DropTls12,
        Stat::DropSsl3,
        Stat::DropSsl2,
        Stat::DropRetransmit,
        Stat::HelloSsl2,
        Stat::HelloSsl3,
        Stat::HelloTls10,
        Stat::HelloTls11,
        Stat::HelloTls12,
        Stat::HelloTls13,
    ];

    /// `"pass"` or `"drop"` for outcome counters, `None` for the per-version hello counters.
    pub const fn verdict(self) -> Option<&'static str> {
        match self {
            Stat::PassNotTcp
            | Stat::PassOtherPort
            | Stat::PassControl
            | Stat::PassFragment
            | Stat::PassNotTls
            | Stat::PassNotClientHello
            | Stat::PassAllowed
            | Stat::PassUndecidable
            | Stat::PassMalformed => Some("pass"),
            Stat::DropTls10
            | Stat::DropTls11
            | Stat::DropTls12
            | Stat::DropSsl3
            | Stat::DropSsl2
            | Stat::DropRetransmit => Some("drop"),
            _ => None,
        }
    }

    /// The `reason` label of an outcome counter, or the version of a hello counter.
    pub const fn label(self) -> &'static str {
        match self {
            Stat::PassNotTcp => "not_tcp",
            Stat::PassOtherPort => "other_port",
            Stat::PassControl => "tcp_control",
            Stat::PassFragment => "ip_fragment",
            Stat::PassNotTls => "not_tls",
            Stat::PassNotClientHello => "not_client_hello",
            Stat::PassAllowed => "allowed",
            Stat::PassUndecidable => "undecidable",
            Stat::PassMalformed => "malformed",
            Stat::DropTls10 => "below_min_tls1_0",
            Stat::DropTls11 => "below_min_tls1_1",
            Stat::DropTls12 => "below_min_tls1_2",
            Stat::DropSsl3 => "ssl3",
            Stat::DropSsl2 => "sslv2",
            Stat::DropRetransmit => "refused_retransmit",
            Stat::HelloSsl2 => "ssl2",
            Stat::HelloSsl3 => "ssl3",
            Stat::HelloTls10 => "1.0",
            Stat::HelloTls11 => "1.1",
            Stat::HelloTls12 => "1.2",
            Stat::HelloTls13 => "1.3",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
