//! Sets of IP addresses and CIDR ranges, looked up by binary search over
//! merged ranges: the cost grows with the logarithm of the set, not its size.

use std::net::IpAddr;

/// A set of IPv4 and IPv6 ranges.
#[derive(Clone, Debug, Default)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

fn merge<T: Copy + Ord + num_like::Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= last.1.successor() => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

mod num_like {
    /// The next value, saturating.
    pub(super) trait Successor {
        fn successor(self) -> Self;
    }
    impl Successor for u32 {
        fn successor(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Successor for u128 {
        fn successor(self) -> Self {
            self.saturating_add(1)
        }
    }
}

fn find<T: Copy + Ord>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|(start, _)| *start <= x);
    i > 0 && ranges[i - 1].1 >= x
}

impl IpSet {
    /// A set from literals like `192.0.2.1`, `198.18.0.0/15` or `fd00::/8`.
    pub fn from_literals<'a>(literals: impl IntoIterator<Item = &'a str>) -> Result<IpSet, String> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for lit in literals {
            let (addr, len) = match lit.split_once('/') {
                Some((a, l)) => (
                    a,
                    Some(
                        l.parse::<u32>()
                            .map_err(|_| format!("bad prefix length in {lit:?}"))?,
                    ),
                ),
                None => (lit, None),
            };
            match addr
                .parse::<IpAddr>()
                .map_err(|_| format!("{lit:?} is not an IP address"))?
            {
                IpAddr::V4(a) => {
                    let len = len.unwrap_or(32);
                    if len > 32 {
                        return Err(format!("{lit:?}: an IPv4 prefix is at most /32"));
                    }
                    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                    let start = u32::from(a) & mask;
                    v4.push((start, start | !mask));
                }
                IpAddr::V6(a) => {
                    let len = len.unwrap_or(128);
                    if len > 128 {
                        return Err(format!("{lit:?}: an IPv6 prefix is at most /128"));
                    }
                    let mask = if len == 0 {
                        0
                    } else {
                        u128::MAX << (128 - len)
                    };
                    let start = u128::from(a) & mask;
                    v6.push((start, start | !mask));
                }
            }
        }
        Ok(IpSet {
            v4: merge(v4),
            v6: merge(v6),
        })
    }

    /// Whether the set holds `ip` (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => find(&self.v4, u32::from(v4)),
                None => find(&self.v6, u128::from(a)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_addresses() {
        let s = IpSet::from_literals([
            "192.0.2.0/24",
            "198.51.100.7",
            "10.0.0.0/8",
            "10.1.0.0/16",
            "2001:db8::/32",
        ])
        .unwrap();
        for (ip, want) in [
            ("192.0.2.0", true),
            ("192.0.2.255", true),
            ("192.0.3.0", false),
            ("198.51.100.7", true),
            ("198.51.100.8", false),
            ("10.200.1.1", true),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
            ("::ffff:192.0.2.9", true),
        ] {
            assert_eq!(s.contains(ip.parse().unwrap()), want, "{ip}");
        }
        assert!(IpSet::from_literals(["1.2.3.4/33"]).is_err());
        assert!(
            IpSet::from_literals(["0.0.0.0/0"])
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
