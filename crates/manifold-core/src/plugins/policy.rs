//! The cluster admin's policy for sources: the wrappers the `fdw` plugin
//! may use, and where sources may be.

use std::net::IpAddr;

use crate::api::is_network_host;

/// A wrapper that a cluster admin allowed for the `fdw` plugin, with the
/// option names a spec and a Secret may set.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedWrapper {
    pub extension: String,
    pub wrapper: String,
    #[serde(default)]
    pub server_options: Vec<String>,
    #[serde(default)]
    pub user_mapping_options: Vec<String>,
    /// The server options that name the source's host (mysql_fdw: `host`;
    /// tds_fdw: `servername`; oracle_fdw: `dbserver`): each one set must
    /// be a network endpoint inside the admin's fence, and with a fence,
    /// one must be set. Unset: `host`.
    #[serde(default = "host_option")]
    pub host_options: Vec<String>,
}

pub(super) fn host_option() -> Vec<String> {
    vec!["host".to_owned()]
}

/// Where sources may be: DNS patterns (`db.example.com`, `*.svc.cluster.local`)
/// and CIDRs. Empty means anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostFence {
    names: Vec<String>,
    cidrs: Vec<(IpAddr, u8)>,
}

impl HostFence {
    /// Parses a list of DNS patterns and CIDRs (`10.0.0.0/8`, `::1/128`).
    pub fn parse(entries: &[String]) -> Result<HostFence, String> {
        let mut fence = HostFence::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Some((ip, bits)) = entry.split_once('/') {
                let ip: IpAddr = ip.parse().map_err(|_| format!("{entry:?} is not a CIDR"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(|| format!("{entry:?} is not a CIDR"))?;
                fence.cidrs.push((ip, bits));
            } else if entry.parse::<IpAddr>().is_ok() {
                let ip: IpAddr = entry.parse().unwrap();
                fence.cidrs.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else {
                let name = entry.strip_prefix("*.").unwrap_or(entry);
                if !is_network_host(name) {
                    return Err(format!("{entry:?} is neither a DNS pattern nor a CIDR"));
                }
                fence.names.push(entry.to_ascii_lowercase().trim_end_matches('.').to_owned());
            }
        }
        Ok(fence)
    }

    pub fn is_open(&self) -> bool {
        self.names.is_empty() && self.cidrs.is_empty()
    }

    /// Whether a source host is inside the fence. An IP address must be in
    /// a CIDR; a name must match a pattern (the name is what the database
    /// server resolves, so fence by names whose DNS you control).
    pub fn allows(&self, host: &str) -> bool {
        if self.is_open() {
            return true;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.cidrs.iter().any(|(net, bits)| in_cidr(ip, *net, *bits));
        }
        let host = host.to_ascii_lowercase();
        let host = host.trim_end_matches('.');
        self.names.iter().any(|p| match p.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(suffix) && host[..host.len() - suffix.len()].ends_with('.'),
            None => host == p,
        })
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (ip, net, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= 128 || (ip >> shift) == (net >> shift)
}

/// What a cluster admin decides about sources; a tenant's spec cannot
/// change any of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourcePolicy {
    /// Wrappers the `fdw` plugin may use. postgres_fdw (through the
    /// `postgres` plugin) and the steampipe extensions are always allowed.
    pub wrappers: Vec<AllowedWrapper>,
    pub hosts: HostFence,
    /// Every postgres_fdw server gets this `connect_timeout`, in seconds,
    /// unless the spec sets a lower one.
    pub connect_timeout_secs: u64,
    /// Extensions whose types an imported column may have (`citext`,
    /// `hstore`, `postgis`...). Built-in types are always trusted; any
    /// other type, a domain a database user made above all, is refused
    /// before anything is read through it: reading a value runs its type's
    /// code (a domain's CHECK calls any function) as the reading role.
    pub type_extensions: Vec<String>,
}

impl Default for SourcePolicy {
    fn default() -> Self {
        SourcePolicy { wrappers: Vec::new(), hosts: HostFence::default(), connect_timeout_secs: 10, type_extensions: Vec::new() }
    }
}
