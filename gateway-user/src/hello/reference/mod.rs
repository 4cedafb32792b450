//! A reference model of the XDP filter's decisions on the segments of a TCP
//! flow to a TLS port, written in plain slice-based Rust from the filter's
//! specification (not from its code), for differential testing against the
//! real program.
//!
//! # The specification
//!
//! Limits: `PAYLOAD_CAP` (4096) handshake bytes and `STREAM_CAP` (8192) stream
//! bytes are kept per hello; a record is at most 16384 + 2048 bytes; 64
//! extensions are walked; an SNI is 1 to 255 bytes.
//!
//! A flow has an optional *anchor* {start sequence number, state (await,
//! hello, decided, refused, gave up), whether its SYN wrote it}, a reassembly
//! buffer while a hello is in progress (the stream from its first byte, the
//! handshake bytes taken out of its records, the record walk's position, a
//! count of pieces), and the set of sequence numbers of its refused segments.
//! Each segment, in arrival order:
//!
//! 1. Empty, or SYN or RST set: pass as control. A SYN without ACK or RST
//!    (re)writes the anchor: start = seq + 1, await, from the SYN.
//! 2. Anchor refused: the segment is a retransmission (`DropRetransmit`, passed).
//! 3. Anchor hello: the segment goes to the hello in progress (rule 9).
//! 4. The first bytes classify the payload: with bit 0x80 of the first byte
//!    set, bytes whose third is 1 (a ClientHello) and fourth 0 or 3 (the
//!    version's major), as far as they are there, may begin an SSL 2.0-format
//!    hello, anything else is not TLS; without it, a first byte other than 22 or a second other
//!    than 3 is not TLS, a sixth other than 1 is not a ClientHello (a short
//!    payload is judged on the bytes it has). What cannot begin a hello is
//!    counted as classified, except that an awaiting anchor becomes decided
//!    (at its start) or gave up (elsewhere: `PassOutOfOrder`).
//! 5. A possible hello anywhere but at an awaiting anchor's start is
//!    mid-stream and never parsed. Without an anchor, the payload begins the
//!    stream (as if the SYN had not been seen).
//! 6. Beginning a hello: an SSL 2.0 header (its first 16 bytes at most) whose
//!    every length agrees offers SSL 2 without SNI, so the no-SNI minimum
//!    applies, else it is not TLS; one shorter than its 11 header bytes is
//!    reassembled (rule 7), and decided the same way once they are in, its
//!    header counted as a piece (rule 9); an implausible one then gives up as
//!    not TLS. A TLS record length of 0 or above the maximum is
//!    malformed. A ClientHello message that fits the first record, the
//!    segment and `PAYLOAD_CAP` is decided at once (rule 8); still
//!    undecidable means never (`PassUndecidable`). Whatever this segment
//!    decides alone, an anchor the SYN wrote keeps: refused, or decided
//!    (nothing more to look at). Otherwise reassembly begins.
//! 7. Reassembly begins: an empty buffer at this sequence number, the anchor
//!    says hello (from the SYN or not, as decided in rule 5).
//! 8. Parsing handshake bytes (offset 0 = the handshake type, which must be
//!    1): the fields as far as they are visible (the bytes so far, within the
//!    message and `PAYLOAD_CAP`); a read beyond them waits. `legacy_version`'s
//!    major must be 3, the session id at most 32 bytes, the cipher list even
//!    and not empty, compression methods not empty, the extension block must
//!    end with the message; at most 64 extensions are walked; a second
//!    `server_name` or `supported_versions` is malformed; `server_name` holds
//!    one host_name of 1 to 255 bytes whose lengths agree; `supported_versions`
//!    is a non-empty even list filling its extension, not only GREASE. The
//!    highest version is the highest non-GREASE `supported_versions` entry
//!    when that extension was seen whole, else `legacy_version` capped at
//!    TLS 1.2 once the whole block was seen, else wait. The minimum is the
//!    (lowercased) SNI's own or the zone's, the no-SNI minimum when the whole
//!    block has none, the policy's floor while the SNI is not seen. Below the
//!    minimum: refuse (counted by the version offered); the SNI not seen yet:
//!    wait; else allow.
//! 9. Resuming: a segment beyond the next expected byte gives up
//!    (`PassOutOfOrder`); bytes seen before must be identical (else give up,
//!    `PassOverlapMismatch`) and a segment with nothing new changes nothing
//!    (`PassHelloPartial`). New bytes are appended (up to `STREAM_CAP`), the
//!    record layer is taken apart as far as they go (a header that is not a
//!    handshake record's, or has a bad length, gives up as malformed), the
//!    handshake bytes are parsed again from the start: allowed (the anchor
//!    says decided if the SYN wrote it, else it goes), refused (the anchor
//!    says refused), not decidable ever (give up, counted as such), or wait:
//!    give up as undecidable at the message's end, as too large when a buffer
//!    is full (`PAYLOAD_CAP` handshake bytes, `STREAM_CAP` stream bytes), else
//!    `PassHelloPartial`. A hello decided from more than two pieces (segments
//!    appended plus record headers read) is also counted as split. Giving up
//!    leaves the anchor saying so.
//! 10. Refusing (reset mode, the default): the segment is rewritten into a
//!     RST+ACK and passed, and its sequence number remembered; the same
//!     sequence number refused again is a retransmission, passed unchanged.
//!     Drop mode drops it.
//! 11. The hello is reported (version, lowercased SNI) for every hello allowed
//!     or refused by the policy, a refusal that rule 10 turns into a
//!     retransmission included (rule 2's are not), and for a final
//!     undecidable one whose version was determined.
//!
//! [`judge`] is the model on one segment of a flow whose SYN was not seen;
//! [`Flow`] steps a flow segment by segment.

mod parse;
mod stream;

pub use stream::{Anchor, AnchorState, Flow};

use crate::{frame::flags, xdp::XdpPolicy};
use gateway_common::Stat;

/// Extensions walked before giving up.
const MAX_EXTENSIONS: usize = 64;
/// Largest record length accepted.
const MAX_RECORD_LEN: usize = 16384 + 2048;

/// What the program does with the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Passed unchanged (`XDP_PASS`).
    Pass,
    /// Rewritten into a RST+ACK toward the local stack and passed.
    Reset,
    /// Dropped (`XDP_DROP`).
    Drop,
}

/// What the program learned of a hello it reports: its highest version and SNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The highest version offered (wire value).
    pub max_version: u16,
    /// The lowercased SNI, when it was seen.
    pub sni: Option<String>,
}

/// The model's decision on one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// The outcome counter the filter should bump.
    pub stat: Stat,
    /// The highest version offered, when the filter reports the hello (rule 11).
    pub max_version: Option<u16>,
    /// The lowercased SNI, when the hello is reported and its SNI was seen.
    pub sni: Option<String>,
    /// `SplitAllowed` or `SplitRefused` when a split hello was decided here.
    pub split: Option<Stat>,
    /// What happens to the frame.
    pub action: Action,
}

impl Judgement {
    /// The reported hello as (version, SNI), when there is one.
    pub fn hello(&self) -> Option<(u16, Option<String>)> {
        self.max_version.map(|v| (v, self.sni.clone()))
    }
}

/// Decides a non-empty TCP payload to a TLS port, as the filter must when the
/// payload is the first segment it sees of a flow whose SYN it did not see
/// (PSH+ACK, sequence number irrelevant).
pub fn judge(payload: &[u8], policy: &XdpPolicy) -> Judgement {
    Flow::new(policy).segment(1, flags::PSH | flags::ACK, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        hello::{ClientHello, records},
        tls_version::TlsVersion,
    };
    use gateway_common::version;

    #[test]
    fn modern_hello_passes_and_legacy_is_refused() {
        let policy = XdpPolicy::uniform(TlsVersion::Tls12);
        let j = judge(&ClientHello::modern("API.example.com").record(), &policy);
        assert_eq!(j.stat, Stat::PassAllowed);
        assert_eq!(j.max_version, Some(version::TLS1_3));
        assert_eq!(j.sni.as_deref(), Some("api.example.com"));
        let j = judge(
            &ClientHello::legacy(version::TLS1_0, Some("a.test")).record(),
            &policy,
        );
        assert_eq!(j.stat, Stat::DropTls10);
        assert_eq!(j.action, Action::Reset);
    }

    #[test]
    fn a_hello_over_segments_and_records_is_decided_when_complete() {
        let policy = XdpPolicy::uniform(TlsVersion::Tls12);
        let msg = ClientHello::legacy(version::TLS1_0, Some("a.test")).message();
        let stream = records(&msg, version::TLS1_0, 7);
        let mut flow = Flow::new(&policy);
        let isn = u32::MAX - 3; // the stream's sequence numbers wrap
        assert_eq!(flow.segment(isn, flags::SYN, &[]).stat, Stat::PassControl);
        let start = isn.wrapping_add(1);
        let first = flow.segment(start, flags::ACK, &stream[..20]);
        assert_eq!(first.stat, Stat::PassHelloPartial);
        // An identical retransmission changes nothing; a changed one would give up.
        let again = flow.segment(start, flags::ACK, &stream[..10]);
        assert_eq!(again.stat, Stat::PassHelloPartial);
        let rest = flow.segment(start.wrapping_add(20), flags::ACK, &stream[20..]);
        assert_eq!(rest.stat, Stat::DropTls10);
        assert_eq!(rest.split, Some(Stat::SplitRefused));
        assert_eq!(rest.hello(), Some((version::TLS1_0, Some("a.test".into()))));
        let after = flow.segment(start.wrapping_add(20), flags::ACK, &stream[20..]);
        assert_eq!(after.stat, Stat::DropRetransmit);
        assert_eq!(after.hello(), None);
    }

    #[test]
    fn only_ssl2_shaped_bytes_may_begin_an_ssl2_hello() {
        let policy = XdpPolicy::uniform(TlsVersion::Tls10);
        let hello = crate::hello::sslv2_hello(version::SSL2);
        let j = judge(&hello, &policy);
        assert_eq!(
            (j.stat, j.hello()),
            (Stat::DropSsl2, Some((version::SSL2, None)))
        );
        // At an anchored stream's start, bytes that cannot be one decide the stream.
        let mut flow = Flow::new(&policy);
        flow.segment(9, flags::SYN, &[]);
        assert_eq!(flow.segment(10, 0, &[0x80, 1, 2]).stat, Stat::PassNotTls);
        assert_eq!(flow.anchor().map(|a| a.state), Some(AnchorState::Decided));
        // So do bytes that may be one but are not: nothing more to look at.
        let mut flow = Flow::new(&policy);
        flow.segment(9, flags::SYN, &[]);
        let mut bad = hello.clone();
        bad[10] = 0; // a challenge of 0..255 bytes, not 16..32
        assert_eq!(flow.segment(10, 0, &bad).stat, Stat::PassNotTls);
        assert_eq!(flow.anchor().map(|a| a.state), Some(AnchorState::Decided));
        // A header cut short is reassembled and decided when it is whole.
        for cut in 1..11 {
            let mut flow = Flow::new(&policy);
            flow.segment(9, flags::SYN, &[]);
            let first = flow.segment(10, 0, &hello[..cut]);
            assert_eq!(first.stat, Stat::PassHelloPartial, "cut at {cut}");
            assert_eq!(flow.anchor().map(|a| a.state), Some(AnchorState::Hello));
            let rest = flow.segment(10 + cut as u32, 0, &hello[cut..]);
            assert_eq!(
                (rest.stat, rest.split),
                (Stat::DropSsl2, Some(Stat::SplitRefused))
            );
            assert_eq!(flow.anchor().map(|a| a.state), Some(AnchorState::Refused));
        }
    }

    #[test]
    fn gaps_and_changed_bytes_give_up() {
        let policy = XdpPolicy::uniform(TlsVersion::Tls12);
        let stream = ClientHello::modern("b.test").record();
        let mut flow = Flow::new(&policy);
        assert_eq!(
            flow.segment(100, 0, &stream[..50]).stat,
            Stat::PassHelloPartial
        );
        let gap = flow.segment(151, 0, &stream[51..]);
        assert_eq!(gap.stat, Stat::PassOutOfOrder);
        let mut flow = Flow::new(&policy);
        flow.segment(100, 0, &stream[..50]);
        let mut changed = stream[40..].to_vec();
        changed[0] ^= 1;
        assert_eq!(
            flow.segment(140, 0, &changed).stat,
            Stat::PassOverlapMismatch
        );
        assert_eq!(flow.anchor().map(|a| a.state), Some(AnchorState::GaveUp));
    }
}
