//! Which addresses a user's URL may reach (the SSRF guard's rules). Pure: the API applies them
//! to literal hosts and to what a name resolves to at creation, the executor's resolver and
//! redirect policy to every connection it makes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address block, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDRESS/PREFIX, e.g. 10.1.0.0/16")]
pub struct CidrError(String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(err)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are their IPv4 address for every rule.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The operator's choice: guard on (the default), off, or on with some private blocks allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    allow_all: bool,
    allowed: Vec<Cidr>,
}

impl TargetPolicy {
    /// Only public addresses.
    pub fn guarded() -> Self {
        Self::default()
    }

    /// Everything (`CRONBOX_ALLOW_PRIVATE_TARGETS=1`).
    pub fn open() -> Self {
        Self {
            allow_all: true,
            allowed: Vec::new(),
        }
    }

    /// Public addresses plus these blocks (`CRONBOX_ALLOWED_TARGET_CIDRS`).
    pub fn allowing(allowed: Vec<Cidr>) -> Self {
        Self {
            allow_all: false,
            allowed,
        }
    }

    /// True when no address is ever refused (nothing to resolve or check).
    pub fn is_open(&self) -> bool {
        self.allow_all
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_all || !is_forbidden_ip(ip) || self.allowed.iter().any(|c| c.contains(ip))
    }
}

/// Addresses that are not on the public internet: loopback, private, link-local (cloud metadata
/// included), CGNAT, unique- and site-local IPv6, multicast, unspecified, broadcast, reserved
/// and documentation ranges, and the IPv6 forms that embed such an IPv4 address (mapped,
/// compatible, NAT64, 6to4).
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v6(v6: Ipv6Addr) -> bool {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    let seg = v6.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
    if seg[..6].iter().all(|s| *s == 0) && !v6.is_loopback() && !v6.is_unspecified() {
        return is_forbidden_v4(embedded(seg[6], seg[7]));
    }
    // NAT64 64:ff9b::/96 and the local-use 64:ff9b:1::/48 reach the embedded IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b {
        return seg[2] != 0 || is_forbidden_v4(embedded(seg[6], seg[7]));
    }
    // 6to4 2002::/16 carries an IPv4 address in its next 32 bits.
    if seg[0] == 0x2002 {
        return is_forbidden_v4(embedded(seg[1], seg[2]));
    }
    v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated)
        || (seg[0] == 0x0100 && seg[1..4].iter().all(|s| *s == 0)) // discard-only 100::/64
        || (seg[0] == 0x2001 && seg[1] == 0) // Teredo 2001::/32 (tunnels to an IPv4 host)
        || (seg[0] == 0x2001 && (seg[1] & 0xfff0) == 0x0010) // ORCHID 2001:10::/28
        || (seg[0] == 0x2001 && seg[1] == 0x0002 && seg[2] == 0) // benchmarking 2001:2::/48
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation 2001:db8::/32
        || (seg[0] == 0x3fff && (seg[1] & 0xf000) == 0) // documentation 3fff::/20
        || (seg[0] & 0xe000) != 0x2000 // outside global unicast 2000::/3
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast (deprecated)
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240 // reserved 240/4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_and_special_addresses_are_forbidden() {
        for bad in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.1",
            "192.88.99.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "2001::1",
            "2001:db8::1",
            "2001:10::1",
            "2001:2::1",
            "100::1",
            "3fff::1",
            "4000::1",
        ] {
            assert!(is_forbidden_ip(ip(bad)), "{bad} should be forbidden");
        }
        for good in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.88.100.1",
            "2606:4700:4700::1111",
            "2a00:1450:4010::8a",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert!(!is_forbidden_ip(ip(good)), "{good} should be allowed");
        }
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "mapped forms match their IPv4 block");
        assert!(!c.contains(ip("10.2.0.1")));
        let c: Cidr = "fd00::/8".parse().unwrap();
        assert!(c.contains(ip("fd12::1")) && !c.contains(ip("fe80::1")));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert!(one.contains(ip("127.0.0.2")) && !one.contains(ip("127.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("127.0.0.1")));
        for bad in ["10.0.0.0/33", "fd00::/129", "nope", "10.0.0/8", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn policies() {
        let guarded = TargetPolicy::guarded();
        assert!(!guarded.permits(ip("127.0.0.1")) && guarded.permits(ip("8.8.8.8")));
        assert!(TargetPolicy::open().permits(ip("127.0.0.1")));
        let some = TargetPolicy::allowing(vec!["10.1.0.0/16".parse().unwrap()]);
        assert!(some.permits(ip("10.1.2.3")) && !some.permits(ip("10.2.0.1")) && !some.permits(ip("127.0.0.1")));
        assert!(!some.is_open());
    }
}
