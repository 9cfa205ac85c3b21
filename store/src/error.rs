#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("event payload does not match the domain type")]
    Payload(#[from] serde_json::Error),
    #[error("migration {name} failed")]
    Migration {
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
}
