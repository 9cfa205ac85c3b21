-- Events a projection could not apply (see projections/src/quarantine.rs). A projection that
-- meets such an event records it here and moves on; later events of the same aggregate are held
-- ("parked") behind it, so that aggregate's rows never apply out of order, while every other
-- aggregate keeps going. `cronbox projections retry NAME` applies them again, in log order.
-- The event itself stays in `events`: this table only points at it.
CREATE TABLE projection_failures
(
    id             bigserial PRIMARY KEY,
    projection     text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_type     text        NOT NULL,
    -- the event's position in the global order (its cursor)
    event_xid      bigint      NOT NULL,
    event_seq      bigint      NOT NULL,
    -- quarantined: applying it failed; parked: held behind a quarantined event of the same
    -- aggregate; resolved: applied by a later retry
    state          text        NOT NULL CHECK (state IN ('quarantined', 'parked', 'resolved')),
    error          text        NOT NULL,
    attempts       int         NOT NULL DEFAULT 1,
    failed_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    UNIQUE (projection, aggregate_type, aggregate_id, sequence)
);
CREATE INDEX projection_failures_open ON projection_failures (projection, event_xid, event_seq)
    WHERE state <> 'resolved';
