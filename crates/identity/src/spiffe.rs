//! SPIFFE IDs of Kubernetes workloads, as Istio and Linkerd name them.

use std::fmt;

/// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{0:?} is not a SPIFFE ID: it must start with spiffe://")]
    Scheme(String),
    #[error("{id:?}: trust domain {domain:?} is invalid: lowercase letters, digits, '.', '-' and '_' only, 1 to 255 of them")]
    TrustDomain { id: String, domain: String },
    #[error("{0:?}: the path must be /ns/<namespace>/sa/<service account>")]
    Path(String),
    #[error("{id:?}: {what} {name:?} is not a valid Kubernetes name (RFC 1123: lowercase letters, digits, '-' and '.', at most 253, starting and ending alphanumeric)")]
    Name {
        id: String,
        what: &'static str,
        name: String,
    },
}

fn valid_trust_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 255
        && d.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// A namespace (RFC 1123 label) or ServiceAccount name (RFC 1123 subdomain).
fn valid_k8s_name(n: &str, max: usize) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !n.is_empty()
        && n.len() <= max
        && n.bytes().all(|b| alnum(b) || b == b'-' || b == b'.')
        && n.bytes().next().is_some_and(alnum)
        && n.bytes().last().is_some_and(alnum)
}

impl SpiffeId {
    /// A checked ID: the trust domain and both names must be valid.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdError> {
        let id = SpiffeId {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        };
        let text = id.to_string();
        if !valid_trust_domain(trust_domain) {
            return Err(IdError::TrustDomain {
                id: text,
                domain: trust_domain.to_string(),
            });
        }
        // A namespace is a label (63, no dots); a ServiceAccount name a subdomain (253).
        if !valid_k8s_name(namespace, 63) || namespace.contains('.') {
            return Err(IdError::Name {
                id: text,
                what: "namespace",
                name: namespace.to_string(),
            });
        }
        if !valid_k8s_name(service_account, 253) {
            return Err(IdError::Name {
                id: text,
                what: "service account",
                name: service_account.to_string(),
            });
        }
        Ok(id)
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdError::Scheme(s.to_string()))?;
        let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] => SpiffeId::new(domain, ns, sa).map_err(|e| match e {
                // Report the text as given, not as re-assembled.
                IdError::TrustDomain { domain, .. } => IdError::TrustDomain {
                    id: s.to_string(),
                    domain,
                },
                IdError::Name { what, name, .. } => IdError::Name {
                    id: s.to_string(),
                    what,
                    name,
                },
                other => other,
            }),
            _ if !valid_trust_domain(domain) => Err(IdError::TrustDomain {
                id: s.to_string(),
                domain: domain.to_string(),
            }),
            _ => Err(IdError::Path(s.to_string())),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_kubernetes_identities() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/checkout").unwrap();
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.namespace, "shop");
        assert_eq!(id.service_account, "checkout");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/checkout");
        assert_eq!(
            SpiffeId::new("cluster.local", "shop", "checkout").unwrap(),
            id
        );
    }

    #[test]
    fn refuses_what_is_not_a_workload_identity() {
        let err = |s: &str| SpiffeId::parse(s).unwrap_err();
        assert!(matches!(
            err("https://cluster.local/ns/a/sa/b"),
            IdError::Scheme(_)
        ));
        assert!(matches!(
            err("spiffe://cluster.local/ns/a"),
            IdError::Path(_)
        ));
        assert!(matches!(
            err("spiffe://cluster.local/ns/a/sa/b/c"),
            IdError::Path(_)
        ));
        assert!(matches!(
            err("spiffe://cluster.local/sa/b/ns/a"),
            IdError::Path(_)
        ));
        assert!(matches!(
            err("spiffe://Cluster.Local/ns/a/sa/b"),
            IdError::TrustDomain { .. }
        ));
        assert!(matches!(
            err("spiffe:///ns/a/sa/b"),
            IdError::TrustDomain { .. }
        ));
        let e = err("spiffe://cluster.local/ns/A_b/sa/b");
        assert_eq!(
            e,
            IdError::Name {
                id: "spiffe://cluster.local/ns/A_b/sa/b".into(),
                what: "namespace",
                name: "A_b".into()
            }
        );
        assert!(e.to_string().contains("namespace \"A_b\""), "{e}");
        assert!(matches!(
            err("spiffe://cluster.local/ns/a.b/sa/b"),
            IdError::Name {
                what: "namespace",
                ..
            }
        ));
        assert!(matches!(
            err("spiffe://cluster.local/ns/a/sa/-b"),
            IdError::Name {
                what: "service account",
                ..
            }
        ));
        assert!(matches!(
            err("spiffe://cluster.local/ns//sa/b"),
            IdError::Name { .. }
        ));
    }
}
