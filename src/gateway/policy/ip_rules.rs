//! A stage's IP allow and deny lists, and the one safe way to decide a request's source address.
//!
//! `X-Forwarded-For` is written by whoever sent the request, so it only counts when the peer
//! that handed us the request is a proxy we trust; then the list is walked from the right (the
//! entries closest to us, appended by our own proxies) past every trusted proxy, and the first
//! address that is not one is the client. A client cannot forge its way past this: whatever it
//! puts on the left of the list is never reached while an untrusted hop stands to its right.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use super::Refusal;
use crate::api::IpRules;

/// A CIDR (or single address) in the rules that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ipRules.{list}: {value:?} is not an IP address or CIDR range")]
pub struct IpRuleError {
    pub list: &'static str,
    pub value: String,
}

/// A stage's validated IP rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
}

fn parse_list(list: &'static str, values: &[String]) -> Result<Vec<IpNet>, IpRuleError> {
    values
        .iter()
        .map(|v| {
            let v = v.trim();
            v.parse::<IpNet>()
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map(|n| normalize_net(n.trunc()))
                .map_err(|_| IpRuleError {
                    list,
                    value: v.to_owned(),
                })
        })
        .collect()
}

/// `::ffff:a.b.c.d` is the IPv4 address a.b.c.d (a dual-stack socket reports IPv4 peers so).
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

impl IpPolicy {
    /// Validates a stage's rules. One bad entry rejects the whole set: serving a stage with half
    /// its deny list would be worse than not serving it.
    pub fn new(rules: &IpRules) -> Result<Self, IpRuleError> {
        Ok(Self {
            allow: parse_list("allow", &rules.allow)?,
            deny: parse_list("deny", &rules.deny)?,
            trusted_proxies: parse_list("trustedProxies", &rules.trusted_proxies)?,
        })
    }

    /// Proxies only, for a stage without allow/deny that still sits behind a load balancer.
    pub fn trusting(proxies: &[String]) -> Result<Self, IpRuleError> {
        Ok(Self {
            trusted_proxies: parse_list("trustedProxies", proxies)?,
            ..Self::default()
        })
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// The request's source address: the peer, or, when the peer is a trusted proxy, the
    /// right-most `X-Forwarded-For` entry that is not a trusted proxy. Also the right value for
    /// `requestContext.identity.sourceIp` / `requestContext.http.sourceIp`.
    pub fn source_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = normalize(peer);
        if !self.is_trusted(client) {
            return client;
        }
        // Several X-Forwarded-For headers are one list, in order.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().map(|s| s.split(',')).into_iter().flatten())
            .collect();
        for hop in hops.into_iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // A garbled entry: the last proxy we trust is the best we know.
                return client;
            };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }

    /// Allowed or 403 `Forbidden`: a deny match always refuses; with an allow list, only its
    /// ranges pass.
    pub fn check(&self, source: IpAddr) -> Result<(), Refusal> {
        let ip = normalize(source);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::Forbidden);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(&ip)) {
            return Err(Refusal::Forbidden);
        }
        Ok(())
    }

    /// Whether the policy restricts anything (the gateway may skip it otherwise).
    pub fn restricts(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(normalize(ip));
    }
    if let Ok(sa) = hop.parse::<std::net::SocketAddr>() {
        return Some(normalize(sa.ip()));
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse().ok())
        .map(normalize)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn rules(allow: &[&str], deny: &[&str], trusted: &[&str]) -> IpPolicy {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        IpPolicy::new(&IpRules {
            allow: s(allow),
            deny: s(deny),
            trusted_proxies: s(trusted),
        })
        .expect("valid rules")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn deny_wins_over_allow_for_v4_and_v6() {
        let p = rules(
            &["10.0.0.0/8", "2001:db8::/32"],
            &["10.1.0.0/16", "2001:db8:bad::/48"],
            &[],
        );
        assert_eq!(p.check(ip("10.2.3.4")), Ok(()));
        assert_eq!(p.check(ip("10.1.3.4")), Err(Refusal::Forbidden));
        assert_eq!(p.check(ip("192.168.1.1")), Err(Refusal::Forbidden));
        assert_eq!(p.check(ip("2001:db8:1::1")), Ok(()));
        assert_eq!(p.check(ip("2001:db8:bad::1")), Err(Refusal::Forbidden));
        assert_eq!(p.check(ip("2001:dead::1")), Err(Refusal::Forbidden));
        // A v4-mapped v6 peer is its v4 address.
        assert_eq!(p.check(ip("::ffff:10.1.0.9")), Err(Refusal::Forbidden));
        assert_eq!(p.check(ip("::ffff:10.2.0.9")), Ok(()));
        assert!(p.restricts());
    }

    #[test]
    fn deny_only_and_single_addresses() {
        let p = rules(&[], &["203.0.113.7", "::ffff:198.51.100.0/120"], &[]);
        assert_eq!(p.check(ip("203.0.113.7")), Err(Refusal::Forbidden));
        assert_eq!(p.check(ip("203.0.113.8")), Ok(()));
        assert_eq!(p.check(ip("198.51.100.20")), Err(Refusal::Forbidden));
        assert!(!IpPolicy::default().restricts());
    }

    #[test]
    fn bad_entries_are_named() {
        let err = IpPolicy::new(&IpRules {
            deny: vec!["10.0.0.0/33".into()],
            ..Default::default()
        })
        .expect_err("invalid");
        assert_eq!(err.list, "deny");
        assert!(err.to_string().contains("10.0.0.0/33"));
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let p = rules(&[], &[], &["10.0.0.0/8", "fd00::/8"]);
        let h = xff(&["198.51.100.1"]);
        // An untrusted peer's header is ignored: the peer is the source.
        assert_eq!(p.source_ip(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        // A trusted peer: the right-most untrusted entry.
        assert_eq!(p.source_ip(ip("10.0.0.2"), &h), ip("198.51.100.1"));
        // A spoofed left-most entry is never reached.
        let h = xff(&["1.1.1.1, 198.51.100.1, 10.0.0.7"]);
        assert_eq!(p.source_ip(ip("10.0.0.2"), &h), ip("198.51.100.1"));
        // Several headers form one list; ports and brackets are tolerated.
        let h = xff(&["1.1.1.1", "[2001:db8::5]:443, fd00::1"]);
        assert_eq!(p.source_ip(ip("fd00::2"), &h), ip("2001:db8::5"));
        let h = xff(&["198.51.100.3:5555"]);
        assert_eq!(p.source_ip(ip("10.0.0.2"), &h), ip("198.51.100.3"));
        // All hops trusted: the left-most.
        let h = xff(&["10.9.9.9, 10.0.0.7"]);
        assert_eq!(p.source_ip(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // Garbage stops the walk at the last trusted hop.
        let h = xff(&["1.1.1.1, nonsense, 10.0.0.7"]);
        assert_eq!(p.source_ip(ip("10.0.0.2"), &h), ip("10.0.0.7"));
        // No header: the peer.
        assert_eq!(
            p.source_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn without_trusted_proxies_the_header_never_counts() {
        let p = rules(&["198.51.100.0/24"], &[], &[]);
        let h = xff(&["198.51.100.1"]);
        let source = p.source_ip(ip("203.0.113.9"), &h);
        assert_eq!(p.check(source), Err(Refusal::Forbidden));
        let p = IpPolicy::trusting(&["127.0.0.1".into()]).expect("valid");
        assert_eq!(p.source_ip(ip("127.0.0.1"), &h), ip("198.51.100.1"));
    }
}
