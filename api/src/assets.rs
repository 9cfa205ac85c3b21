//! Static files served by the binary itself: vendored front-end code (`api/assets/vendor/`, with
//! versions and licences in its README) and CronBox's own scripts, embedded at build time, so no
//! page loads anything from a CDN and everything works offline.
//!
//! Each file is served under a name carrying a hash of its content
//! (`/assets/swagger-ui-bundle.3f9a1c2b4d5e.js`), so it can be cached for a year: a new version
//! is a new name. Pages ask [`url`] for the current name. Text files go out gzip-compressed to
//! clients that accept it (compressed once, on first request, off the async threads).

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

struct Asset {
    /// The logical name: `stem.ext`.
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/swagger-ui-dist/swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/vendor/swagger-ui-dist/swagger-ui.css"),
    },
    Asset {
        name: "docs.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/docs.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/app.js"),
    },
];

/// A year: the longest lifetime caches honour, for content that never changes under its name.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

struct Served {
    asset: &'static Asset,
    /// `stem.<hash>.ext`, the name in the URL.
    file: String,
    etag: String,
    /// Shared, so a response clones a reference count, not half a megabyte.
    gzip: tokio::sync::OnceCell<Option<Bytes>>,
}

fn table() -> &'static [Served] {
    static TABLE: OnceLock<Vec<Served>> = OnceLock::new();
    TABLE.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let hash = hex::encode(&Sha256::digest(asset.bytes)[..6]);
                let file = match asset.name.rsplit_once('.') {
                    Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
                    None => format!("{}.{hash}", asset.name),
                };
                Served {
                    asset,
                    etag: format!("\"{hash}\""),
                    file,
                    gzip: tokio::sync::OnceCell::new(),
                }
            })
            .collect()
    })
}

/// The URL path of the asset called `name` (for example `"docs.js"`); None for a name that is
/// not embedded.
pub fn url(name: &str) -> Option<String> {
    table()
        .iter()
        .find(|s| s.asset.name == name)
        .map(|s| format!("/assets/{}", s.file))
}

/// Whether `Accept-Encoding` allows gzip (a listed `gzip` or `*` whose q is not 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    value.split(',').any(|part| {
        let mut params = part.split(';');
        let coding = params.next().unwrap_or("").trim();
        let refused = params.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).ok()?;
    let out = encoder.finish().ok()?;
    // Only worth it when it saves something.
    (out.len() < bytes.len()).then_some(out)
}

/// A static file by its hashed name.
#[utoipa::path(
    get,
    path = "/assets/{file}",
    tag = "service",
    params(("file" = String, Path, description = "The hashed file name a page links to, e.g. `docs.3f9a1c2b4d5e.js`")),
    responses(
        (status = 200, description = "The file, cacheable for a year (gzip when accepted)", content_type = "application/octet-stream", body = String),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 404, description = "No such file (an old hash after an upgrade, or a typo)", body = crate::openapi::schemas::ErrorResponse)
    )
)]
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(served) = table().iter().find(|s| s.file == file) else {
        return ApiError::NotFound("asset").into_response();
    };
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(served.asset.content_type),
    );
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(etag) = HeaderValue::from_str(&served.etag) {
        out.insert(header::ETAG, etag);
    }
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == served.etag || t.trim() == "*"));
    if not_modified {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    if accepts_gzip(&headers) {
        let bytes = served.asset.bytes;
        let compressed = served
            .gzip
            .get_or_init(|| async move {
                tokio::task::spawn_blocking(move || gzip(bytes).map(Bytes::from))
                    .await
                    .ok()
                    .flatten()
            })
            .await;
        if let Some(body) = compressed {
            out.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            return (StatusCode::OK, out, body.clone()).into_response();
        }
    }
    (StatusCode::OK, out, served.asset.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("a header value"),
        );
        h
    }

    #[test]
    fn every_asset_has_a_hashed_url_that_changes_with_its_content() {
        for a in ASSETS {
            let url = url(a.name).expect("embedded");
            let (stem, ext) = a.name.rsplit_once('.').expect("an extension");
            let hash = url
                .strip_prefix(&format!("/assets/{stem}."))
                .and_then(|rest| rest.strip_suffix(&format!(".{ext}")))
                .expect("stem.hash.ext");
            assert_eq!(hash, hex::encode(&Sha256::digest(a.bytes)[..6]));
        }
        assert!(url("nothing.js").is_none());
    }

    #[test]
    fn gzip_is_sent_only_where_accepted() {
        assert!(accepts_gzip(&with("gzip, deflate, br")));
        assert!(accepts_gzip(&with("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&with("*")));
        assert!(!accepts_gzip(&with("gzip;q=0")));
        assert!(!accepts_gzip(&with("br, identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn compressed_text_is_smaller_and_decompresses_to_the_file() {
        use std::io::Read;
        let js = ASSETS
            .iter()
            .find(|a| a.name == "swagger-ui-bundle.js")
            .expect("bundle");
        let packed = gzip(js.bytes).expect("worth compressing");
        assert!(packed.len() < js.bytes.len() / 2);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut back)
            .expect("valid gzip");
        assert_eq!(back, js.bytes);
    }
}
