#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("event payload does not match the domain type")]
    Payload(#[from] serde_json::Error),
    /// cqrs-es failed to load or store an aggregate (its error type is generic; kept as text).
    #[error("event store: {0}")]
    EventStore(String),
    /// An event holding a NUL character, which the read models cannot store (see
    /// [`crate::append::has_nul`]); refused before it reaches the log.
    #[error("{aggregate_type}/{aggregate_id} {event_type} holds a NUL character; not stored")]
    Unstorable {
        aggregate_type: &'static str,
        aggregate_id: String,
        event_type: String,
    },
    /// Another writer took the sequence numbers a locked append meant to write.
    #[error("{aggregate_type}/{aggregate_id} was written concurrently")]
    Conflict {
        aggregate_type: &'static str,
        aggregate_id: String,
    },
    #[error("migration {name} failed")]
    Migration {
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
}
