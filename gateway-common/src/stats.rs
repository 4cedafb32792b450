//! The filter's counters: one per-CPU slot per outcome.
//!
//! Every packet the program sees increments exactly one outcome counter
//! (a `Pass*` or `Drop*` slot); every ClientHello whose highest version was
//! determined also increments one `Hello*` slot; and a hello decided from bytes
//! of more than one segment or record also increments one `Split*` slot.

/// Index into the `STATS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stat {
    /// Not IPv4/IPv6 TCP.
    PassNotTcp = 0,
    /// TCP to a port that is not a TLS port.
    PassOtherPort,
    /// SYN (even with Fast Open data), RST, or a segment without payload.
    PassControl,
    /// IP fragment (IPv4, or IPv6 with a fragment header whose offset is not 0
    /// or whose more-fragments flag is set): the TCP header or payload may be
    /// elsewhere, and the kernel reassembles after XDP.
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
    /// A segment of a ClientHello that is not finished yet: its bytes are kept
    /// for reassembly and it passes (the segment that completes the decision
    /// is counted by the verdict).
    PassHelloPartial,
    /// A payload that looks like a ClientHello but is not at the start of the
    /// client's stream (renegotiation, application data): never parsed.
    PassMidStream,
    /// Reassembly gave up: a segment arrived beyond the next expected byte
    /// (a gap, or out-of-order arrival) before the hello was decided.
    PassOutOfOrder,
    /// Reassembly gave up: a retransmission carried bytes different from the
    /// ones already seen at the same place in the stream.
    PassOverlapMismatch,
    /// Reassembly gave up: the hello was not decided within the kept bytes
    /// (`PAYLOAD_CAP` handshake bytes, `STREAM_CAP` stream bytes).
    PassTooLarge,
    /// Reassembly gave up: another flow took this flow's table slot.
    PassEvicted,
    /// Reassembly gave up: another CPU was working on the same table slot.
    PassContended,
    /// Hellos decided from several segments or records, and allowed.
    SplitAllowed,
    /// Hellos decided from several segments or records, and refused.
    SplitRefused,
    /// A SYN answered with a cookie SYN-ACK (XDP_TX): the kernel never saw it.
    AnswerSynCookie,
    /// A bare ACK completing a cookie handshake: dropped, nothing to remember.
    DropCookieAck,
    /// IPv6 with extension headers the filter does not look through: kinds
    /// other than hop-by-hop, destination options, routing and fragment (ESP,
    /// AH, mobility, ...), a routing header with segments left (this host is
    /// not the packet's last destination), or more than 4 headers, or a TCP
    /// header that starts beyond the frame's first 255 bytes.
    PassIpv6ExtHeaders,
}

/// What a counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatKind {
    /// One packet's outcome: `"pass"`, `"drop"` or `"cookie"` (a SYN answered,
    /// or the bare ACK of a cookie handshake dropped).
    Outcome(&'static str),
    /// A hello by the highest version it offered.
    HelloVersion,
    /// A hello decided across segments or records.
    Split,
}

impl Stat {
    /// Number of slots in the `STATS` map.
    pub const COUNT: u32 = Stat::PassIpv6ExtHeaders as u32 + 1;

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
        Stat::PassHelloPartial,
        Stat::PassMidStream,
        Stat::PassOutOfOrder,
        Stat::PassOverlapMismatch,
        Stat::PassTooLarge,
        Stat::PassEvicted,
        Stat::PassContended,
        Stat::SplitAllowed,
        Stat::SplitRefused,
        Stat::AnswerSynCookie,
        Stat::DropCookieAck,
        Stat::PassIpv6ExtHeaders,
    ];

    /// What the counter counts.
    pub const fn kind(self) -> StatKind {
        match self.verdict() {
            Some(v) => StatKind::Outcome(v),
            None => match self {
                Stat::SplitAllowed | Stat::SplitRefused => StatKind::Split,
                _ => StatKind::HelloVersion,
            },
        }
    }

    /// `"pass"`, `"drop"` or `"cookie"` for outcome counters, `None` for the others.
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
            | Stat::PassMalformed
            | Stat::PassHelloPartial
            | Stat::PassMidStream
            | Stat::PassOutOfOrder
            | Stat::PassOverlapMismatch
            | Stat::PassTooLarge
            | Stat::PassEvicted
            | Stat::PassContended
            | Stat::PassIpv6ExtHeaders => Some("pass"),
            Stat::DropTls10
            | Stat::DropTls11
            | Stat::DropTls12
            | Stat::DropSsl3
            | Stat::DropSsl2
            | Stat::DropRetransmit => Some("drop"),
            Stat::AnswerSynCookie | Stat::DropCookieAck => Some("cookie"),
            _ => None,
        }
    }

    /// The `reason` label of an outcome counter, the version of a hello counter,
    /// or the `outcome` label of a split-hello counter.
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
            Stat::PassHelloPartial => "hello_partial",
            Stat::PassMidStream => "mid_stream",
            Stat::PassOutOfOrder => "reassembly_out_of_order",
            Stat::PassOverlapMismatch => "reassembly_overlap_mismatch",
            Stat::PassTooLarge => "reassembly_too_large",
            Stat::PassEvicted => "reassembly_evicted",
            Stat::PassContended => "reassembly_contended",
            Stat::SplitAllowed => "allowed",
            Stat::SplitRefused => "refused",
            Stat::AnswerSynCookie => "syn_answered",
            Stat::DropCookieAck => "handshake_ack",
            Stat::PassIpv6ExtHeaders => "ipv6_ext_headers",
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
