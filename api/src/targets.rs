//! The creation-time half of the SSRF guard for host names: a URL whose host resolves to an
//! address the policy refuses is refused with 400 `blocked_target` before anything is stored.
//! (Literal addresses are refused while the body is parsed; the executor checks every
//! connection again, since DNS answers can change after creation.)

use std::time::Duration;

use cronbox_domain::target::TargetPolicy;

use crate::error::ApiError;

/// Longest wait for DNS while handling a request. A name that cannot be resolved in time is let
/// through: it may exist later, and the executor checks it at every call.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Refuses `url` (already parsed and normalised) if its host name resolves to any address the
/// policy refuses. One private address among public ones is enough: a name that answers with
/// both is how rebinding attacks start.
pub async fn check_resolved(targets: &TargetPolicy, field: &str, url: &str) -> Result<(), ApiError> {
    if targets.is_open() {
        return Ok(());
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return Ok(());
    };
    let Some(url::Host::Domain(host)) = parsed.host() else {
        return Ok(());
    };
    let port = parsed.port_or_known_default().unwrap_or(80);
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port))).await;
    let Ok(Ok(addrs)) = lookup else {
        tracing::debug!(host, "target host does not resolve now; the executor will check it");
        return Ok(());
    };
    for addr in addrs {
        if !targets.permits(addr.ip()) {
            return Err(ApiError::field(
                field,
                "blocked_target",
                format!(
                    "{host} resolves to {}, a private, loopback or reserved address",
                    addr.ip()
                ),
            ));
        }
    }
    Ok(())
}
