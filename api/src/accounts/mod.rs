//! Accounts and sessions: sign-up, login, token refresh with rotation and reuse detection,
//! logout, e-mail verification and password reset.
//!
//! - [`password`]: argon2id hashing on the blocking pool.
//! - [`jwt`]: 15-minute HS256 access tokens.
//! - [`throttle`]: failed-login limits per account and per address, shared through PostgreSQL.
//!
//! Refresh tokens are `cbr_<session id>_<secret>`: the session (a token family, its own
//! aggregate) is found from the token itself, and only the SHA-256 of the secret is stored.

pub mod jwt;
pub mod password;
pub mod throttle;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use cronbox_domain::channel::Language;
use cronbox_domain::session::SessionCommand;
use cronbox_domain::user::{check_name, check_password, normalize_email, User, UserCommand, UserError};
use cronbox_domain::workspace::hash_api_key as sha256_hex;
use rand::RngCore;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use cronbox_store::aggregates::Stores;

use crate::error::{from_aggregate, ApiError};
use crate::input::{Fields, JsonObject};
use crate::AppState;

pub use jwt::JwtKey;

pub const REFRESH_TTL_DAYS: i64 = 30;
const VERIFY_TTL_HOURS: i64 = 48;
const RESET_TTL_MINUTES: i64 = 60;
/// A reservation whose registration never completed (crash between the two writes) is taken
/// over after this long.
const STALE_RESERVATION_MINUTES: i64 = 5;

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn new_refresh_token(session: Uuid) -> String {
    format!("cbr_{}_{}", session.simple(), random_hex(32))
}

fn session_of_refresh_token(token: &str) -> Option<Uuid> {
    let rest = token.strip_prefix("cbr_")?;
    let (id, secret) = rest.split_once('_')?;
    (secret.len() == 64).then_some(())?;
    Uuid::try_parse(id).ok()
}

fn required(f: &mut Fields, field: &str) -> Result<String, ApiError> {
    f.string(field)?
        .ok_or_else(|| ApiError::field(field, "required", format!("{field} is required")))
}

fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "name": u.name,
        "email_verified": u.email_verified,
        "superuser": u.superuser,
        "created_at": u.created_at,
    })
}

fn user_error(e: UserError) -> ApiError {
    match e {
        UserError::AlreadyExists => ApiError::Conflict {
            code: "email_taken",
            message: "an account with this email already exists".into(),
        },
        UserError::NotFound => ApiError::NotFound("user"),
    }
}

/// The signing key: `CRONBOX_JWT_SECRET` if configured, else one generated once per database so
/// that every API process of the installation shares it.
pub async fn load_jwt_key(pool: &PgPool, configured: Option<&str>) -> Result<JwtKey, sqlx::Error> {
    if let Some(secret) = configured {
        return Ok(JwtKey::new(secret.as_bytes()));
    }
    sqlx::query("INSERT INTO server_secrets (name, value) VALUES ('jwt_hs256', $1) ON CONFLICT (name) DO NOTHING")
        .bind(random_hex(32))
        .execute(pool)
        .await?;
    let secret: String = sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = 'jwt_hs256'")
        .fetch_one(pool)
        .await?;
    Ok(JwtKey::new(secret.as_bytes()))
}

/// Registers a user (also used by `cronbox admin create-user`). Returns the user.
pub async fn register_user(
    stores: &Stores,
    email: &str,
    name: &str,
    password: String,
    superuser: bool,
) -> Result<User, ApiError> {
    // Hashed first: a refusal for load (503) must not leave the address reserved.
    let password_hash = password::hash(password).await?;
    let user_id = Uuid::new_v4();
    if !reserve_email(stores, email, user_id).await? {
        return Err(user_error(UserError::AlreadyExists));
    }
    let cmd = UserCommand::Register {
        user_id,
        email: email.to_string(),
        name: name.to_string(),
        password_hash,
        superuser,
        at: Utc::now(),
    };
    stores
        .users
        .execute(&user_id.to_string(), cmd)
        .await
        .map_err(|e| from_aggregate(e, user_error))?;
    let (user, _) = stores
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user_id = %user_id, "user registered");
    Ok(user)
}

async fn reserve_email(stores: &Stores, email: &str, user_id: Uuid) -> Result<bool, ApiError> {
    let pool = &stores.pool;
    for _ in 0..2 {
        let inserted =
            sqlx::query("INSERT INTO user_emails (email, user_id) VALUES ($1, $2) ON CONFLICT (email) DO NOTHING")
                .bind(email)
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected();
        if inserted == 1 {
            return Ok(true);
        }
        let held: Option<(Uuid, DateTime<Utc>)> =
            sqlx::query_as("SELECT user_id, created_at FROM user_emails WHERE email = $1")
                .bind(email)
                .fetch_optional(pool)
                .await?;
        let Some((holder, since)) = held else { continue };
        let (existing, _) = stores
            .users
            .load(&holder.to_string())
            .await
            .map_err(ApiError::internal)?;
        if existing.id.is_some() || since > Utc::now() - Duration::minutes(STALE_RESERVATION_MINUTES) {
            return Ok(false);
        }
        sqlx::query("DELETE FROM user_emails WHERE email = $1 AND user_id = $2")
            .bind(email)
            .bind(holder)
            .execute(pool)
            .await?;
    }
    Ok(false)
}

/// Stores a single-use token (its hash) and queues the mail that carries it, in `lang`.
async fn mail_token(
    state: &AppState,
    user: &User,
    kind: &str,
    ttl: Duration,
    lang: Language,
    mut params: Value,
) -> Result<(), ApiError> {
    let token = random_hex(32);
    params["token"] = json!(token);
    let mut tx = state.pool.begin().await?;
    let queued = cronbox_notify::outbox::queue(&mut tx, &user.email, kind, lang, params, &state.public_url)
        .await
        .map_err(mail_error)?;
    if !queued {
        // Nothing sent, so no new token either: the previous ones keep working.
        return Ok(());
    }
    // The newest link is the only one that works: a mail read by someone else earlier (a
    // shared inbox, a forwarded message) is no longer a way in.
    sqlx::query("UPDATE auth_tokens SET used_at = now() WHERE user_id = $1 AND kind = $2 AND used_at IS NULL")
        .bind(user.id)
        .bind(kind)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO auth_tokens (token_hash, kind, user_id, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(sha256_hex(&token))
        .bind(kind)
        .bind(user.id)
        .bind(Utc::now() + ttl)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) fn mail_error(e: cronbox_notify::outbox::OutboxError) -> ApiError {
    match e {
        cronbox_notify::outbox::OutboxError::Database(d) => d.into(),
        other => ApiError::internal(other),
    }
}

/// Marks a mailed token used and returns its user, if it exists, is unused and unexpired.
/// Using one ends every other outstanding token of the same kind of its user.
async fn consume_token(pool: &PgPool, kind: &str, token: &str) -> Result<Option<Uuid>, ApiError> {
    let mut tx = pool.begin().await?;
    let user: Option<Uuid> = sqlx::query_scalar(
        "UPDATE auth_tokens SET used_at = now()
          WHERE token_hash = $1 AND kind = $2 AND used_at IS NULL AND expires_at > now()
          RETURNING user_id",
    )
    .bind(sha256_hex(token))
    .bind(kind)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(user) = user {
        sqlx::query("UPDATE auth_tokens SET used_at = now() WHERE user_id = $1 AND kind = $2 AND used_at IS NULL")
            .bind(user)
            .bind(kind)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(user)
}

async fn send_verification(state: &AppState, user: &User, lang: Language) -> Result<(), ApiError> {
    let params = json!({"hours": VERIFY_TTL_HOURS});
    mail_token(
        state,
        user,
        "verify_email",
        Duration::hours(VERIFY_TTL_HOURS),
        lang,
        params,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/v1/auth/register",
    tag = "accounts",
    summary = "Sign up; a verification mail is queued",
    request_body = crate::openapi::schemas::Register,
    responses((status = 201, description = "The user", body = crate::openapi::schemas::Me), (status = 409, description = "`email_taken`", body = crate::openapi::schemas::ErrorResponse), (status = 503, description = "`busy`: password hashing is at capacity; retry after `Retry-After` seconds", body = crate::openapi::schemas::ErrorResponse))
)]
pub async fn register(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut f = Fields(body);
    let email = required(&mut f, "email")?;
    let password = required(&mut f, "password")?;
    let name = required(&mut f, "name")?;
    f.finish()?;
    let lang = crate::notifications::header_language(&headers);
    let user = sign_up(&state, &email, &name, password, lang).await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))))
}

/// Signs a person up (the API's register and the web app's sign-up page): checks the fields,
/// registers the user and mails the verification link in `lang`.
pub async fn sign_up(
    state: &AppState,
    email: &str,
    name: &str,
    password: String,
    lang: Language,
) -> Result<User, ApiError> {
    let email = normalize_email(email)?;
    check_password("password", &password)?;
    let name = check_name(name)?;
    let user = register_user(&state.stores, &email, &name, password, false).await?;
    send_verification(state, &user, lang).await?;
    Ok(user)
}

/// Starts a browser session for `user`: the returned token is the session cookie's value.
/// It is the same session aggregate as the API's; its token never rotates (see
/// [`Session::accepts`](cronbox_domain::session::Session::accepts)).
pub async fn start_browser_session(state: &AppState, user_id: Uuid) -> Result<String, ApiError> {
    let session_id = Uuid::new_v4();
    let token = new_refresh_token(session_id).replacen("cbr_", "cbs_", 1);
    begin_session(state, session_id, user_id, &token).await?;
    tracing::info!(user_id = %user_id, session_id = %session_id, "browser session started");
    Ok(token)
}

/// The session a browser cookie names (its id travels in the token, like a refresh token's).
pub fn session_of_cookie(token: &str) -> Option<Uuid> {
    session_of_refresh_token(&token.replacen("cbs_", "cbr_", 1)).filter(|_| token.starts_with("cbs_"))
}

/// The user behind a browser's session cookie, while the session lives and the password has
/// not changed since it began.
pub async fn user_from_cookie(state: &AppState, token: &str) -> Result<UserCaller, ApiError> {
    let session_id = session_of_cookie(token).ok_or(ApiError::InvalidToken)?;
    let (session, _) = state
        .stores
        .sessions
        .load(&session_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    let now = Utc::now();
    if !session.accepts(&sha256_hex(token), now) {
        return Err(ApiError::InvalidToken);
    }
    let user_id = session.user_id.ok_or(ApiError::InvalidToken)?;
    let (user, _) = state
        .stores
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if !user.is_active() || session.predates(user.sessions_valid_after()) {
        return Err(ApiError::InvalidToken);
    }
    Ok(UserCaller {
        user_id,
        session_id,
        user,
    })
}

/// Records a person's console language and time zone (None: follow the browser / workspace).
pub async fn set_preferences(
    state: &AppState,
    user_id: Uuid,
    language: Option<Language>,
    timezone: Option<String>,
) -> Result<User, ApiError> {
    if let Some(tz) = &timezone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(ApiError::field(
                "timezone",
                "invalid_timezone",
                format!("unknown time zone {tz}"),
            ));
        }
    }
    let id = user_id.to_string();
    let cmd = UserCommand::SetPreferences {
        language,
        timezone,
        at: Utc::now(),
    };
    state
        .stores
        .users
        .execute(&id, cmd)
        .await
        .map_err(|e| from_aggregate(e, user_error))?;
    let (user, _) = state.stores.users.load(&id).await.map_err(ApiError::internal)?;
    Ok(user)
}

/// The token of an `Authorization: Bearer …` header. Every credential (access token, API key)
/// arrives this way; the layers above only decide what it names.
pub(crate) fn bearer(parts: &axum::http::request::Parts) -> Option<&str> {
    bearer_of(&parts.headers)
}

pub(crate) fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// Starts a session for `user` and answers with its first token pair.
async fn start_session(state: &AppState, user_id: Uuid) -> Result<Json<Value>, ApiError> {
    let session_id = Uuid::new_v4();
    let refresh = new_refresh_token(session_id);
    let now = begin_session(state, session_id, user_id, &refresh).await?;
    Ok(tokens(state, user_id, session_id, refresh, now))
}

/// Records a new session of `user_id` whose token is `token` (only its hash is stored);
/// returns when it began.
async fn begin_session(
    state: &AppState,
    session_id: Uuid,
    user_id: Uuid,
    token: &str,
) -> Result<DateTime<Utc>, ApiError> {
    let now = Utc::now();
    let cmd = SessionCommand::Start {
        session_id,
        user_id,
        token_hash: sha256_hex(token),
        expires_at: now + Duration::days(REFRESH_TTL_DAYS),
        at: now,
    };
    state
        .stores
        .sessions
        .execute(&session_id.to_string(), cmd)
        .await
        .map_err(ApiError::internal)?;
    Ok(now)
}

fn tokens(state: &AppState, user: Uuid, session: Uuid, refresh: String, now: DateTime<Utc>) -> Json<Value> {
    Json(json!({
        "access_token": state.jwt.issue(user, session, now),
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": jwt::ACCESS_TTL_SECONDS,
    }))
}

#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "accounts",
    summary = "Log in",
    request_body = crate::openapi::schemas::Login,
    responses((status = 200, description = "A new session", body = crate::openapi::schemas::TokenPair), (status = 401, description = "`invalid_credentials` (the same for every failure)", body = crate::openapi::schemas::ErrorResponse), (status = 429, description = "Too many failed attempts for this account or address", body = crate::openapi::schemas::ErrorResponse), (status = 503, description = "`busy`: password hashing is at capacity; retry after `Retry-After` seconds", body = crate::openapi::schemas::ErrorResponse))
)]
pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let mut f = Fields(body);
    let email = required(&mut f, "email")?;
    let password = required(&mut f, "password")?;
    f.finish()?;
    let user_id = check_credentials(&state, &email, password, peer.ip()).await?;
    start_session(&state, user_id).await
}

/// The user whose e-mail and password these are (the API's login and the web app's), with
/// failed attempts limited per account and per address. Every failure is the same
/// `invalid_credentials`, and takes as long as a success.
pub async fn check_credentials(
    state: &AppState,
    email: &str,
    password: String,
    peer: std::net::IpAddr,
) -> Result<Uuid, ApiError> {
    // A malformed address cannot name an account; answering as for a wrong password keeps the
    // response the same for every failure.
    let email = normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase());
    let account_key = format!("login:account:{email}");
    let keys = [
        (account_key.clone(), throttle::ACCOUNT_LIMIT),
        (format!("login:address:{peer}"), throttle::ADDRESS_LIMIT),
    ];
    let attempt = throttle::reserve(&state.pool, &keys).await?;

    let holder: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM user_emails WHERE email = $1")
        .bind(&email)
        .fetch_optional(&state.pool)
        .await?;
    let user = match holder {
        Some(id) => Some(
            state
                .stores
                .users
                .load(&id.to_string())
                .await
                .map_err(ApiError::internal)?
                .0,
        ),
        None => None,
    };
    let stored = user
        .as_ref()
        .filter(|u| u.id.is_some())
        .map_or(password::DUMMY_HASH.to_string(), |u| u.password_hash.clone());
    let ok = password::verify(password, stored).await?;
    let Some(user) = user.filter(|u| u.id.is_some() && ok) else {
        tracing::info!(peer = %peer, "login failed");
        return Err(ApiError::InvalidCredentials);
    };
    let user_id = user.id.unwrap_or_default();
    // Told only to whoever knows the password: the account exists, and an operator shut it.
    if !user.is_active() {
        tracing::info!(user_id = %user_id, "login refused: account deactivated");
        return Err(ApiError::Forbidden("this account has been deactivated".into()));
    }
    attempt.succeeded(&state.pool, &account_key).await?;
    tracing::info!(user_id = %user_id, "login");
    Ok(user_id)
}

#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "accounts",
    summary = "Exchange a refresh token for a new pair (the old one stops working)",
    request_body = crate::openapi::schemas::RefreshRequest,
    responses((status = 200, description = "The new pair", body = crate::openapi::schemas::TokenPair), (status = 401, description = "`invalid_token`; reuse of a rotated token also ends the session", body = crate::openapi::schemas::ErrorResponse))
)]
pub async fn refresh(State(state): State<AppState>, JsonObject(body): JsonObject) -> Result<Json<Value>, ApiError> {
    let mut f = Fields(body);
    let presented = required(&mut f, "refresh_token")?;
    f.finish()?;
    let session_id = session_of_refresh_token(&presented).ok_or(ApiError::InvalidToken)?;
    let id = session_id.to_string();
    let next = new_refresh_token(session_id);
    let now = Utc::now();
    let cmd = SessionCommand::Refresh {
        presented_hash: sha256_hex(&presented),
        new_hash: sha256_hex(&next),
        expires_at: now + Duration::days(REFRESH_TTL_DAYS),
        at: now,
    };
    state
        .stores
        .sessions
        .execute(&id, cmd)
        .await
        .map_err(|e| from_aggregate(e, |_| ApiError::InvalidToken))?;
    let (session, _) = state.stores.sessions.load(&id).await.map_err(ApiError::internal)?;
    if session.revoked {
        tracing::warn!(session_id = %session_id, "refresh token reused; session revoked");
        return Err(ApiError::InvalidToken);
    }
    let user_id = session.user_id.ok_or(ApiError::InvalidToken)?;
    let (user, _) = state
        .stores
        .users
        .load(&user_id.to_string())
        .await
        .map_err(ApiError::internal)?;
    if session.predates(user.sessions_valid_after()) {
        revoke(&state, session_id, "password changed").await?;
        return Err(ApiError::InvalidToken);
    }
    if !user.is_active() {
        revoke(&state, session_id, "account deactivated").await?;
        return Err(ApiError::InvalidToken);
    }
    Ok(tokens(&state, user_id, session_id, next, now))
}

/// Ends a session (logout, or a session listed on the profile page).
pub async fn revoke(state: &AppState, session: Uuid, reason: &str) -> Result<(), ApiError> {
    let cmd = SessionCommand::Revoke {
        reason: reason.into(),
        at: Utc::now(),
    };
    state
        .stores
        .sessions
        .execute(&session.to_string(), cmd)
        .await
        .map_err(|e| from_aggregate(e, |_| ApiError::InvalidToken))
}

/// Ends the caller's session: its refresh token stops working and so do its access tokens.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "accounts",
    summary = "End the session of this access token",
    responses((status = 204, description = "Logged out")),
    security(("access_token" = []))
)]
pub async fn logout(State(state): State<AppState>, user: UserCaller) -> Result<StatusCode, ApiError> {
    revoke(&state, user.session_id, "logout").await?;
    tracing::info!(user_id = %user.user_id, session_id = %user.session_id, "logout");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "accounts",
    summary = "The logged-in user",
    responses((status = 200, description = "The user", body = crate::openapi::schemas::Me)),
    security(("access_token" = []))
)]
pub async fn me(user: UserCaller) -> Json<Value> {
    Json(user_json(&user.user))
}

#[utoipa::path(
    post,
    path = "/v1/auth/verify-email",
    tag = "accounts",
    summary = "Confirm the e-mail address with the mailed token",
    request_body = crate::openapi::schemas::VerifyEmail,
    responses((status = 200, description = "The user", body = crate::openapi::schemas::Me))
)]
pub async fn verify_email(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<Json<Value>, ApiError> {
    let mut f = Fields(body);
    let token = required(&mut f, "token")?;
    f.finish()?;
    let user = verify_with(&state, &token).await?;
    Ok(Json(user_json(&user)))
}

/// Verifies the address the token was mailed to (the API route and the mail's link page).
pub(crate) async fn verify_with(state: &AppState, token: &str) -> Result<User, ApiError> {
    let user_id = consume_token(&state.pool, "verify_email", token)
        .await?
        .ok_or_else(|| ApiError::field("token", "invalid_token", "the token is unknown, used or expired"))?;
    let id = user_id.to_string();
    state
        .stores
        .users
        .execute(&id, UserCommand::VerifyEmail { at: Utc::now() })
        .await
        .map_err(|e| from_aggregate(e, user_error))?;
    let (user, _) = state.stores.users.load(&id).await.map_err(ApiError::internal)?;
    Ok(user)
}

/// Always 202, whether or not the address has an account.
#[utoipa::path(
    post,
    path = "/v1/auth/password-reset",
    tag = "accounts",
    summary = "Mail a password-reset token (always 202, known address or not)",
    request_body = crate::openapi::schemas::PasswordResetRequest,
    responses((status = 202, description = "Accepted"))
)]
pub async fn request_password_reset(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<StatusCode, ApiError> {
    let mut f = Fields(body);
    let email = required(&mut f, "email")?;
    f.finish()?;
    mail_password_reset(&state, &email, crate::notifications::header_language(&headers)).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Mails a reset link if `email` has an account; says nothing either way.
pub async fn mail_password_reset(state: &AppState, email: &str, lang: Language) -> Result<(), ApiError> {
    let email = normalize_email(email)?;
    let holder: Option<Uuid> = sqlx::query_scalar("SELECT user_id FROM user_emails WHERE email = $1")
        .bind(&email)
        .fetch_optional(&state.pool)
        .await?;
    if let Some(id) = holder {
        let (user, _) = state
            .stores
            .users
            .load(&id.to_string())
            .await
            .map_err(ApiError::internal)?;
        if user.id.is_some() {
            let params = json!({"minutes": RESET_TTL_MINUTES});
            mail_token(
                state,
                &user,
                "reset_password",
                Duration::minutes(RESET_TTL_MINUTES),
                lang,
                params,
            )
            .await?;
        }
    }
    Ok(())
}

/// Sets the new password; every session started before it stops working.
#[utoipa::path(
    post,
    path = "/v1/auth/password-reset/confirm",
    tag = "accounts",
    summary = "Set a new password with the mailed token; ends every session",
    request_body = crate::openapi::schemas::PasswordResetConfirm,
    responses((status = 204, description = "Password changed"), (status = 503, description = "`busy`: password hashing is at capacity; retry after `Retry-After` seconds", body = crate::openapi::schemas::ErrorResponse))
)]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<StatusCode, ApiError> {
    let mut f = Fields(body);
    let token = required(&mut f, "token")?;
    let password = required(&mut f, "password")?;
    f.finish()?;
    reset_with(&state, &token, password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a new password with a mailed token (the API route and the mail's link page).
pub(crate) async fn reset_with(state: &AppState, token: &str, password: String) -> Result<(), ApiError> {
    check_password("password", &password)?;
    // Hashed first: a refusal for load (503) must not use up the single-use token.
    let password_hash = password::hash(password).await?;
    let user_id = consume_token(&state.pool, "reset_password", token)
        .await?
        .ok_or_else(|| ApiError::field("token", "invalid_token", "the token is unknown, used or expired"))?;
    state
        .stores
        .users
        .execute(
            &user_id.to_string(),
            UserCommand::ChangePassword {
                password_hash,
                at: Utc::now(),
            },
        )
        .await
        .map_err(|e| from_aggregate(e, user_error))?;
    tracing::info!(user_id = %user_id, "password reset");
    Ok(())
}

/// Changes a signed-in person's password after checking the current one. Every session that
/// began before, this one included, stops working; the caller starts a new one if it wants to
/// stay signed in.
pub async fn change_password(
    state: &AppState,
    user: &UserCaller,
    current: String,
    new: String,
) -> Result<(), ApiError> {
    check_password("new_password", &new)?;
    let ok = password::verify(current, user.user.password_hash.clone()).await?;
    if !ok {
        return Err(ApiError::field(
            "current_password",
            "invalid_credentials",
            "the current password is wrong",
        ));
    }
    let password_hash = password::hash(new).await?;
    state
        .stores
        .users
        .execute(
            &user.user_id.to_string(),
            UserCommand::ChangePassword {
                password_hash,
                at: Utc::now(),
            },
        )
        .await
        .map_err(|e| from_aggregate(e, user_error))?;
    tracing::info!(user_id = %user.user_id, "password changed");
    Ok(())
}

/// One of a person's live sessions, as their profile lists it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: Uuid,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The person's sessions that still work (not ended, not expired, begun after the last password
/// change), newest first, at most 100.
pub async fn sessions_of(state: &AppState, user: &UserCaller) -> Result<Vec<SessionInfo>, ApiError> {
    let ids = unended_sessions(state, user.user_id, 100).await?;
    let now = Utc::now();
    let mut out = Vec::new();
    for id in ids {
        let (session, _) = state.stores.sessions.load(&id).await.map_err(ApiError::internal)?;
        let (Some(sid), Some(started_at), Some(expires_at)) = (session.id, session.started_at, session.expires_at)
        else {
            continue;
        };
        if session.is_live(now) && !session.predates(user.user.sessions_valid_after()) {
            out.push(SessionInfo {
                id: sid,
                started_at,
                expires_at,
            });
        }
    }
    Ok(out)
}

/// The newest `limit` sessions of `user_id` that no revocation or reuse has ended (some may have
/// expired), found through the index of `SessionStarted` by user (migration 0018).
async fn unended_sessions(state: &AppState, user_id: Uuid, limit: i64) -> Result<Vec<String>, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT s.aggregate_id FROM events s
          WHERE s.aggregate_type = 'Session' AND s.event_type = 'SessionStarted'
            AND (s.payload -> 'SessionStarted' ->> 'user_id') = $1
            AND NOT EXISTS (SELECT 1 FROM events e
                             WHERE e.aggregate_type = 'Session' AND e.aggregate_id = s.aggregate_id
                               AND e.event_type IN ('SessionRevoked', 'SessionTokenReused'))
          ORDER BY s.recorded_at DESC LIMIT $2",
    )
    .bind(user_id.to_string())
    .bind(limit)
    .fetch_all(&state.pool)
    .await?)
}

/// Ends every session of `user_id` (an operator deactivating the account), each with a
/// `SessionRevoked` naming `reason`. Returns how many.
pub async fn end_all_sessions(state: &AppState, user_id: Uuid, reason: &str) -> Result<usize, ApiError> {
    let ids = unended_sessions(state, user_id, 10_000).await?;
    let mut ended = 0;
    for id in ids {
        let Ok(sid) = Uuid::try_parse(&id) else { continue };
        let (session, _) = state.stores.sessions.load(&id).await.map_err(ApiError::internal)?;
        if session.revoked {
            continue;
        }
        revoke(state, sid, reason).await?;
        ended += 1;
    }
    Ok(ended)
}

/// Ends one of the person's own sessions (the profile page); another person's is not found.
pub async fn end_own_session(state: &AppState, user: &UserCaller, session: Uuid) -> Result<(), ApiError> {
    let (s, _) = state
        .stores
        .sessions
        .load(&session.to_string())
        .await
        .map_err(ApiError::internal)?;
    if s.user_id != Some(user.user_id) {
        return Err(ApiError::NotFound("session"));
    }
    revoke(state, session, "ended from the profile").await?;
    tracing::info!(user_id = %user.user_id, session_id = %session, "session ended from the profile");
    Ok(())
}

/// A logged-in user, from an access token whose session is still live.
#[derive(Debug, Clone)]
pub struct UserCaller {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub user: User,
}

async fn session_ended(pool: &PgPool, session: Uuid) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'Session' AND aggregate_id = $1
                          AND event_type IN ('SessionRevoked', 'SessionTokenReused'))",
    )
    .bind(session.to_string())
    .fetch_one(pool)
    .await?)
}

/// The user behind an access token whose session is still live.
pub async fn user_from_token(state: &AppState, token: &str) -> Result<UserCaller, ApiError> {
    let claims = state.jwt.verify(token, Utc::now()).ok_or(ApiError::InvalidToken)?;
    if session_ended(&state.pool, claims.sid).await? {
        return Err(ApiError::InvalidToken);
    }
    let (user, _) = state
        .stores
        .users
        .load(&claims.sub.to_string())
        .await
        .map_err(ApiError::internal)?;
    // `iat` is in whole seconds, so a token of the very second of a password change (the one it
    // issued) stays; a deactivation also revokes each session, which ends its tokens exactly.
    if !user.is_active() || user.sessions_valid_after().is_some_and(|p| claims.iat < p.timestamp()) {
        return Err(ApiError::InvalidToken);
    }
    Ok(UserCaller {
        user_id: claims.sub,
        session_id: claims.sid,
        user,
    })
}

impl FromRequestParts<AppState> for UserCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::InvalidToken)?;
        let user = user_from_token(state, token).await?;
        // Outside a workspace no plan applies: the default plan's rate does.
        let plan = crate::plans::of_workspace(state, cronbox_domain::workspace::DEFAULT_PLAN).await?;
        let rpm = u32::try_from(plan.requests_per_minute).unwrap_or(0);
        crate::edge::limit(state, parts, crate::rate_limit::Subject::User(user.user_id), rpm).await?;
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_token_shape() {
        let s = Uuid::new_v4();
        let t = new_refresh_token(s);
        assert_eq!(session_of_refresh_token(&t), Some(s));
        assert_eq!(session_of_refresh_token("cbr_nope_x"), None);
        assert_eq!(session_of_refresh_token(&t[..t.len() - 1]), None);
        assert_eq!(session_of_refresh_token(&t.replace("cbr_", "cbx_")), None);
    }
}
