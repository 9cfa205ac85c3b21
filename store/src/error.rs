#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("event payload does not match the domain type")]
    Payload(#[from] serde_json::Error),
    /// cqrs-es failed to load or store an aggregate (its error type is generic; kept as text).
    #[error("event store: {0}")]
    EventStore(String),
    #[error("migration {name} failed")]
    Migration {
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
}
