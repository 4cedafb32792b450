//! The model of one flow: its anchor, the hello being reassembled, and the
//! refused segments, stepped one TCP segment at a time (the module docs of
//! [`super`] state the rules, numbered; the comments here cite them).

use std::collections::HashSet;

use gateway_common::{PAYLOAD_CAP, STREAM_CAP, Stat, version};

use super::{
    Action, Judgement, MAX_RECORD_LEN, Seen,
    parse::{self, Offer, Sni, Verdict},
};
use crate::{config::RefuseMode, frame::flags, xdp::XdpPolicy};

/// Bytes of an SSL 2.0 ClientHello's header.
const SSLV2_HDR_LEN: usize = 11;
/// Largest piece of a record body moved into the hello at once.
const COPY_CHUNK: usize = 512;

/// Where a flow's stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnchorState {
    /// The SYN was seen; the stream has not begun a hello yet.
    Await,
    /// A hello is being reassembled.
    Hello,
    /// The hello was allowed (or the stream began with something else).
    Decided,
    /// The hello was refused: every later segment is a retransmission.
    Refused,
    /// Reassembly gave up (fail open).
    GaveUp,
}

/// What the flow knows of where its stream begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// Sequence number of the stream's first byte.
    pub start_seq: u32,
    /// Where the stream stands.
    pub state: AnchorState,
    /// Whether the flow's SYN wrote the anchor.
    pub from_syn: bool,
}

/// A hello being reassembled: the stream from its first byte, and the
/// handshake bytes taken out of its records.
#[derive(Clone, Debug, Default)]
struct Reassembly {
    start_seq: u32,
    stream: Vec<u8>,
    record_pos: usize,
    record_end: usize,
    hello: Vec<u8>,
    pieces: u32,
}

impl Reassembly {
    /// Where the handshake message ends in `hello` (unknown before its header).
    fn message_end(&self) -> usize {
        match self.hello.get(..4) {
            Some(h) => 4 + (usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3])),
            None => usize::MAX,
        }
    }

    /// Takes the record layer apart as far as the kept stream goes (rule 9b):
    /// `Err` when a record header is not a plausible handshake record's.
    fn walk_records(&mut self) -> Result<(), ()> {
        loop {
            let pos = self.record_pos;
            if pos >= self.stream.len() || self.hello.len() >= self.message_end() {
                return Ok(());
            }
            if pos == self.record_end {
                let Some(h) = self.stream.get(pos..pos + 5) else {
                    return Ok(()); // the header continues in a later segment
                };
                let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
                if h[0] != 22 || h[1] != 3 || len == 0 || len > MAX_RECORD_LEN {
                    return Err(());
                }
                self.record_pos = pos + 5;
                self.record_end = pos + 5 + len;
                self.pieces += 1;
                continue;
            }
            let n = (self.record_end.min(self.stream.len()) - pos)
                .min(COPY_CHUNK)
                .min(PAYLOAD_CAP - self.hello.len());
            if n == 0 {
                return Ok(()); // the handshake buffer is full
            }
            self.hello.extend_from_slice(&self.stream[pos..pos + n]);
            self.record_pos += n;
        }
    }
}

/// How a segment's hello work ended, before the refusal step.
enum Outcome {
    Pass(Stat),
    Allow { split: bool },
    Refuse { stat: Stat, split: bool },
}

/// One flow to a TLS port, as the filter keeps it.
#[derive(Clone, Debug)]
pub struct Flow {
    policy: XdpPolicy,
    anchor: Option<Anchor>,
    buffer: Option<Reassembly>,
    refused: HashSet<u32>,
}

impl Flow {
    /// A flow the filter knows nothing about (its SYN not seen yet, if ever).
    pub fn new(policy: &XdpPolicy) -> Flow {
        Flow {
            policy: policy.clone(),
            anchor: None,
            buffer: None,
            refused: HashSet::new(),
        }
    }

    /// The flow's anchor, if it has one.
    pub fn anchor(&self) -> Option<Anchor> {
        self.anchor
    }

    /// Decides the next segment of the flow (sequence number, TCP flags,
    /// payload), as the filter must, and updates the flow.
    pub fn segment(&mut self, seq: u32, tcp_flags: u8, payload: &[u8]) -> Judgement {
        let mut seen = None;
        let outcome = self.outcome(seq, tcp_flags, payload, &mut seen);
        self.settle(seq, outcome, seen)
    }

    /// Rules 1 to 7 and 9: the outcome before the refusal step, and in `seen`
    /// what the last parse of the hello offered.
    fn outcome(&mut self, seq: u32, tcp_flags: u8, p: &[u8], seen: &mut Option<Seen>) -> Outcome {
        if p.is_empty() || tcp_flags & (flags::SYN | flags::RST) != 0 {
            if tcp_flags & (flags::SYN | flags::ACK | flags::RST) == flags::SYN {
                self.anchor = Some(Anchor {
                    start_seq: seq.wrapping_add(1),
                    state: AnchorState::Await,
                    from_syn: true,
                });
                self.buffer = None;
            }
            return Outcome::Pass(Stat::PassControl);
        }
        match self.anchor.map(|a| a.state) {
            Some(AnchorState::Refused) => return Outcome::Pass(Stat::DropRetransmit),
            Some(AnchorState::Hello) => return self.resume(seq, p, seen),
            _ => {}
        }
        if let Some(stat) = not_a_hello(p) {
            return match self.anchor.as_mut() {
                Some(a) if a.state == AnchorState::Await && seq == a.start_seq => {
                    a.state = AnchorState::Decided;
                    Outcome::Pass(stat)
                }
                Some(a) if a.state == AnchorState::Await => {
                    a.state = AnchorState::GaveUp;
                    Outcome::Pass(Stat::PassOutOfOrder)
                }
                _ => Outcome::Pass(stat),
            };
        }
        let from_syn = match self.anchor {
            Some(a) if a.state != AnchorState::Await || seq != a.start_seq => {
                return Outcome::Pass(Stat::PassMidStream);
            }
            Some(a) => a.from_syn,
            None => false,
        };
        self.begin(seq, from_syn, p, seen)
    }

    /// Rule 6: a payload that may begin the stream's hello. One decided from
    /// this segment alone settles the anchor of a flow whose SYN was seen:
    /// refused, or nothing more to look at.
    fn begin(&mut self, seq: u32, from_syn: bool, p: &[u8], seen: &mut Option<Seen>) -> Outcome {
        let Some(outcome) = self.whole(p, seen) else {
            return self.start_reassembly(seq, from_syn, p, seen);
        };
        if from_syn {
            let state = match outcome {
                Outcome::Refuse { .. } => AnchorState::Refused,
                _ => AnchorState::Decided,
            };
            self.write_anchor(seq, true, state);
        }
        outcome
    }

    /// Rule 6: the outcome of a hello that this segment decides alone (`None`:
    /// it must be reassembled).
    fn whole(&self, p: &[u8], seen: &mut Option<Seen>) -> Option<Outcome> {
        if p[0] & 0x80 != 0 {
            // An SSL 2.0 header cut short is reassembled like a TLS one.
            return (p.len() >= SSLV2_HDR_LEN).then(|| self.sslv2(p, seen));
        }
        if p.len() < 9 {
            return None;
        }
        let record_len = usize::from(u16::from_be_bytes([p[3], p[4]]));
        if record_len == 0 || record_len > MAX_RECORD_LEN {
            return Some(Outcome::Pass(Stat::PassMalformed));
        }
        let message = 4 + (usize::from(p[6]) << 16 | usize::from(p[7]) << 8 | usize::from(p[8]));
        if message > record_len || 5 + message > p.len() || message > PAYLOAD_CAP {
            return None;
        }
        let (verdict, offer) = parse::judge_handshake(&p[5..5 + message], &self.policy);
        *seen = offer;
        Some(match verdict {
            Verdict::Allow => Outcome::Allow { split: false },
            Verdict::Refuse(stat) => Outcome::Refuse { stat, split: false },
            Verdict::Wait => Outcome::Pass(Stat::PassUndecidable),
            Verdict::Pass(stat) => Outcome::Pass(stat),
        })
    }

    /// Rules 6 and 9, SSL 2.0 format: decided from its header (11 bytes),
    /// in this segment or reassembled.
    fn sslv2(&self, p: &[u8], seen: &mut Option<Seen>) -> Outcome {
        self.sslv2_split(p, false, seen)
    }

    /// [`Flow::sslv2`] on the header in `p`, `split` telling the counter.
    fn sslv2_split(&self, p: &[u8], split: bool, seen: &mut Option<Seen>) -> Outcome {
        if !parse::plausible_sslv2(p) {
            return Outcome::Pass(Stat::PassNotTls);
        }
        let offer = Offer {
            max_version: version::SSL2,
            sni: Sni::Absent,
        };
        // The no-SNI minimum is the one that applies: the format has no SNI.
        let (verdict, offer) = parse::apply(offer, &self.policy);
        *seen = offer;
        match verdict {
            Verdict::Refuse(stat) => Outcome::Refuse { stat, split },
            _ => Outcome::Allow { split },
        }
    }

    /// Rule 7: the hello does not fit this segment (or its first record).
    fn start_reassembly(
        &mut self,
        seq: u32,
        from_syn: bool,
        p: &[u8],
        seen: &mut Option<Seen>,
    ) -> Outcome {
        self.buffer = Some(Reassembly {
            start_seq: seq,
            ..Reassembly::default()
        });
        self.write_anchor(seq, from_syn, AnchorState::Hello);
        self.advance(0, p, seen)
    }

    /// Rule 9: a segment of the hello in progress.
    fn resume(&mut self, seq: u32, p: &[u8], seen: &mut Option<Seen>) -> Outcome {
        let buffer = self
            .buffer
            .as_ref()
            .expect("a hello in progress has a buffer");
        let off = seq.wrapping_sub(buffer.start_seq) as usize;
        let kept = buffer.stream.len();
        if off > kept {
            return self.give_up(Stat::PassOutOfOrder);
        }
        if off < kept {
            let overlap = p.len().min(kept - off);
            if p[..overlap] != buffer.stream[off..off + overlap] {
                return self.give_up(Stat::PassOverlapMismatch);
            }
            if off + p.len() <= kept {
                return Outcome::Pass(Stat::PassHelloPartial);
            }
        }
        self.advance(off, p, seen)
    }

    /// Rule 9b: appends the segment's new bytes (it starts at stream offset
    /// `off`), takes them out of their records, parses and settles.
    fn advance(&mut self, off: usize, p: &[u8], seen: &mut Option<Seen>) -> Outcome {
        let buffer = self
            .buffer
            .as_mut()
            .expect("a hello in progress has a buffer");
        let from = buffer.stream.len();
        let want = off + p.len() - from;
        let take = want.min(STREAM_CAP - from);
        buffer
            .stream
            .extend_from_slice(&p[from - off..from - off + take]);
        buffer.pieces += 1;
        if buffer.stream[0] & 0x80 != 0 {
            return self.advance_sslv2(seen);
        }
        if buffer.walk_records().is_err() {
            return self.give_up(Stat::PassMalformed);
        }
        let split = buffer.pieces > 2;
        let (verdict, offer) = parse::judge_handshake(&buffer.hello, &self.policy);
        *seen = offer;
        let full =
            buffer.hello.len() >= PAYLOAD_CAP || take < want || buffer.stream.len() >= STREAM_CAP;
        let ended = buffer.hello.len() >= buffer.message_end();
        match verdict {
            Verdict::Allow => {
                self.buffer = None;
                let anchor = self.anchor.as_mut().expect("reassembly writes the anchor");
                if anchor.from_syn {
                    anchor.state = AnchorState::Decided;
                } else {
                    self.anchor = None;
                }
                Outcome::Allow { split }
            }
            Verdict::Refuse(stat) => {
                self.buffer = None;
                self.set_state(AnchorState::Refused);
                Outcome::Refuse { stat, split }
            }
            Verdict::Pass(stat) => self.give_up(stat),
            Verdict::Wait if ended => self.give_up(Stat::PassUndecidable),
            Verdict::Wait if full => self.give_up(Stat::PassTooLarge),
            Verdict::Wait => Outcome::Pass(Stat::PassHelloPartial),
        }
    }

    /// Rule 9, SSL 2.0 format: waits for the 11-byte header, then decides as
    /// rule 6 does (its header counts as a piece, as a record header does).
    fn advance_sslv2(&mut self, seen: &mut Option<Seen>) -> Outcome {
        let buffer = self
            .buffer
            .as_ref()
            .expect("a hello in progress has a buffer");
        if buffer.stream.len() < SSLV2_HDR_LEN {
            return Outcome::Pass(Stat::PassHelloPartial);
        }
        let split = buffer.pieces + 1 > 2;
        let outcome = self.sslv2_split(&buffer.stream.clone(), split, seen);
        match outcome {
            Outcome::Pass(stat) => self.give_up(stat),
            Outcome::Allow { .. } => {
                self.buffer = None;
                let anchor = self.anchor.as_mut().expect("reassembly writes the anchor");
                if anchor.from_syn {
                    anchor.state = AnchorState::Decided;
                } else {
                    self.anchor = None;
                }
                outcome
            }
            Outcome::Refuse { .. } => {
                self.buffer = None;
                self.set_state(AnchorState::Refused);
                outcome
            }
        }
    }

    /// Stops reassembling (fail open): the anchor remembers, the buffer goes.
    fn give_up(&mut self, stat: Stat) -> Outcome {
        self.buffer = None;
        self.set_state(AnchorState::GaveUp);
        Outcome::Pass(stat)
    }

    /// Sets the state of the anchor reassembly wrote.
    fn set_state(&mut self, state: AnchorState) {
        self.anchor
            .as_mut()
            .expect("reassembly writes the anchor")
            .state = state;
    }

    /// The anchor becomes {start `seq`, `state`, `from_syn`}.
    fn write_anchor(&mut self, seq: u32, from_syn: bool, state: AnchorState) {
        self.anchor = Some(Anchor {
            start_seq: seq,
            state,
            from_syn,
        });
    }

    /// Rules 10 and 11: the refusal step, the action, and what is reported.
    fn settle(&mut self, seq: u32, outcome: Outcome, seen: Option<Seen>) -> Judgement {
        let reset = self.policy.refuse == RefuseMode::Reset;
        let (stat, hello, split, action) = match outcome {
            Outcome::Pass(stat) => {
                let hello = seen.filter(|_| stat == Stat::PassUndecidable);
                (stat, hello, None, Action::Pass)
            }
            Outcome::Allow { split } => (
                Stat::PassAllowed,
                seen,
                split.then_some(Stat::SplitAllowed),
                Action::Pass,
            ),
            Outcome::Refuse { stat, split } => {
                let split = split.then_some(Stat::SplitRefused);
                if !reset {
                    (stat, seen, split, Action::Drop)
                } else if self.refused.insert(seq) {
                    (stat, seen, split, Action::Reset)
                } else {
                    (Stat::DropRetransmit, seen, split, Action::Pass)
                }
            }
        };
        let (max_version, sni) = match hello {
            Some(s) => (Some(s.max_version), s.sni),
            None => (None, None),
        };
        Judgement {
            stat,
            max_version,
            sni,
            split,
            action,
        }
    }
}

/// Rule 4: the classification of a payload that cannot begin a hello, from its
/// first bytes (a short payload is judged on the bytes it has).
fn not_a_hello(p: &[u8]) -> Option<Stat> {
    if p[0] & 0x80 != 0 {
        let sslv2 =
            p.get(2).is_none_or(|&t| t == 1) && p.get(3).is_none_or(|&m| matches!(m, 0 | 3));
        (!sslv2).then_some(Stat::PassNotTls)
    } else if p[0] != 22 || (p.len() >= 2 && p[1] != 3) {
        Some(Stat::PassNotTls)
    } else if p.len() >= 6 && p[5] != 1 {
        Some(Stat::PassNotClientHello)
    } else {
        None
    }
}
