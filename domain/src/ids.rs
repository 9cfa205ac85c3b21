//! Identifiers. Run ids of scheduled fires are *derived*, not random: the same job firing for the
//! same instant always yields the same run id, so a dispatcher that fires an instant twice (after a
//! crash, or two dispatchers overlapping for a moment) writes to the same Run stream, where the
//! event store's unique (aggregate, sequence) key refuses the second copy.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Namespace for v5 run ids; any fixed UUID works, it only has to never change.
const RUN_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_0b7e_2a47_4d55_9a0e_c3b1_5f2d_8e91);

/// The run id of a scheduled fire of `job_id` at `instant` (millisecond precision).
pub fn scheduled_run_id(job_id: Uuid, instant: DateTime<Utc>) -> Uuid {
    let mut name = [0u8; 24];
    name[..16].copy_from_slice(job_id.as_bytes());
    name[16..].copy_from_slice(&instant.timestamp_millis().to_be_bytes());
    Uuid::new_v5(&RUN_NAMESPACE, &name)
}

/// The id of the record of fires skipped after downtime, one per job and first skipped instant.
pub fn skipped_run_id(job_id: Uuid, first_skipped: DateTime<Utc>) -> Uuid {
    let mut name = [0u8; 25];
    name[..16].copy_from_slice(job_id.as_bytes());
    name[16..24].copy_from_slice(&first_skipped.timestamp_millis().to_be_bytes());
    name[24] = b's';
    Uuid::new_v5(&RUN_NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn scheduled_run_id_is_deterministic_and_distinct() {
        let job = Uuid::from_u128(42);
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 3, 0, 0).unwrap();
        assert_eq!(scheduled_run_id(job, t), scheduled_run_id(job, t));
        assert_ne!(
            scheduled_run_id(job, t),
            scheduled_run_id(job, t + chrono::Duration::seconds(1))
        );
        assert_ne!(scheduled_run_id(job, t), scheduled_run_id(Uuid::from_u128(43), t));
        assert_ne!(scheduled_run_id(job, t), skipped_run_id(job, t));
    }
}
