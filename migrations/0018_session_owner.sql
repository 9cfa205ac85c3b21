-- A person's sessions (the profile page lists them, and ends one): a partial index over the
-- SessionStarted events alone, so the run events of the hot path pay only for its predicate.
CREATE INDEX events_session_owner ON events ((payload -> 'SessionStarted' ->> 'user_id'))
    WHERE aggregate_type = 'Session' AND event_type = 'SessionStarted';
