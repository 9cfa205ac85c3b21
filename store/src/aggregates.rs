//! The domain aggregates on top of postgres-es.

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, EventStore};
use cronbox_domain::{
    alert::Alert, channel::Channel, job::Job, notification::Notification, run::Run, session::Session, user::User,
    workspace::Workspace,
};
use postgres_es::{PostgresCqrs, PostgresEventRepository};
use sqlx::PgPool;

pub type Loader<A> = PersistedEventStore<PostgresEventRepository, A>;

/// Command handling (`cqrs`) and loading (`load`) for one aggregate type.
pub struct AggregateStore<A: Aggregate> {
    pub cqrs: PostgresCqrs<A>,
    loader: Loader<A>,
}

impl<A: Aggregate<Services = ()>> AggregateStore<A> {
    pub fn new(pool: PgPool) -> Self {
        // No inline queries: read models are built from the tail (see the projections crate).
        Self {
            cqrs: postgres_es::postgres_cqrs(pool.clone(), vec![], ()),
            loader: PersistedEventStore::new_event_store(PostgresEventRepository::new(pool)),
        }
    }

    pub async fn execute(&self, id: &str, command: A::Command) -> Result<(), AggregateError<A::Error>> {
        self.cqrs.execute(id, command).await
    }

    /// The aggregate's current state and the sequence of its last event (0: it does not exist).
    pub async fn load(&self, id: &str) -> Result<(A, usize), AggregateError<A::Error>> {
        let ctx = self.loader.load_aggregate(id).await?;
        Ok((ctx.aggregate, ctx.current_sequence))
    }

    /// The aggregate's events in order (the audit trail).
    pub async fn events(&self, id: &str) -> Result<Vec<cqrs_es::EventEnvelope<A>>, AggregateError<A::Error>> {
        self.loader.load_events(id).await
    }
}

/// All aggregate stores of the service.
pub struct Stores {
    pub pool: PgPool,
    pub workspaces: AggregateStore<Workspace>,
    pub jobs: AggregateStore<Job>,
    pub runs: AggregateStore<Run>,
    pub users: AggregateStore<User>,
    pub sessions: AggregateStore<Session>,
    pub channels: AggregateStore<Channel>,
    pub alerts: AggregateStore<Alert>,
    pub notifications: AggregateStore<Notification>,
}

impl Stores {
    pub fn new(pool: PgPool) -> Self {
        Self {
            workspaces: AggregateStore::new(pool.clone()),
            jobs: AggregateStore::new(pool.clone()),
            runs: AggregateStore::new(pool.clone()),
            users: AggregateStore::new(pool.clone()),
            sessions: AggregateStore::new(pool.clone()),
            channels: AggregateStore::new(pool.clone()),
            alerts: AggregateStore::new(pool.clone()),
            notifications: AggregateStore::new(pool.clone()),
            pool,
        }
    }
}
