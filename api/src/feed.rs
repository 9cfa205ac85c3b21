//! The live execution feed: `GET /v1/workspaces/{ws}/executions/stream` (Server-Sent Events).
//!
//! One hub per API process follows the event log through the process's shared tail (woken by
//! LISTEN/NOTIFY, so an event reaches the hub within milliseconds of its commit) and hands each
//! run event, serialized once, to the broadcast channel of its workspace. A workspace's channel
//! exists only while someone watches it, so a stream costs the hub nothing unless its workspace
//! has traffic, and no client ever runs its own query loop on the live path.
//!
//! Resuming without a gap or a duplicate: a client first subscribes to its workspace's channel,
//! then reads the log after its cursor from the database page by page (the same global order and
//! visibility horizon the hub reads), and only then takes live items, dropping those at or before
//! the last cursor it sent. An event the hub broadcast before the subscription was already below
//! the horizon, so the catch-up read returns it; anything later arrives on the channel.
//!
//! A slow client never makes the server buffer: the channel is a fixed ring shared by the
//! workspace's clients, and a client that falls a whole ring behind while live gets a
//! `stream_error` event (`slow_consumer`, with the cursor to resume from) and is closed.
//!
//! **Access is not checked once.** A stream outlives the request that opened it, so it ends
//! (`stream_error` `access_revoked`) as soon as its caller could no longer open it: the hub
//! tells every stream when a workspace's keys, members or existence change, or a session ends,
//! and each stream concerned authenticates its token again; a user's stream also ends when its
//! access token expires (the client reconnects with a fresh one and `Last-Event-ID`, losing
//! nothing), and every stream checks again at least every [`RECHECK_EVERY`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cronbox_domain::public::{inner, public_data, run_status_after, FEED_STATUSES, RUN_TYPES, SCHEMA_VERSION};
use cronbox_store::tail::{self, Cursor, StoredEvent, Waker};
use futures::Stream;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::events::CursorState;
use crate::input::parse_uuid;
use crate::AppState;

/// Items a workspace's channel holds: how far one client may fall behind the live feed.
const RING: usize = 2048;
/// Rows per catch-up read.
const PAGE: i64 = 500;
/// Run ids whose job the hub remembers (beyond that it asks the log again).
const JOB_MEMO: usize = 100_000;
/// The longest a stream goes without authenticating again (changes that the hub signals are
/// checked at once).
pub const RECHECK_EVERY: Duration = Duration::from_secs(60);

/// Something that may take a stream's access away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AccessChange {
    /// Keys, members or roles of a workspace changed, or it was deleted.
    Workspace(Uuid),
    /// A login session ended (logout, theft detected).
    Session(Uuid),
    /// A user changed their password (every older token stops working).
    User(Uuid),
}

impl AccessChange {
    fn of(ev: &StoredEvent) -> Option<Self> {
        let id = Uuid::try_parse(&ev.aggregate_id).ok()?;
        match (ev.aggregate_type.as_str(), ev.event_type.as_str()) {
            ("Workspace", "ApiKeyRevoked" | "MemberRemoved" | "MemberRoleChanged" | "WorkspaceDeleted") => {
                Some(Self::Workspace(id))
            }
            ("Session", "SessionRevoked" | "SessionTokenReused") => Some(Self::Session(id)),
            ("User", "PasswordChanged") => Some(Self::User(id)),
            _ => None,
        }
    }
}

/// What a stream needs to check its caller again.
struct Access {
    state: AppState,
    token: String,
    principal: crate::auth::Principal,
    session: Option<Uuid>,
    /// When the access token expires (users).
    expires: Option<tokio::time::Instant>,
    changes: broadcast::Receiver<AccessChange>,
    next_check: tokio::time::Instant,
}

impl Access {
    fn concerns(&self, change: AccessChange, ws: Uuid) -> bool {
        match change {
            AccessChange::Workspace(w) => w == ws,
            AccessChange::Session(s) => self.session == Some(s),
            AccessChange::User(u) => self.principal == crate::auth::Principal::User(u),
        }
    }

    /// Whether the token still opens this workspace's feed. A database that cannot answer is
    /// not a revocation: the stream goes on and asks again later.
    async fn still_valid(&mut self, ws: Uuid) -> bool {
        self.next_check = tokio::time::Instant::now() + RECHECK_EVERY;
        let check = if self.token.starts_with("cbs_") {
            // The web app's live log: a browser session cookie, which the API never accepts.
            match crate::accounts::user_from_cookie(&self.state, &self.token).await {
                Ok(u) => crate::auth::member_caller(&self.state, u.user_id, ws).await,
                Err(e) => Err(e),
            }
        } else {
            crate::auth::authenticate_token(&self.state, &self.token, Some(ws)).await
        };
        match check {
            Ok(c) => c.principal == self.principal,
            Err(ApiError::Internal(e)) => {
                tracing::warn!(error = %e, workspace_id = %ws, "feed: cannot check access now");
                true
            }
            Err(_) => false,
        }
    }
}

/// One run state change, serialized once for every client of its workspace.
#[derive(Debug)]
pub struct FeedItem {
    pub cursor: Cursor,
    pub job_id: Option<Uuid>,
    pub status: &'static str,
    pub json: String,
}

/// The process's feed: the hub's channels and the count of open streams.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    channels: Mutex<HashMap<Uuid, broadcast::Sender<Arc<FeedItem>>>>,
    jobs: Mutex<HashMap<Uuid, Uuid>>,
    streams: AtomicUsize,
    max_streams: usize,
    /// Open streams per workspace, and the most one workspace may hold in this process.
    per_workspace: Mutex<HashMap<Uuid, usize>>,
    max_per_workspace: usize,
    access: broadcast::Sender<AccessChange>,
    shutdown: CancellationToken,
}

impl Feed {
    /// Starts the hub. It stops at `shutdown`, which also ends every open stream.
    pub fn spawn(
        pool: PgPool,
        waker: Waker,
        max_streams: usize,
        max_per_workspace: usize,
        shutdown: CancellationToken,
    ) -> Self {
        let inner = Arc::new(Inner {
            pool,
            channels: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            streams: AtomicUsize::new(0),
            max_streams,
            per_workspace: Mutex::new(HashMap::new()),
            max_per_workspace,
            access: broadcast::channel(1024).0,
            shutdown,
        });
        tokio::spawn(run_hub(inner.clone(), waker));
        Self { inner }
    }
}

impl Inner {
    fn subscribe(&self, ws: Uuid) -> broadcast::Receiver<Arc<FeedItem>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .entry(ws)
            .or_insert_with(|| broadcast::channel(RING).0)
            .subscribe()
    }

    /// The channel of `ws` if anyone watches it; drops channels nobody watches any more.
    fn sender(&self, ws: Uuid) -> Option<broadcast::Sender<Arc<FeedItem>>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match channels.get(&ws) {
            Some(tx) if tx.receiver_count() > 0 => Some(tx.clone()),
            Some(_) => {
                channels.remove(&ws);
                None
            }
            None => None,
        }
    }

    /// The job of each run event's run: from the event when it says, else from memory, else
    /// from the run's first event (which always names it).
    async fn jobs_of(&self, events: &[&StoredEvent]) -> Result<HashMap<Uuid, Uuid>, ApiError> {
        let mut out = HashMap::new();
        let mut missing = HashSet::new();
        {
            let mut memo = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            for ev in events {
                let Ok(run) = Uuid::try_parse(&ev.aggregate_id) else {
                    continue;
                };
                if let Some(job) = job_in_event(ev) {
                    if memo.len() >= JOB_MEMO {
                        memo.clear();
                    }
                    memo.insert(run, job);
                    out.insert(run, job);
                } else if let Some(job) = memo.get(&run) {
                    out.insert(run, *job);
                } else {
                    missing.insert(ev.aggregate_id.clone());
                }
            }
        }
        if !missing.is_empty() {
            let ids: Vec<String> = missing.into_iter().collect();
            let rows: Vec<(String, Option<String>)> = sqlx::query_as(
                "SELECT aggregate_id, coalesce(payload -> 'RunScheduled' -> 'plan' ->> 'job_id',
                                               payload -> 'RunSkipped' ->> 'job_id')
                   FROM events WHERE aggregate_type = 'Run' AND aggregate_id = ANY($1) AND sequence = 1",
            )
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
            let mut memo = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
            for (run, job) in rows {
                if let (Ok(run), Some(Ok(job))) = (Uuid::try_parse(&run), job.as_deref().map(Uuid::try_parse)) {
                    memo.insert(run, job);
                    out.insert(run, job);
                }
            }
        }
        Ok(out)
    }

    /// Feed items of the run events among `events`, in order.
    async fn items(&self, events: &[&StoredEvent]) -> Result<Vec<(Uuid, Arc<FeedItem>)>, ApiError> {
        let runs: Vec<&StoredEvent> = events
            .iter()
            .copied()
            .filter(|e| e.aggregate_type == "Run" && e.workspace_id.is_some())
            .collect();
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let jobs = self.jobs_of(&runs).await?;
        Ok(runs
            .into_iter()
            .filter_map(|ev| {
                let ws = ev.workspace_id?;
                let job = Uuid::try_parse(&ev.aggregate_id)
                    .ok()
                    .and_then(|r| jobs.get(&r).copied());
                feed_item(ev, job).map(|item| (ws, Arc::new(item)))
            })
            .collect())
    }
}

fn job_in_event(ev: &StoredEvent) -> Option<Uuid> {
    let data = inner(&ev.event_type, &ev.payload);
    data.get("job_id")
        .or_else(|| data.pointer("/plan/job_id"))
        .and_then(Value::as_str)
        .and_then(|s| Uuid::try_parse(s).ok())
}

/// The feed's form of a run event (None for events that change no run state).
fn feed_item(ev: &StoredEvent, job_id: Option<Uuid>) -> Option<FeedItem> {
    let raw = inner(&ev.event_type, &ev.payload);
    let status = run_status_after(&ev.event_type, raw)?;
    let data = public_data(&ev.aggregate_type, &ev.event_type, raw)?;
    let json = json!({
        "id": ev.cursor.to_string(),
        "schema_version": SCHEMA_VERSION,
        "type": ev.event_type,
        "status": status,
        "workspace_id": ev.workspace_id,
        "job_id": job_id,
        "run_id": ev.aggregate_id,
        "recorded_at": ev.recorded_at,
        "data": data,
    })
    .to_string();
    Some(FeedItem {
        cursor: ev.cursor,
        job_id,
        status,
        json,
    })
}

/// Follows the log from its head and fans run events out to the workspaces being watched.
async fn run_hub(inner: Arc<Inner>, mut waker: Waker) {
    let mut at = loop {
        match tail::head(&inner.pool).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "feed: cannot read the log head; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = inner.shutdown.cancelled() => return,
                }
            }
        }
    };
    let mut idle = 0u32;
    while !inner.shutdown.is_cancelled() {
        let events = match waker.tail().read_after(at, 1000).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "feed: tail read failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = inner.shutdown.cancelled() => return,
                }
                continue;
            }
        };
        let Some(last) = events.last().map(|e| e.cursor) else {
            if !waker.idle(&mut idle, Duration::from_secs(1), &inner.shutdown).await {
                return;
            }
            continue;
        };
        idle = 0;
        for change in events.iter().filter_map(|e| AccessChange::of(e)) {
            // An error only means no stream is open.
            let _ = inner.access.send(change);
        }
        // Only events of watched workspaces are worth decoding.
        let watched: Vec<&StoredEvent> = events
            .iter()
            .map(|e| e.as_ref())
            .filter(|e| e.aggregate_type == "Run" && e.workspace_id.is_some_and(|ws| inner.sender(ws).is_some()))
            .collect();
        match inner.items(&watched).await {
            Ok(items) => {
                for (ws, item) in items {
                    if let Some(tx) = inner.sender(ws) {
                        // An error only means the last watcher just left.
                        let _ = tx.send(item);
                    }
                }
                at = last;
            }
            Err(e) => {
                tracing::warn!(error = %e, "feed: cannot resolve run jobs; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Decrements the open-stream counts when a stream ends, however it ends.
struct StreamSlot(Arc<Inner>, Uuid);

impl StreamSlot {
    /// A slot for a stream of `ws`, if the process and the workspace have one free.
    fn take(feed: &Arc<Inner>, ws: Uuid) -> Result<Self, ApiError> {
        if feed.streams.fetch_add(1, Ordering::Relaxed) >= feed.max_streams {
            feed.streams.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::Unavailable);
        }
        let mut per = feed.per_workspace.lock().unwrap_or_else(|p| p.into_inner());
        let n = per.entry(ws).or_default();
        if *n >= feed.max_per_workspace {
            drop(per);
            feed.streams.fetch_sub(1, Ordering::Relaxed);
            return Err(ApiError::TooManyStreams {
                limit: feed.max_per_workspace,
            });
        }
        *n += 1;
        Ok(Self(feed.clone(), ws))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
        let mut per = self.0.per_workspace.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per.remove(&self.1);
            }
        }
    }
}

enum Mode {
    /// Reading the log after `last` from the database.
    CatchUp,
    /// Taking items from the channel; `fresh` until the first one arrives.
    Live {
        fresh: bool,
    },
    Done,
}

struct Client {
    feed: Arc<Inner>,
    _slot: StreamSlot,
    workspace_id: Uuid,
    job_id: Option<Uuid>,
    statuses: Option<Vec<&'static str>>,
    last: Cursor,
    rx: broadcast::Receiver<Arc<FeedItem>>,
    mode: Mode,
    out: VecDeque<Event>,
    /// None only in unit tests of the live path.
    access: Option<Access>,
}

impl Client {
    fn wants(&self, item: &FeedItem) -> bool {
        self.job_id.is_none_or(|j| item.job_id == Some(j))
            && self.statuses.as_ref().is_none_or(|s| s.contains(&item.status))
    }

    fn push(&mut self, item: &FeedItem) {
        self.last = item.cursor;
        if self.wants(item) {
            self.out
                .push_back(Event::default().id(item.cursor.to_string()).data(item.json.as_str()));
        }
    }

    fn fail(&mut self, code: &str, message: &str) {
        let body = json!({"code": code, "message": message, "resume_after": self.last.to_string()});
        self.out.push_back(
            Event::default()
                .event("stream_error")
                .id(self.last.to_string())
                .data(body.to_string()),
        );
        self.mode = Mode::Done;
    }

    /// Ends the stream if its caller lost access (a change the hub signalled that concerns it,
    /// or the periodic check). Returns whether it goes on.
    async fn keep_access(&mut self, signalled: bool) -> bool {
        let ws = self.workspace_id;
        let Some(access) = self.access.as_mut() else {
            return true;
        };
        let mut check = signalled || tokio::time::Instant::now() >= access.next_check;
        loop {
            match access.changes.try_recv() {
                Ok(change) => check |= access.concerns(change, ws),
                Err(broadcast::error::TryRecvError::Lagged(_)) => check = true,
                Err(_) => break,
            }
        }
        if access.expires.is_some_and(|e| tokio::time::Instant::now() >= e) {
            self.fail(
                "access_revoked",
                "the access token expired; reconnect with a fresh one and Last-Event-ID (or ?after=) set to resume_after",
            );
            return false;
        }
        if check && !access.still_valid(ws).await {
            tracing::info!(workspace_id = %ws, "feed: access revoked; stream closed");
            self.fail(
                "access_revoked",
                "this key or session no longer has access to the workspace",
            );
            return false;
        }
        true
    }

    /// Advances the state machine until there is something to send or the stream is over.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.out.pop_front() {
                return Some(ev);
            }
            if !matches!(self.mode, Mode::Done) && !self.keep_access(false).await {
                continue;
            }
            match self.mode {
                Mode::Done => return None,
                Mode::CatchUp => {
                    let page = tail::read_workspace_after(
                        &self.feed.pool,
                        self.workspace_id,
                        self.last,
                        Some(&run_types()),
                        PAGE,
                    )
                    .await;
                    let events = match page {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(error = %e, workspace_id = %self.workspace_id, "feed: catch-up read failed");
                            self.fail(
                                "unavailable",
                                "the event log cannot be read right now; reconnect to resume",
                            );
                            continue;
                        }
                    };
                    let Some(end) = events.last().map(|e| e.cursor) else {
                        self.mode = Mode::Live { fresh: true };
                        continue;
                    };
                    let refs: Vec<&StoredEvent> = events.iter().collect();
                    match self.feed.items(&refs).await {
                        Ok(items) => {
                            for (_, item) in items {
                                self.push(&item);
                            }
                            // Past events that change no run state still move the position.
                            self.last = self.last.max(end);
                        }
                        Err(_) => self.fail(
                            "unavailable",
                            "the event log cannot be read right now; reconnect to resume",
                        ),
                    }
                }
                Mode::Live { fresh } => {
                    // Woken for an access change or the next check, as well as for items.
                    let (deadline, changes) = match self.access.as_mut() {
                        Some(a) => (
                            a.expires.map_or(a.next_check, |e| e.min(a.next_check)),
                            Some(&mut a.changes),
                        ),
                        None => (tokio::time::Instant::now() + Duration::from_secs(3600), None),
                    };
                    let ws = self.workspace_id;
                    let access_wait = async {
                        match changes {
                            // Lagged: changes were missed, so one of them may concern us.
                            Some(c) => match c.recv().await {
                                Ok(change) => Some(change),
                                Err(broadcast::error::RecvError::Lagged(_)) => None,
                                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
                            },
                            None => std::future::pending().await,
                        }
                    };
                    let received = tokio::select! {
                        r = self.rx.recv() => r,
                        change = access_wait => {
                            let concerned = match (change, self.access.as_ref()) {
                                (Some(c), Some(a)) => a.concerns(c, ws),
                                _ => true,
                            };
                            self.keep_access(concerned).await;
                            continue;
                        }
                        _ = tokio::time::sleep_until(deadline) => continue,
                        _ = self.feed.shutdown.cancelled() => {
                            self.fail("shutting_down", "the server is restarting; reconnect to resume");
                            continue;
                        }
                    };
                    match received {
                        Ok(item) => {
                            self.mode = Mode::Live { fresh: false };
                            if item.cursor > self.last {
                                self.push(&item);
                            }
                        }
                        // Behind since the catch-up read: read the log again, not a slow client.
                        Err(broadcast::error::RecvError::Lagged(_)) if fresh => self.mode = Mode::CatchUp,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::info!(workspace_id = %self.workspace_id, missed = n, "feed: slow client closed");
                            self.fail(
                                "slow_consumer",
                                "the client fell too far behind the live feed; reconnect with Last-Event-ID (or ?after=) set to resume_after",
                            );
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            self.fail("shutting_down", "the server is restarting; reconnect to resume");
                        }
                    }
                }
            }
        }
    }
}

fn run_types() -> Vec<String> {
    RUN_TYPES.iter().map(|t| t.to_string()).collect()
}

/// `GET /v1/workspaces/{ws}/executions/stream`.
#[utoipa::path(
    get,
    path = "/executions/stream",
    tag = "executions",
    summary = "Live feed of run state changes (Server-Sent Events), resumable",
    description = "Each message's `id` is a cursor into the global event order; reconnect with `Last-Event-ID` \
                   (or `?after=`) to receive everything missed, in order, then live events. Problems arrive as a \
                   `stream_error` event (`cursor_expired`, `unknown_cursor`, `slow_consumer`, `shutting_down`) \
                   with `resume_after`, and the stream closes. Comments (`: keep-alive`) every 15 s.",
    params(crate::openapi::WsPath, crate::openapi::schemas::FeedQuery),
    responses(
        (status = 200, description = "text/event-stream of FeedMessage objects", content_type = "text/event-stream", body = crate::openapi::schemas::FeedMessage),
        (status = 400, description = "A bad filter or cursor", body = crate::openapi::schemas::ErrorResponse),
        (status = 503, description = "This process holds its maximum of open streams", body = crate::openapi::schemas::ErrorResponse)
    ),
    security(("api_key" = []), ("access_token" = []))
)]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let token = crate::accounts::bearer_of(&headers).unwrap_or_default().to_string();
    open(&state, caller, token, &headers, &q).await
}

/// Opens a live stream for `caller`, who presented `token` (an API key, an access token, or a
/// browser's session cookie: the web app's log page), with the query of the API's route.
pub async fn open(
    state: &AppState,
    caller: Caller,
    token: String,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let state = state.clone();
    let feed = state.feed.as_ref().ok_or(ApiError::Unavailable)?.inner.clone();
    let job_id = q.get("job_id").map(|s| parse_uuid("job_id", s)).transpose()?;
    let statuses = match q.get("status") {
        None => None,
        Some(s) => Some(
            s.split(',')
                .map(|p| {
                    FEED_STATUSES.iter().copied().find(|k| *k == p.trim()).ok_or_else(|| {
                        ApiError::field(
                            "status",
                            "invalid",
                            format!("status must be one of {}", FEED_STATUSES.join(", ")),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    // A reconnecting EventSource sends Last-Event-ID; it wins over a stale `after` in the URL.
    let (field, raw) = match headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        Some(h) if !h.trim().is_empty() => ("Last-Event-ID", Some(h.to_string())),
        _ => ("after", q.get("after").cloned()),
    };
    let after = raw
        .map(|s| {
            s.parse::<Cursor>()
                .map_err(|m| ApiError::field(field, "invalid_cursor", m))
        })
        .transpose()?;

    let slot = StreamSlot::take(&feed, caller.workspace_id)?;
    let claims = (!token.starts_with("cbx_"))
        .then(|| state.jwt.verify(&token, chrono::Utc::now()))
        .flatten();
    let expires = claims.as_ref().map(|c| {
        let left = (c.exp - chrono::Utc::now().timestamp()).max(0) as u64;
        tokio::time::Instant::now() + Duration::from_secs(left)
    });
    let cookie_session = crate::accounts::session_of_cookie(&token);
    let access = Access {
        changes: feed.access.subscribe(),
        state: state.clone(),
        token,
        principal: caller.principal,
        session: claims.map(|c| c.sid).or(cookie_session),
        expires,
        next_check: tokio::time::Instant::now() + RECHECK_EVERY,
    };
    // Subscribe before reading anything: see the module comment.
    let rx = feed.subscribe(caller.workspace_id);
    let mut client = Client {
        feed: feed.clone(),
        _slot: slot,
        workspace_id: caller.workspace_id,
        job_id,
        statuses,
        last: Cursor::START,
        rx,
        mode: Mode::CatchUp,
        out: VecDeque::new(),
        access: Some(access),
    };
    client.out.push_back(Event::default().comment("connected"));
    let plan = caller.plan(&state).await?;
    let cutoff = crate::events::retention_cutoff(&plan);
    match after {
        // `0-0`: from the oldest event still inside retention.
        Some(Cursor::START) => {
            client.last = match crate::events::retained_start(&state.pool, caller.workspace_id, cutoff).await? {
                Some(c) => c,
                None => tail::head(&state.pool).await?,
            }
        }
        Some(c) => {
            client.last = c;
            match crate::events::cursor_state(&state.pool, c, cutoff).await? {
                CursorState::Unknown => client.fail("unknown_cursor", "no event has this id; start without a cursor"),
                CursorState::Expired => client.fail(
                    "cursor_expired",
                    "the cursor is older than the plan's log retention; start without a cursor or from GET …/executions",
                ),
                CursorState::Retained => {}
            }
        }
        // From now: the newest committed position.
        None => client.last = tail::head(&state.pool).await?,
    }
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(futures::stream::unfold(client, |mut c| async move {
            c.next().await.map(|ev| (Ok(ev), c))
        }));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive"))
        .into_response();
    // Proxies (nginx) must not hold events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner() -> Arc<Inner> {
        // Never connects: the live path does not touch the database.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://127.0.0.1:1/none")
            .expect("lazy pool");
        Arc::new(Inner {
            pool,
            channels: Mutex::new(HashMap::new()),
            jobs: Mutex::new(HashMap::new()),
            streams: AtomicUsize::new(1),
            max_streams: 10,
            per_workspace: Mutex::new(HashMap::new()),
            max_per_workspace: 10,
            access: broadcast::channel(16).0,
            shutdown: CancellationToken::new(),
        })
    }

    fn client(feed: Arc<Inner>, ws: Uuid, fresh: bool) -> Client {
        let rx = feed.subscribe(ws);
        Client {
            _slot: StreamSlot(feed.clone(), ws),
            feed,
            workspace_id: ws,
            job_id: None,
            statuses: None,
            last: Cursor { xid: 1, seq: 0 },
            rx,
            mode: Mode::Live { fresh },
            out: VecDeque::new(),
            access: None,
        }
    }

    fn item(seq: i64) -> Arc<FeedItem> {
        Arc::new(FeedItem {
            cursor: Cursor { xid: 1, seq },
            job_id: None,
            status: "succeeded",
            json: format!("{{\"seq\":{seq}}}"),
        })
    }

    #[tokio::test]
    async fn live_items_pass_in_order_and_repeats_are_dropped() {
        let (feed, ws) = (inner(), Uuid::new_v4());
        let mut c = client(feed.clone(), ws, false);
        let tx = feed.sender(ws).expect("watched");
        for seq in [1, 2, 2, 3] {
            tx.send(item(seq)).expect("send");
        }
        for want in 1..=3 {
            let ev = c.next().await.expect("event");
            assert!(format!("{ev:?}").contains(&format!("\\\"seq\\\":{want}")), "{ev:?}");
        }
        assert_eq!(c.last, Cursor { xid: 1, seq: 3 });
    }

    #[tokio::test]
    async fn a_client_a_whole_ring_behind_is_closed_with_a_resume_hint() {
        let (feed, ws) = (inner(), Uuid::new_v4());
        let mut c = client(feed.clone(), ws, false);
        let tx = feed.sender(ws).expect("watched");
        tx.send(item(1)).expect("send");
        assert!(c.next().await.is_some());
        // The client stops reading; the workspace keeps going a ring and more.
        for seq in 2..(RING as i64 + 10) {
            tx.send(item(seq)).expect("send");
        }
        let ev = format!("{:?}", c.next().await.expect("an error event"));
        assert!(ev.contains("stream_error") && ev.contains("slow_consumer"), "{ev}");
        assert!(ev.contains("\\\"resume_after\\\":\\\"1-1\\\""), "{ev}");
        assert!(c.next().await.is_none(), "closed after the error");
        // The channel's memory is the fixed ring, whatever the client did.
        assert!(tx.len() <= RING);
    }

    #[tokio::test]
    async fn streams_release_their_slot_and_idle_channels_go_away() {
        let (feed, ws) = (inner(), Uuid::new_v4());
        let c = client(feed.clone(), ws, true);
        assert_eq!(feed.streams.load(Ordering::Relaxed), 1);
        drop(c);
        assert_eq!(feed.streams.load(Ordering::Relaxed), 0);
        assert!(feed.sender(ws).is_none());
        assert!(feed.channels.lock().expect("lock").is_empty());
    }
}
