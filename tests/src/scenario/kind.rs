//! The kinds of flood the scenario sweeps, and their rate ladders.

use crate::flood::HelloShape;

/// The flood rate that means "as fast as the generator goes" (unpaced).
pub const UNPACED: u64 = u64::MAX;

/// A kind of flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloodKind {
    /// Crafted hello segments from spoofed sources, no handshake; rates in
    /// packets per second. Paced rates are sent with AF_PACKET
    /// ([`crate::flood::stateless`]), the unpaced one as live XDP frames
    /// ([`crate::flood::live`]), the fastest this machine makes, or with
    /// AF_PACKET where the kernel refuses live frames ([`crate::flood::fastest`]).
    Stateless,
    /// Spoofed SYNs, no handshake ever completed; rates in SYNs per second,
    /// sent as the stateless flood's are.
    Syn,
    /// Real TCP connections, each sending one sub-minimum hello shaped so (or
    /// none, [`HelloShape::Idle`]); rates in connections per second.
    Connections(HelloShape),
}

impl FloodKind {
    /// Every kind, in the order the scenario runs them.
    pub const ALL: [FloodKind; 6] = [
        FloodKind::Stateless,
        FloodKind::Syn,
        FloodKind::Connections(HelloShape::Whole),
        FloodKind::Connections(HelloShape::TwoSegments),
        FloodKind::Connections(HelloShape::Records),
        FloodKind::Connections(HelloShape::Idle),
    ];

    /// The kinds a default run sweeps: every one but the idle connections,
    /// which hold the generator's connection slots for their whole wait.
    pub const DEFAULT: [FloodKind; 5] = [
        FloodKind::Stateless,
        FloodKind::Syn,
        FloodKind::Connections(HelloShape::Whole),
        FloodKind::Connections(HelloShape::TwoSegments),
        FloodKind::Connections(HelloShape::Records),
    ];

    /// Short name, for tables, JSON and the plot.
    pub fn key(self) -> &'static str {
        match self {
            FloodKind::Stateless => "stateless",
            FloodKind::Syn => "syn",
            FloodKind::Connections(shape) => shape.key(),
        }
    }

    /// What one unit of its rate is.
    pub fn unit(self) -> &'static str {
        match self {
            FloodKind::Stateless => "packets/s",
            FloodKind::Syn => "SYNs/s",
            FloodKind::Connections(_) => "connections/s",
        }
    }

    /// One line on what it sends.
    pub fn describe(self) -> &'static str {
        match self {
            FloodKind::Stateless => {
                "stateless: TLS 1.0/1.1 hello segments with no handshake, spoofed sources in \
                 198.19.0.0/16 and fd00:0:0:19::/64; paced rates from AF_PACKET sendmmsg, max from \
                 BPF_PROG_RUN live XDP frames (AF_PACKET where the kernel refuses them; the gen \
                 column says which ran)"
            }
            FloodKind::Syn => {
                "syn: spoofed SYNs (MSS, SACK, timestamps, window scale) from random sources in \
                 198.19.0.0/16 and fd00:0:0:19::/64, never completed; paced rates from AF_PACKET, \
                 max from live XDP frames as the stateless flood's"
            }
            FloodKind::Connections(HelloShape::Whole) => {
                "connections: real TCP connections, each one TLS 1.0/1.1 hello in one segment"
            }
            FloodKind::Connections(HelloShape::TwoSegments) => {
                "two-segments (evasive): the hello padded to 1,200 bytes and sent in two TCP segments"
            }
            FloodKind::Connections(HelloShape::Records) => {
                "records (evasive): the hello padded to 1,200 bytes and cut into 256-byte TLS records"
            }
            FloodKind::Connections(HelloShape::Idle) => {
                "idle: real TCP connections that complete the handshake, send nothing and close \
                 after 2 s unless the server ends them first (8,192 open at most)"
            }
        }
    }

    /// Whether its frames come from spoofed sources (no handshake).
    pub fn spoofed(self) -> bool {
        matches!(self, FloodKind::Stateless | FloodKind::Syn)
    }

    /// Whether its connections send a sub-minimum hello, in any shape.
    pub fn hellos(self) -> bool {
        matches!(self, FloodKind::Connections(s) if s != HelloShape::Idle)
    }

    /// Whether it is one of the evasive floods.
    pub fn evasive(self) -> bool {
        matches!(
            self,
            FloodKind::Connections(HelloShape::TwoSegments | HelloShape::Records)
        )
    }
}

/// A rate for display: "max" for [`UNPACED`], else with k/M suffixes.
pub fn rate_label(rate: u64) -> String {
    match rate {
        UNPACED => "max".into(),
        r if r >= 1_000_000 && r % 100_000 == 0 => format!("{}M", r as f64 / 1e6),
        r if r >= 1_000 && r % 100 == 0 => format!("{}k", r as f64 / 1e3),
        r => r.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(rate_label(UNPACED), "max");
        assert_eq!(rate_label(3_000_000), "3M");
        assert_eq!(rate_label(1_500), "1.5k");
        assert_eq!(rate_label(750), "750");
    }
}
