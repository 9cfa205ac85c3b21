-- Requests per subject (API key, user, client address) and one-minute window, shared by every
-- API process. UNLOGGED: counts that a crash loses would have expired within a minute anyway.
CREATE UNLOGGED TABLE rate_limit_counters
(
    subject      text   NOT NULL,
    window_start bigint NOT NULL,
    hits         bigint NOT NULL,
    PRIMARY KEY (subject, window_start)
);
