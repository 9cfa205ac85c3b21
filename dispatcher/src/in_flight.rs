//! Runs in flight per workspace, and the cap on them: a workspace whose runs are all still going
//! (dispatched, not finished) gets no more dispatched until one finishes — its due entries wait
//! in the dispatcher's memory ([`crate::state::State::park`]), not in JetStream.
//!
//! Without it, one tenant with 2,000 calls to a slow target fills the shared stream, the one
//! consumer's pending window and the executors' slots, and every other tenant's runs queue
//! behind them. Pure (no IO, no clock): the dispatcher passes `now` and the caps in.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// How long a dispatched run counts as in flight at most, if its end is never seen (the longest
/// request timeout, its lease margin and some slack): a safety net, not the normal way out.
pub const COUNTED_FOR: Duration = Duration::seconds(300 + 15 + 45);

/// How long a workspace's cap is trusted before it is read again.
pub const CAP_TTL: Duration = Duration::seconds(30);

#[derive(Debug, Default)]
pub struct InFlight {
    /// run → (workspace, counted until)
    runs: HashMap<Uuid, (Uuid, DateTime<Utc>)>,
    by_workspace: HashMap<Uuid, usize>,
    /// workspace → (cap, read at)
    caps: HashMap<Uuid, (usize, DateTime<Utc>)>,
    /// The cap of a workspace whose plan sets none (or that is not known yet).
    pub default_cap: usize,
}

impl InFlight {
    pub fn new(default_cap: usize) -> Self {
        Self {
            default_cap,
            ..Self::default()
        }
    }

    pub fn count(&self, ws: Uuid) -> usize {
        self.by_workspace.get(&ws).copied().unwrap_or(0)
    }

    pub fn cap(&self, ws: Uuid) -> usize {
        self.caps.get(&ws).map_or(self.default_cap, |(c, _)| *c).max(1)
    }

    /// Of `ids`, the workspaces whose cap is unknown or older than [`CAP_TTL`].
    pub fn stale_caps(&self, ids: impl IntoIterator<Item = Uuid>, now: DateTime<Utc>) -> Vec<Uuid> {
        let mut out: Vec<Uuid> = ids
            .into_iter()
            .filter(|ws| self.caps.get(ws).is_none_or(|(_, at)| now - *at > CAP_TTL))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Caps as read from the plans (None: the plan sets none).
    pub fn set_caps(&mut self, caps: impl IntoIterator<Item = (Uuid, Option<usize>)>, now: DateTime<Utc>) {
        for (ws, cap) in caps {
            self.caps.insert(ws, (cap.unwrap_or(self.default_cap), now));
        }
        if self.caps.len() > 100_000 {
            self.caps.retain(|_, (_, at)| now - *at <= CAP_TTL);
        }
    }

    /// A run of `ws` went out (or is known to be out), counted until `until`.
    pub fn add(&mut self, run: Uuid, ws: Uuid, until: DateTime<Utc>) {
        if self.runs.insert(run, (ws, until)).is_none() {
            *self.by_workspace.entry(ws).or_default() += 1;
        }
    }

    /// The run finished (or was cancelled): its workspace, if it was counted.
    pub fn finish(&mut self, run: Uuid) -> Option<Uuid> {
        let (ws, _) = self.runs.remove(&run)?;
        self.release(ws);
        Some(ws)
    }

    fn release(&mut self, ws: Uuid) {
        if let Some(n) = self.by_workspace.get_mut(&ws) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_workspace.remove(&ws);
            }
        }
    }

    /// Drops runs counted past their time; returns their workspaces (one entry per run).
    pub fn expire(&mut self, now: DateTime<Utc>) -> Vec<Uuid> {
        let gone: Vec<(Uuid, Uuid)> = self
            .runs
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(run, (ws, _))| (*run, *ws))
            .collect();
        for (run, ws) in &gone {
            self.runs.remove(run);
            self.release(*ws);
        }
        gone.into_iter().map(|(_, ws)| ws).collect()
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn runs_count_until_they_finish_or_expire() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut f = InFlight::new(3);
        // Given two runs of A and one of B out, when one of A's finishes, A has one left.
        f.add(Uuid::from_u128(10), a, t(100));
        f.add(Uuid::from_u128(11), a, t(100));
        f.add(Uuid::from_u128(10), a, t(200)); // the same run again: counted once
        f.add(Uuid::from_u128(20), b, t(50));
        assert_eq!((f.count(a), f.count(b)), (2, 1));
        assert_eq!(f.finish(Uuid::from_u128(10)), Some(a));
        assert_eq!(f.finish(Uuid::from_u128(10)), None, "finished once");
        assert_eq!(f.count(a), 1);
        // When B's run is never seen finishing, it stops counting at its time.
        assert_eq!(f.expire(t(60)), vec![b]);
        assert_eq!(f.count(b), 0);
    }

    #[test]
    fn caps_come_from_plans_else_the_default_and_go_stale() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut f = InFlight::new(50);
        assert_eq!(f.cap(a), 50);
        assert_eq!(f.stale_caps([a, b, a], t(0)), vec![a, b]);
        f.set_caps([(a, Some(5)), (b, None)], t(0));
        assert_eq!((f.cap(a), f.cap(b)), (5, 50));
        assert!(f.stale_caps([a], t(10)).is_empty());
        assert_eq!(f.stale_caps([a], t(31)), vec![a]);
    }
}
