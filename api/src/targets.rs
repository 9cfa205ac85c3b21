//! The creation-time half of the SSRF guard for host names: a URL whose host resolves to an
//! address the policy refuses is refused with 400 `blocked_target` before anything is stored.
//! (Literal addresses are refused while the body is parsed; the executor checks every
//! connection again, since DNS answers can change after creation.)
//!
//! Lookups are bounded: the system resolver runs on the blocking pool, and a lookup that times
//! out keeps its thread until the resolver gives up. So at most [`MAX_LOOKUPS`] run at once in
//! the process (a lookup holds its slot until it really ends, not until we stop waiting), a
//! batch resolves its distinct host names together within one deadline, and a name not
//! resolved in time is let through — the executor checks it at every call anyway.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use cronbox_domain::target::TargetPolicy;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::ApiError;

/// Longest wait for DNS while handling a request (one URL, or all of a batch's).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Lookups in flight in this process at most.
pub const MAX_LOOKUPS: usize = 32;

static LOOKUPS: Semaphore = Semaphore::const_new(MAX_LOOKUPS);

/// The host name and port of `url` when it names a host (not an address) and the policy asks.
fn host_of(targets: &TargetPolicy, url: &str) -> Option<(String, u16)> {
    if targets.is_open() {
        return None;
    }
    let parsed = url::Url::parse(url).ok()?;
    let Some(url::Host::Domain(host)) = parsed.host() else {
        return None;
    };
    Some((host.to_string(), parsed.port_or_known_default().unwrap_or(80)))
}

/// What `host` resolves to, if it does before `deadline`.
async fn resolve(host: String, port: u16, deadline: Instant) -> Option<Vec<SocketAddr>> {
    let slot = tokio::time::timeout_at(deadline, LOOKUPS.acquire()).await.ok()?.ok()?;
    let lookup = tokio::spawn(async move {
        let result = tokio::net::lookup_host((host.as_str(), port)).await;
        drop(slot);
        result.map(|a| a.collect::<Vec<_>>())
    });
    tokio::time::timeout_at(deadline, lookup).await.ok()?.ok()?.ok()
}

fn refused(field: &str, host: &str, addrs: &[SocketAddr], targets: &TargetPolicy) -> Result<(), ApiError> {
    // One private address among public ones is enough: a name that answers with both is how
    // rebinding attacks start.
    match addrs.iter().find(|a| !targets.permits(a.ip())) {
        Some(addr) => Err(ApiError::field(
            field,
            "blocked_target",
            format!(
                "{host} resolves to {}, a private, loopback or reserved address",
                addr.ip()
            ),
        )),
        None => Ok(()),
    }
}

/// Refuses `url` (already parsed and normalised) if its host name resolves to any address the
/// policy refuses.
pub async fn check_resolved(targets: &TargetPolicy, field: &str, url: &str) -> Result<(), ApiError> {
    let Some((host, port)) = host_of(targets, url) else {
        return Ok(());
    };
    match resolve(host.clone(), port, Instant::now() + RESOLVE_TIMEOUT).await {
        Some(addrs) => refused(field, &host, &addrs, targets),
        None => {
            tracing::debug!(host, "target host does not resolve now; the executor will check it");
            Ok(())
        }
    }
}

/// Checks many `(item, field, url)` at once: each distinct host name is resolved once, all of
/// them together within one deadline. Returns the refusals by item.
pub async fn check_many(targets: &TargetPolicy, urls: &[(usize, &'static str, &str)]) -> Vec<(usize, ApiError)> {
    check_many_with(targets, urls, resolve).await
}

/// [`check_many`] with the lookup given (tests pass a slow one).
async fn check_many_with<F, Fut>(
    targets: &TargetPolicy,
    urls: &[(usize, &'static str, &str)],
    lookup: F,
) -> Vec<(usize, ApiError)>
where
    F: Fn(String, u16, Instant) -> Fut,
    Fut: std::future::Future<Output = Option<Vec<SocketAddr>>>,
{
    let mut hosts: HashMap<(String, u16), Option<Vec<SocketAddr>>> = HashMap::new();
    for (_, _, url) in urls {
        if let Some(h) = host_of(targets, url) {
            hosts.entry(h).or_default();
        }
    }
    let deadline = Instant::now() + RESOLVE_TIMEOUT;
    let keys: Vec<(String, u16)> = hosts.keys().cloned().collect();
    // Each lookup also stops at the deadline, whatever `lookup` does.
    let answers = futures::future::join_all(keys.iter().map(|(h, p)| async {
        tokio::time::timeout_at(deadline, lookup(h.clone(), *p, deadline))
            .await
            .ok()
            .flatten()
    }))
    .await;
    for (k, a) in keys.into_iter().zip(answers) {
        hosts.insert(k, a);
    }
    urls.iter()
        .filter_map(|(item, field, url)| {
            let key = host_of(targets, url)?;
            let addrs = hosts.get(&key)?.as_ref()?;
            refused(field, &key.0, addrs, targets).err().map(|e| (*item, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_of_slow_names_is_checked_together_within_one_deadline() {
        let targets = TargetPolicy::guarded();
        let urls: Vec<String> = (0..200).map(|i| format!("https://slow-{i}.example/hook")).collect();
        let mut items: Vec<(usize, &'static str, &str)> =
            urls.iter().enumerate().map(|(i, u)| (i, "url", u.as_str())).collect();
        // One name that answers at once, with a private address: refused.
        items.push((200, "url", "https://inside.example/"));
        let started = Instant::now();
        let refused = check_many_with(&targets, &items, |host, _, _| async move {
            if host == "inside.example" {
                return Some(vec!["10.0.0.1:443".parse().unwrap()]);
            }
            // Given a resolver that takes a minute per name...
            tokio::time::sleep(Duration::from_secs(60)).await;
            Some(vec!["93.184.215.14:443".parse().unwrap()])
        })
        .await;
        // ...the whole batch is decided within one deadline (not 200 of them), slow names are let
        // through for the executor to check, and the private one is refused.
        assert!(
            started.elapsed() < RESOLVE_TIMEOUT + Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].0, 200);
    }
}
